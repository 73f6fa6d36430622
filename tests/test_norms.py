"""Norm layers, residual skips and the init gain against hand-written references; the probes'
batch statistics; a batch-norm run resumed."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.nn import functional as F

from conftest import interrupt_after_one_epoch, without_timings
from vanishing import records
from vanishing.data import datasets as data
from vanishing.errors import UsageError
from vanishing.measure import probes
from vanishing.model.activations import get_activation, saturated_mask
from vanishing.model.mlp import INITS, MLP, NORMS, build_model, initialize
from vanishing.settings.config import TrainConfig
from vanishing.training.loop import evaluate, train

EPS = 1e-5  # nn.BatchNorm1d's and nn.LayerNorm's


@pytest.fixture
def tiny(tiny_dir) -> data.Dataset:
    return data.load_dataset(data_dir=tiny_dir, verify=False)


def batch(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 784, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 10, (n,), generator=g)


def hand_norm(norm: str, z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """Batch norm with the batch's statistics (over samples), layer norm (over units)."""
    if norm == "none":
        return z
    dim = 0 if norm == "batch" else 1
    mean, var = z.mean(dim, keepdim=True), z.var(dim, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + EPS) * weight + bias


def hand_pass(model: MLP, norm: str, residual: bool, x: torch.Tensor):
    """The network written out by hand from its parameters: logits, activation inputs u_l,
    activation outputs a_l and layer outputs h_l."""
    act = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[model.activation.name]
    h, us, acts, hs = x, [], [], []
    for layer, linear in enumerate(model.linears[:-1]):
        z = h @ linear.weight.T + linear.bias
        if norm != "none":
            module = model.norms[layer]
            u = hand_norm(norm, z, module.weight, module.bias)
        else:
            u = z
        a = act(u)
        h = h + a if residual and layer > 0 else a
        us.append(u)
        acts.append(a)
        hs.append(h)
    return h @ model.linears[-1].weight.T + model.linears[-1].bias, us, acts, hs


def randomised(norm: str, residual: bool, activation: str, gain: float = 3.0) -> MLP:
    """A double-precision model whose norm layers have non-trivial scales and shifts."""
    hidden = (9, 9, 9) if residual else (12, 9, 7)
    model = build_model(
        hidden, activation, "xavier", seed=0, norm=norm, residual=residual, init_gain=gain
    ).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.norms.parameters() if model.norms is not None else []:
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("norm", list(NORMS))
def test_probes_equal_a_hand_written_network(norm, residual, activation):
    model = randomised(norm, residual, activation)
    x, y = batch()
    measured = probes.measure(model, get_activation(activation), x, y)
    logits, us, acts, hs = hand_pass(model, norm, residual, x)
    for h in hs:
        h.retain_grad()
    loss = F.cross_entropy(logits, y)
    loss.backward()
    assert measured["loss"] == pytest.approx(loss.item(), rel=1e-10)
    expected = [linear.weight.grad.norm().item() for linear in model.linears]
    assert measured["grad_norms"] == pytest.approx(expected, rel=1e-8)
    assert measured["signal_norms"] == pytest.approx([h.grad.norm().item() for h in hs], 1e-8)
    assert measured["activation_mean"] == pytest.approx([h.mean().item() for h in hs], 1e-8)
    assert measured["activation_std"] == pytest.approx([h.std().item() for h in hs], 1e-8)
    saturated = [
        saturated_mask(model.activation, module, u).double().mean().item()
        for module, u in zip(model.activations, us, strict=True)
    ]
    # Saturation of the activation's input (after the norm), dead units of its output.
    assert measured["saturated_fraction"] == pytest.approx(saturated, rel=1e-6)
    dead = [(a == 0).all(dim=0).double().mean().item() for a in acts]
    assert measured["dead_fraction"] == pytest.approx(dead, rel=1e-6)
    # forward and forward_hidden are this network too (batch norm in train mode: batch stats).
    model.train()
    torch.testing.assert_close(model(x), logits)
    torch.testing.assert_close(model.forward_hidden(x).logits, logits)


def test_saturation_is_judged_after_the_norm():
    """Saturation is judged after the norm: sigmoid saturates at gain 10 without one, not with."""
    x, y = batch()
    sigmoid = get_activation("sigmoid")
    plain = probes.measure(randomised("none", False, "sigmoid", gain=10), sigmoid, x, y)
    normed = probes.measure(randomised("layer", False, "sigmoid", gain=10), sigmoid, x, y)
    assert plain["saturated_fraction"][0] > 0.5 > 0.05 > normed["saturated_fraction"][0]


def bn_state(model: MLP) -> list[torch.Tensor]:
    return [t.clone() for t in model.norms.state_dict().values()]


def trained_batch_norm() -> MLP:
    """A batch-norm MLP after three training forwards: running stats away from 0 and 1."""
    model = build_model((6, 5), "relu", seed=0, norm="batch")
    for seed in range(3):
        model(batch(16, seed)[0].float())
    assert model.norms[0].num_batches_tracked == 3
    return model


def test_probes_use_the_batch_statistics_and_change_no_state():
    model = trained_batch_norm()
    x, y = batch(32, 7)
    x = x.float()
    before = bn_state(model)
    pass_ = model.forward_hidden(x)
    z = model.linears[0](x)
    bn = model.norms[0]
    expected = hand_norm("batch", z, bn.weight, bn.bias)
    torch.testing.assert_close(pass_.pre_activations[0], expected)
    running = model.forward_hidden(x, "running").pre_activations[0]
    by_running = (z - bn.running_mean) / torch.sqrt(bn.running_var + EPS) * bn.weight + bn.bias
    torch.testing.assert_close(running, by_running)
    assert not torch.allclose(running, expected)
    measured = probes.measure(model, get_activation("relu"), x, y)
    probes.dead_units(model, x, chunk=5)
    for a, b in zip(bn_state(model), before, strict=True):
        assert torch.equal(a, b)  # running mean, var and the batch count untouched
    assert model.training  # measure's eval() undone
    # At init the running stats are 0 and 1: eval mode would be an identity norm. The probe
    # measures the normalised network, which differs.
    fresh = build_model((6, 5), "relu", seed=0, norm="batch")
    plain = build_model((6, 5), "relu", seed=0)
    normed = probes.measure(fresh, get_activation("relu"), x, y)["grad_norms"]
    unnormed = probes.measure(plain, get_activation("relu"), x, y)["grad_norms"]
    assert normed != pytest.approx(unnormed, rel=1e-3)
    # Same weights, other running statistics: the probe does not read them.
    assert measured["grad_norms"] == pytest.approx(normed, rel=1e-6)


def test_training_updates_running_stats_and_evaluate_uses_them():
    model = build_model((6, 5), "relu", seed=0, norm="batch")
    x, y = batch(16)
    x = x.float()
    z = model.linears[0](x).detach()
    model(x)  # train mode: batch statistics, running ones moved by momentum 0.1
    bn = model.norms[0]
    torch.testing.assert_close(bn.running_mean, 0.1 * z.mean(0))
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * z.var(0, unbiased=True))
    before = bn_state(model)
    loss, accuracy = evaluate(model, x, y, chunk=5)
    with torch.no_grad():
        logits = model.forward_hidden(x, "running").logits
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert accuracy == pytest.approx((logits.argmax(1) == y).float().mean().item())
    with torch.no_grad():
        batch_logits = model.forward_hidden(x, "batch").logits
    assert loss != pytest.approx(F.cross_entropy(batch_logits, y).item(), rel=1e-3)
    assert all(torch.equal(a, b) for a, b in zip(bn_state(model), before, strict=True))
    assert model.training


def test_dead_units_in_a_residual_net_are_judged_on_the_activation():
    """A dead unit's layer output is the stream passing by, not zero: dead all the same."""
    model = build_model((4, 4, 4), "relu", seed=0, residual=True)
    with torch.no_grad():
        model.linears[1].weight.zero_()
        model.linears[1].bias.fill_(-1.0)  # layer 1: every unit dead
        model.linears[0].bias.fill_(1.0)  # layer 0: every unit alive for inputs >= 0
    x, y = batch(20)
    x = x.float()
    measured = probes.measure(model, get_activation("relu"), x, y)
    assert measured["dead_fraction"][:2] == [0.0, 1.0]
    assert probes.dead_units(model, x, chunk=3)[:2] == [0.0, 1.0]
    hidden = model.forward_hidden(x)
    torch.testing.assert_close(hidden.outputs[1], hidden.outputs[0])  # h1 = h0 + 0
    assert measured["activation_mean"][1] == pytest.approx(measured["activation_mean"][0])


def test_residual_needs_equal_widths_and_norm_a_known_name():
    with pytest.raises(UsageError, match="equal hidden widths"):
        MLP((8, 4), "relu", residual=True)
    with pytest.raises(UsageError, match="unknown norm 'group'; choose from: none, batch, layer"):
        MLP((8,), "relu", norm="group")


def test_a_plain_model_has_the_state_dict_it_always_had():
    keys = set(build_model((8, 8), "prelu", seed=0, residual=True).state_dict())
    assert keys == {f"linears.{i}.{p}" for i in range(3) for p in ("weight", "bias")} | {
        "activations.0.weight",
        "activations.1.weight",
    }
    normed = build_model((8, 4), "relu", seed=0, norm="batch").state_dict()
    assert {"norms.0.running_mean", "norms.1.running_var", "norms.0.num_batches_tracked"} <= set(
        normed
    )


@pytest.mark.parametrize("init", list(INITS))
def test_init_gain_scales_every_weight_not_the_biases(init):
    one = build_model((7, 5), "relu", init, seed=3)
    two = build_model((7, 5), "relu", init, seed=3, init_gain=2.5)
    for a, b in zip(one.linears, two.linears, strict=True):
        torch.testing.assert_close(b.weight, 2.5 * a.weight, rtol=1e-6, atol=0)
        assert torch.equal(a.bias, b.bias)


@pytest.mark.parametrize(
    ("init", "gain", "std"),
    [
        ("kaiming", 2.0, 2 * math.sqrt(2 / 784)),
        ("kaiming", math.sqrt(2), 2 / math.sqrt(784)),
        ("default", 3.0, 3 / math.sqrt(784) / math.sqrt(3)),
    ],
)
def test_init_gain_weight_std_over_a_wide_layer(init, gain, std):
    torch.manual_seed(0)
    wide = MLP((2000,), "relu")
    initialize(wide, init, "relu", gain=gain)
    assert wide.linears[0].weight.std().item() == pytest.approx(std, rel=0.02)


SMALL_BN = TrainConfig(
    hidden=(32, 16),
    epochs=3,
    batch_size=32,
    probe_every=4,
    probe_size=64,
    device="cpu",
    norm="batch",
    clip_grad_norm=1.0,
)


def test_batch_norm_run_resumes_to_the_uninterrupted_result(tiny, tmp_path):
    expected = train(SMALL_BN, dataset=tiny, run_dir=tmp_path / "whole")
    run_dir = tmp_path / "resumed"
    interrupt_after_one_epoch(SMALL_BN, run_dir, tiny)
    saved = torch.load(run_dir / records.CHECKPOINT, weights_only=True)["model"]
    assert saved["norms.0.num_batches_tracked"] == 10  # one epoch of steps, no probe's
    result = train(SMALL_BN, dataset=tiny, run_dir=run_dir, resume=True)
    assert result.status == "ok" and result.clipped_steps == expected.clipped_steps > 0
    assert without_timings(result.to_dict()) == without_timings(expected.to_dict())
    assert without_timings(records.read_metrics(run_dir)) == without_timings(
        records.read_metrics(tmp_path / "whole")
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"probe_size": 1}, "batch norm needs 2 samples or more to normalise with, got a batch"),
        ({"batch_size": 319}, "leaves a batch of 1 of the 320 training samples"),
        ({"batch_size": 1}, "batch norm needs 2 samples or more to normalise with, got a batch"),
    ],
)
def test_batch_norm_refuses_batches_of_one(tiny, change, message):
    with pytest.raises(UsageError, match=message):
        train(dataclasses.replace(SMALL_BN, **change), dataset=tiny)
    layer_norm = dataclasses.replace(SMALL_BN, norm="layer", epochs=1, **change)  # accepted
    if layer_norm.batch_size > 1:  # (320 steps of one sample would only cost time)
        train(layer_norm, dataset=tiny)
