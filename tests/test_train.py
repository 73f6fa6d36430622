"""The trainer: records, determinism, true test loss, divergence, validation, real data."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest
import torch
from torch.nn import functional as F

from vanishing import records
from vanishing.data import datasets as data
from vanishing.errors import UsageError
from vanishing.model.mlp import build_model
from vanishing.settings.config import TrainConfig
from vanishing.training import loop as train_module
from vanishing.training.loop import clip_gradients, evaluate, train

SMALL = TrainConfig(
    hidden=(32, 16), epochs=2, batch_size=32, probe_every=4, probe_size=64, device="cpu"
)


@pytest.fixture
def tiny(tiny_dir) -> data.Dataset:
    return data.load_dataset(data_dir=tiny_dir, verify=False)


def test_records_and_result_fields(tiny, tmp_path):
    run_dir = tmp_path / "run"
    result = train(SMALL, dataset=tiny, run_dir=run_dir)
    assert result.status == "ok" and result.run_dir == str(run_dir)
    assert TrainConfig.from_dict(records.read_json(run_dir / "config.json")) == SMALL
    saved = records.read_json(run_dir / "result.json")
    for key in (
        "status",
        "test_accuracy",
        "test_loss",
        "history",
        "grad_norms_init",
        "vanishing_ratio_init",
        "versions",
        "device",
    ):
        assert key in saved
    assert saved["versions"]["torch"] == torch.__version__ and saved["device"] == "cpu"
    assert [h["epoch"] for h in saved["history"]] == [1, 2]
    for row in saved["history"]:
        assert set(row) >= {
            "epoch",
            "train_loss",
            "test_loss",
            "test_accuracy",
            "train_seconds",
            "eval_seconds",
        }
        assert 0 <= row["test_accuracy"] <= 1 and row["train_seconds"] > 0
    assert len(saved["grad_norms_init"]) == 3  # two hidden layers + the output layer
    rows = records.read_metrics(run_dir)
    steps_per_epoch = 10  # 320 samples / batch 32
    probe_steps = [r["step"] for r in rows if r["kind"] == "probe"]
    assert probe_steps == list(range(0, 2 * steps_per_epoch, 4))
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2]
    assert rows[0]["grad_norms"] == saved["grad_norms_init"]
    assert all(len(r["update_ratio"]) == 3 for r in rows if r["kind"] == "probe")
    assert saved["test_accuracy"] == saved["history"][-1]["test_accuracy"]


def test_same_seed_same_metrics_other_seed_differs(tiny):
    config = dataclasses.replace(SMALL, activation="rrelu")  # RReLU draws random slopes too
    a, b = train(config, dataset=tiny), train(config, dataset=tiny)
    c = train(dataclasses.replace(config, seed=1), dataset=tiny)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert a.grad_norms_final == b.grad_norms_final and a.test_loss == b.test_loss
    assert a.grad_norms_init != c.grad_norms_init
    assert a.history[-1]["train_loss"] != c.history[-1]["train_loss"]


def test_training_does_not_touch_the_global_rng(tiny):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(dataclasses.replace(SMALL, epochs=1, activation="rrelu"), dataset=tiny)
    assert torch.equal(torch.rand(3), expected)


def test_learns_the_tiny_data_set(tiny):
    result = train(dataclasses.replace(SMALL, epochs=8), dataset=tiny)
    assert result.test_accuracy > 0.9
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_evaluate_is_the_true_mean_per_sample_loss():
    model = build_model((8,), "tanh", seed=0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(103, 784, generator=g), torch.randint(0, 10, (103,), generator=g)
    loss, accuracy = evaluate(model, x, y, chunk=10)  # 11 chunks, the last of 3 samples
    with torch.no_grad():
        logits = model(x)
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert accuracy == pytest.approx((logits.argmax(1) == y).float().mean().item())


def test_divergence_is_recorded_not_raised(tiny, tmp_path):
    config = dataclasses.replace(SMALL, optimizer="sgd", lr=1e12, epochs=3)
    result = train(config, dataset=tiny, run_dir=tmp_path / "run")
    assert result.status == "diverged" and result.diverged_step is not None
    assert "non-finite loss" in result.error
    saved = json.loads((tmp_path / "run" / "result.json").read_text())  # strict JSON: no NaN
    assert saved["status"] == "diverged"
    assert records.read_metrics(tmp_path / "run")[-1]["kind"] == "diverged"


def global_grad_norm(model: torch.nn.Module) -> float:
    return math.sqrt(sum(p.grad.double().pow(2).sum().item() for p in model.parameters()))


@pytest.mark.parametrize("activation", ["prelu", "tanh"])  # with and without learned slopes
def test_clipping_scales_the_global_norm_to_the_limit(activation):
    model = build_model((12, 7), activation, seed=0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(16, 784, generator=g), torch.randint(0, 10, (16,), generator=g)
    F.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    total = global_grad_norm(model)
    assert not clip_gradients(model, 2 * total)  # below the limit: untouched, not counted
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))
    assert clip_gradients(model, total / 3)
    assert global_grad_norm(model) == pytest.approx(total / 3, rel=1e-5)
    for p, old in zip(model.parameters(), grads, strict=True):  # one factor for every parameter
        torch.testing.assert_close(p.grad, old / 3, rtol=1e-5, atol=1e-12)


def test_clipped_steps_counted_per_epoch_as_a_hand_count(tiny, tmp_path, monkeypatch):
    config = dataclasses.replace(SMALL, clip_grad_norm=0.7)
    norms: list[float] = []
    original = train_module.clip_gradients

    def spy(model, max_norm):
        norms.append(global_grad_norm(model))
        return original(model, max_norm)

    monkeypatch.setattr(train_module, "clip_gradients", spy)
    result = train(config, dataset=tiny, run_dir=tmp_path / "run")
    per_epoch = [sum(n > 0.7 for n in norms[:10]), sum(n > 0.7 for n in norms[10:])]
    assert len(norms) == 20 and 0 < sum(per_epoch) < 20  # some steps clipped, not all
    assert [h["clipped_steps"] for h in result.history] == per_epoch
    rows = [r for r in records.read_metrics(tmp_path / "run") if r["kind"] == "epoch"]
    assert [r["clipped_steps"] for r in rows] == per_epoch
    assert result.clipped_steps == sum(per_epoch)
    assert records.read_json(tmp_path / "run" / records.RESULT)["clipped_steps"] == sum(per_epoch)
    # Without clipping: no count, no key in the rows, and the same first probe (step 0 is
    # measured before any step).
    plain = train(SMALL, dataset=tiny)
    assert plain.clipped_steps is None and all("clipped_steps" not in h for h in plain.history)
    assert plain.grad_norms_init == result.grad_norms_init
    assert plain.grad_norms_final != result.grad_norms_final


def test_an_old_result_without_clipped_steps_loads(tiny, tmp_path):
    train(dataclasses.replace(SMALL, epochs=1), dataset=tiny, run_dir=tmp_path / "run")
    path = tmp_path / "run" / records.RESULT
    saved = records.read_json(path)
    del saved["clipped_steps"]
    records.write_json(path, saved)
    loaded = records.load_result(dataclasses.replace(SMALL, epochs=1), tmp_path / "run")
    assert loaded is not None and loaded.clipped_steps is None


@pytest.mark.parametrize(
    "change, message",
    [
        ({"activation": "swish"}, "unknown activation 'swish'; choose from: sigmoid, tanh"),
        ({"init": "zeros"}, "unknown init 'zeros'; choose from: default, xavier_uniform"),
        (
            {"optimizer": "lbfgs"},
            "unknown optimizer 'lbfgs'; choose from: adam, sgd, rmsprop, adamw",
        ),
        ({"dataset": "cifar10"}, "unknown data set 'cifar10'"),
        ({"device": "tpu"}, "unknown device 'tpu'; choose from: auto, cpu, cuda, mps"),
        ({"lr": 0.0}, "learning rate must be a finite number > 0"),
        ({"lr": float("nan")}, "learning rate must be a finite number > 0"),
        ({"batch_size": 0}, "batch size must be an integer >= 1"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"hidden": ()}, "hidden widths must not be empty; e.g. 520,320,240,120"),
        ({"hidden": (5, 0)}, "every hidden width must be an integer >= 1, got 0"),
        ({"momentum": 1.0}, "momentum must be >= 0 and < 1"),
        ({"seed": -1}, "seed must be an integer 0 to 2**64-1"),
        ({"prelu_mode": "channel"}, "unknown PReLU mode 'channel'; choose from: layer, unit"),
    ],
)
def test_config_validation(change, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        TrainConfig(**change)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(UsageError, match="unknown config field"):
        TrainConfig.from_dict({"activation": "relu", "colour": "red"})


@pytest.mark.realdata
def test_one_epoch_of_the_reference_mlp_reaches_95_percent(real_mnist, monkeypatch):
    result = train(TrainConfig(activation="relu", epochs=1, device="cpu"), dataset=real_mnist)
    assert result.status == "ok" and result.test_accuracy >= 0.95
    assert result.steps == 938  # ceil(60000 / 64)
    # The reference network at PyTorch's init: sigmoid's first layer gets far less gradient.
    assert result.vanishing_ratio_init > 0.1
