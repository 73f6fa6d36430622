"""Recurrent networks built and trained by the trainer: the model (`model.recurrent`), its inits,
the loop on sequences, resume.

The measurements through time are tests/test_time.py's; the data sets tests/test_sequences.py's.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from conftest import interrupt_after_one_epoch, without_timings
from vanishing import records
from vanishing.model.mlp import INITS, init_names
from vanishing.model.recurrent import LoopRNN, RecurrentNet, build_recurrent
from vanishing.settings import codec
from vanishing.training.loop import train

ARCHS = ("rnn", "lstm", "gru")


def inits_of(arch: str) -> list[str]:
    return [name for name in init_names() if arch == "rnn" or name != "identity"]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_init_of_the_registry_builds_every_recurrent_network(arch):
    for init in inits_of(arch):
        model = build_recurrent(arch, (6, 5), "tanh", 3, 4, init, seed=0)
        assert model(torch.rand(2, 7, 3)).shape == (2, 4), init
        again = build_recurrent(arch, (6, 5), "tanh", 3, 4, init, seed=0)
        for a, b in zip(model.parameters(), again.parameters(), strict=True):
            assert torch.equal(a, b), f"{init}: not reproducible from its seed"
    assert set(INITS) <= set(init_names())


def test_the_modules_are_pytorchs_own_where_it_has_them():
    kinds = {
        (arch, activation): type(build_recurrent(arch, (4,), activation, 2, 1).layers[0])
        for arch, activation in [
            ("rnn", "tanh"),
            ("rnn", "relu"),
            ("lstm", "tanh"),
            ("gru", "tanh"),
        ]
    }
    assert kinds == {
        ("rnn", "tanh"): nn.RNN, ("rnn", "relu"): nn.RNN, ("lstm", "tanh"): nn.LSTM,
        ("gru", "tanh"): nn.GRU,
    }  # fmt: skip
    assert isinstance(build_recurrent("rnn", (4,), "sigmoid", 2, 1).layers[0], LoopRNN)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_the_written_out_loop_is_nn_rnn(activation):
    torch.manual_seed(0)
    native = nn.RNN(3, 5, nonlinearity=activation, batch_first=True)
    loop = LoopRNN(3, 5, nn.Tanh() if activation == "tanh" else nn.ReLU())
    loop.load_state_dict(native.state_dict())
    x, h0 = torch.randn(4, 9, 3), torch.randn(1, 4, 5)
    for hx in (None, h0):
        (out, h_n), (want, want_n) = loop(x, hx), native(x, hx)
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(h_n, want_n, rtol=1e-5, atol=1e-6)


def test_identity_init_is_irnns_and_the_gain_scales_the_recurrent_weights():
    model = build_recurrent("rnn", (6,), "relu", 2, 1, "identity", seed=0, init_gain=0.5)
    layer = model.layers[0]
    assert torch.equal(layer.weight_hh_l0, 0.5 * torch.eye(6))
    assert float(layer.weight_ih_l0.detach().std()) < 5e-3  # N(0, 0.001^2)
    assert not layer.bias_ih_l0.any() and not layer.bias_hh_l0.any()
    plain = build_recurrent("rnn", (6,), "tanh", 2, 1, "orthogonal", seed=0)
    halved = build_recurrent("rnn", (6,), "tanh", 2, 1, "orthogonal", seed=0, init_gain=0.5)
    w = plain.layers[0].weight_hh_l0
    torch.testing.assert_close(w @ w.T, torch.eye(6), atol=1e-5, rtol=0)
    assert torch.equal(halved.layers[0].weight_hh_l0, 0.5 * w)
    assert torch.equal(halved.layers[0].weight_ih_l0, plain.layers[0].weight_ih_l0)


def test_the_forget_bias_is_the_lstms_second_gate_block():
    model = build_recurrent("lstm", (4, 3), "tanh", 2, 1, seed=0, forget_bias=1.0)
    for layer in model.layers:
        size = layer.hidden_size
        total = layer.bias_ih_l0 + layer.bias_hh_l0  # what the cell adds: i, f, g, o
        assert torch.equal(total[size : 2 * size], torch.ones(size))
        plain = build_recurrent("lstm", (4, 3), "tanh", 2, 1, seed=0)
        assert not torch.equal(total, plain.layers[0].bias_ih_l0 + plain.layers[0].bias_hh_l0)


def test_a_recurrent_run_trains_on_rows_and_writes_its_records(tiny_data, tmp_path):
    config = codec.config(
        {"arch": "lstm", "hidden": "8", "epochs": 2, "batch_size": 32, "probe_every": 5,
         "probe_size": 16, "device": "cpu", "train_size": 96, "test_size": 40}
    )  # fmt: skip
    assert config.sequence == "rows" and config.activation == "tanh"
    result = train(config, dataset=tiny_data, run_dir=tmp_path / "run")
    assert result.status == "ok" and result.steps == 2 * 3  # 96 examples, batches of 32
    assert 0 <= result.test_accuracy <= 1 and result.task == "classification"
    assert len(result.grad_norms_init) == 2  # the LSTM layer's weights, then the head's
    assert isinstance(model_of(config), RecurrentNet)
    rows = records.read_metrics(tmp_path / "run")
    epochs = [row for row in rows if row["kind"] == "epoch"]
    assert [row["epoch"] for row in epochs] == [1, 2]
    probe = next(row for row in rows if row["kind"] == "probe")
    assert len(probe["time_signal_norms"]) == 1 and len(probe["time_signal_norms"][0]) == 28
    assert result.time_signal_norms_init == probe["time_signal_norms"]
    assert set(result.gates_init[0]) == {"input", "forget", "output"}


def model_of(config):
    from vanishing.training.loop import make_model

    return make_model(config)


def test_a_recurrent_run_resumes_to_the_uninterrupted_result(tiny_data, tmp_path):
    config = codec.config(
        {"arch": "gru", "hidden": "8,6", "epochs": 2, "batch_size": 32, "probe_every": 4,
         "probe_size": 16, "device": "cpu", "train_size": 96, "test_size": 40}
    )  # fmt: skip
    whole = train(config, dataset=tiny_data, run_dir=tmp_path / "whole")
    interrupt_after_one_epoch(dataclasses.replace(config), tmp_path / "cut", _sized(tiny_data, 96))
    resumed = train(config, dataset=tiny_data, run_dir=tmp_path / "cut", resume=True)
    assert without_timings(resumed.to_dict()) == without_timings(whole.to_dict())
    rows = [without_timings(records.read_metrics(tmp_path / run)) for run in ("cut", "whole")]
    assert rows[0] == rows[1]


def _sized(dataset, n):
    """The data set as `interrupt_after_one_epoch` counts it: its first n training examples."""
    return dataclasses.replace(dataset, train_labels=dataset.train_labels[:n])
