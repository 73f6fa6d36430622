"""Probes against references: autograd norms, hand-made saturated and dead units, the phenomenon."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from vanishing.measure import probes
from vanishing.model.activations import ACTIVATIONS, get_activation
from vanishing.model.mlp import MLP, build_model


def batch(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_grad_norms_equal_autograd(name):
    model = build_model((12, 7, 5), name, seed=3)
    x, y = batch()
    measured = probes.measure(model, get_activation(name), x, y)
    # Reference: an ordinary backward pass, hidden outputs kept with retain_grad.
    model.eval()
    logits, _, _, hidden = model.forward_hidden(x)
    for h in hidden:
        h.retain_grad()
    loss = F.cross_entropy(logits, y)
    loss.backward()
    expected = [linear.weight.grad.norm().item() for linear in model.linears]
    assert measured["grad_norms"] == pytest.approx(expected, rel=1e-5)
    assert measured["signal_norms"] == pytest.approx([h.grad.norm().item() for h in hidden], 1e-5)
    assert measured["loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert measured["vanishing_ratio"] == pytest.approx(expected[0] / expected[-1], rel=1e-5)
    assert measured["activation_mean"] == pytest.approx([h.mean().item() for h in hidden], 1e-5)
    assert len(measured["saturated_fraction"]) == len(measured["dead_fraction"]) == 3
    assert ("prelu_slopes" in measured) == (name == "prelu")
    # The probe leaves no gradient behind on the parameters the optimizer will step.
    fresh = build_model((12, 7, 5), name, seed=3)
    probes.measure(fresh, get_activation(name), x, y)
    assert all(p.grad is None for p in fresh.parameters())


def hand_made(activation: str, biases: list[float]) -> MLP:
    """One hidden layer whose pre-activations are exactly `biases` for every input."""
    model = MLP((len(biases),), activation)
    with torch.no_grad():
        for linear in model.linears:
            linear.weight.zero_()
            linear.bias.zero_()
        model.linears[0].bias.copy_(torch.tensor(biases))
    return model


def test_saturated_fraction_on_hand_made_sigmoid_layer():
    # sigmoid'(z) < 0.025 (10 % of 1/4) for |z| > 3.64: z = 10 and -5 saturate, 0 and 2 do not.
    model = hand_made("sigmoid", [10.0, 0.0, -5.0, 2.0])
    measured = probes.measure(model, get_activation("sigmoid"), *batch())
    assert measured["saturated_fraction"] == [0.5]
    assert measured["dead_fraction"] == [0.0]
    assert measured["activation_mean"][0] == pytest.approx(
        sum(1 / (1 + math.exp(-z)) for z in (10, 0, -5, 2)) / 4, rel=1e-6
    )


def test_dead_fraction_on_hand_made_relu_layer():
    # Units with z <= 0 for every sample output zero everywhere: 3 of 4 dead.
    model = hand_made("relu", [1.0, -1.0, -2.0, 0.0])
    x, y = batch()
    measured = probes.measure(model, get_activation("relu"), x, y)
    assert measured["dead_fraction"] == [0.75]
    assert probes.dead_units(model, x, chunk=5) == [0.75]
    # The same layer with leaky_relu: outputs are -0.01 and -0.02, not zero, so none is dead.
    leaky = hand_made("leaky_relu", [1.0, -1.0, -2.0, 0.5])
    assert probes.measure(leaky, get_activation("leaky_relu"), x, y)["dead_fraction"] == [0.0]


def test_dead_units_sees_one_live_sample():
    model = hand_made("relu", [-1.0, -1.0])
    with torch.no_grad():
        model.linears[0].weight[0, 0] = 10.0  # unit 0 fires only for inputs with x[0] > 0.1
    x = torch.zeros(100, 784)
    assert probes.dead_units(model, x, chunk=7) == [1.0]
    x[63, 0] = 1.0
    assert probes.dead_units(model, x, chunk=7) == [0.5]


def test_update_ratio_of_one_sgd_step():
    model = build_model((6,), "tanh", seed=0)
    before = probes.snapshot(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = batch()
    F.cross_entropy(model(x), y).backward()
    expected = [(0.5 * lin.weight.grad.norm() / lin.weight.norm()).item() for lin in model.linears]
    optimizer.step()
    assert probes.update_ratios(model, before) == pytest.approx(expected, rel=1e-5)


def test_prelu_slopes_per_layer():
    model = build_model((4, 3), "prelu", seed=0)
    assert probes.prelu_slopes(model) == pytest.approx([0.25, 0.25])
    with torch.no_grad():
        model.activations[1].weight.fill_(0.5)
    assert probes.prelu_slopes(model) == pytest.approx([0.25, 0.5])
    assert probes.prelu_slopes(build_model((4,), "relu")) is None


def test_deep_sigmoid_vanishes_where_relu_kaiming_does_not():
    """The phenomenon itself: 10 sigmoid layers attenuate the gradient by orders of magnitude."""
    x, y = batch(256)
    sigmoid = probes.measure(
        build_model((128,) * 10, "sigmoid", seed=0), get_activation("sigmoid"), x, y
    )
    relu = probes.measure(
        build_model((128,) * 10, "relu", "kaiming", seed=0), get_activation("relu"), x, y
    )
    assert sigmoid["vanishing_ratio"] < 1e-4
    assert relu["vanishing_ratio"] > 1e3 * sigmoid["vanishing_ratio"]
    # And it decays layer by layer towards the input.
    norms = sigmoid["grad_norms"]
    assert all(a < b for a, b in zip(norms[:-1], norms[1:], strict=True))


def test_ratio_edge_cases():
    assert probes.ratio(1.0, 4.0) == 0.25
    assert probes.ratio(1.0, 0.0) == math.inf
    assert math.isnan(probes.ratio(0.0, 0.0))
