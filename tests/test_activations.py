"""Activation registry: slopes against hand formulas and finite differences, saturation rule."""

import math
import re

import pytest
import torch

from vanishing.errors import UsageError
from vanishing.model.activations import (
    ACTIVATIONS,
    SATURATION_FRACTION,
    ActivationOptions,
    derivative,
    get_activation,
    make_activation,
    saturated_mask,
)

NAMES = list(ACTIVATIONS)
WIDTH = 5
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805
RRELU_MEAN_SLOPE = (1 / 8 + 1 / 3) / 2  # RReLU in eval mode uses the mean of [lower, upper]
# The families of the module docstring: reports pick dead % or saturated % by family.
FAMILIES = ("saturating", "rectifier", "smooth", "linear")


def _step(z: torch.Tensor, below: float) -> torch.Tensor:
    """Slope 1 for z > 0 and `below` otherwise, in z's dtype."""
    return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, below))


def _mish_slope(z: torch.Tensor) -> torch.Tensor:
    t = torch.tanh(torch.nn.functional.softplus(z))
    return t + z * (1 - t**2) * torch.sigmoid(z)


# f'(z) by hand for every registry entry (default options, eval mode), independent of autograd.
HAND_SLOPES = {
    "sigmoid": lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z)),
    "tanh": lambda z: 1 - torch.tanh(z) ** 2,
    "relu": lambda z: _step(z, 0.0),
    "leaky_relu": lambda z: _step(z, 0.01),
    "prelu": lambda z: _step(z, 0.25),
    "rrelu": lambda z: _step(z, RRELU_MEAN_SLOPE),
    "elu": lambda z: torch.where(z > 0, 1.0, torch.exp(z)),
    "selu": lambda z: SELU_SCALE * torch.where(z > 0, 1.0, SELU_ALPHA * torch.exp(z)),
    "gelu": lambda z: (
        0.5 * (1 + torch.erf(z / math.sqrt(2)))
        + z * torch.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
    ),
    "silu": lambda z: torch.sigmoid(z) * (1 + z * (1 - torch.sigmoid(z))),
    "mish": _mish_slope,
    "softplus": torch.sigmoid,
    "linear": torch.ones_like,
}


def _points() -> torch.Tensor:
    """(8, WIDTH) float64 points away from the kink at 0, a different value in every column."""
    base = torch.tensor([-6.0, -3.1, -1.2, -0.35, 0.4, 1.1, 2.7, 5.5], dtype=torch.float64)
    return base[:, None] + 0.013 * torch.arange(WIDTH, dtype=torch.float64)


def _module(name: str) -> torch.nn.Module:
    return make_activation(name, WIDTH).double().eval()


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_is_well_formed(name):
    activation = ACTIVATIONS[name]
    assert get_activation(name) is activation
    assert activation.name == name
    # Typed on the command line, joined with commas, and part of every run's folder name.
    assert re.fullmatch(r"[a-z][a-z0-9_]*", name)
    assert activation.label and activation.label.isprintable()
    assert activation.family in FAMILIES
    assert activation.description and "\n" not in activation.description
    assert name in HAND_SLOPES, "add f'(z) by hand for the new activation to HAND_SLOPES"


def test_registry_holds_the_references_and_distinct_labels():
    # The seed experiment's pair: the saturating sigmoid against the rectifier relu.
    assert ACTIVATIONS["sigmoid"].family == "saturating"
    assert ACTIVATIONS["relu"].family == "rectifier"
    labels = [activation.label for activation in ACTIVATIONS.values()]
    assert len(set(labels)) == len(labels), "tables and figures tell runs apart by label"
    assert set(HAND_SLOPES) <= set(ACTIVATIONS), "a hand formula for a removed activation"


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape(name):
    module = make_activation(name, WIDTH)
    assert module(torch.randn(3, WIDTH)).shape == (3, WIDTH)


@pytest.mark.parametrize("name", NAMES)
def test_derivative_matches_hand_formula(name):
    z = _points()
    torch.testing.assert_close(derivative(_module(name), z), HAND_SLOPES[name](z).expand_as(z))


@pytest.mark.parametrize("name", NAMES)
def test_derivative_matches_finite_difference(name):
    module, z, h = _module(name), _points(), 1e-5
    with torch.no_grad():
        numeric = (module(z + h) - module(z - h)) / (2 * h)
    torch.testing.assert_close(derivative(module, z), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_derivative_bound_is_the_numerical_maximum(name):
    # Train mode on purpose: RReLU's random slopes must stay within the bound too.
    module = make_activation(name, WIDTH).double()
    z = torch.linspace(-10, 10, 40_001 * WIDTH, dtype=torch.float64).reshape(-1, WIDTH)
    top = derivative(module, z).abs().max().item()
    assert abs(top - get_activation(name).derivative_bound) < 1e-3


def test_derivative_uses_learned_prelu_slopes_and_leaves_no_grad():
    module = make_activation("prelu", WIDTH, ActivationOptions(prelu_mode="unit"))
    slopes = torch.tensor([0.1, 0.2, 0.3, 0.4, 1.5])
    with torch.no_grad():
        module.weight.copy_(slopes)
    z = torch.tensor([[-1.0] * WIDTH, [2.0] * WIDTH])
    with torch.no_grad():
        slope = derivative(module, z)
    torch.testing.assert_close(slope, torch.stack([slopes, torch.ones(WIDTH)]))
    assert module.weight.grad is None
    assert not slope.requires_grad


def test_rrelu_training_slopes_are_random_within_range():
    module = make_activation("rrelu", WIDTH).train()
    slope = derivative(module, torch.full((200, WIDTH), -1.0))
    assert slope.min() >= 1 / 8 and slope.max() <= 1 / 3
    assert slope.std() > 0.01


def test_options_reach_the_modules():
    leaky = make_activation("leaky_relu", WIDTH, ActivationOptions(negative_slope=0.2))
    torch.testing.assert_close(derivative(leaky, -torch.ones(1, WIDTH)), torch.full((1, 5), 0.2))
    layer = make_activation("prelu", WIDTH, ActivationOptions(prelu_init=0.1))
    unit = make_activation("prelu", WIDTH, ActivationOptions(prelu_mode="unit"))
    assert layer.weight.shape == (1,) and layer.weight.item() == pytest.approx(0.1)
    assert unit.weight.shape == (WIDTH,) and torch.all(unit.weight == 0.25)


@pytest.mark.parametrize(
    ("name", "z", "saturated"),
    [
        ("sigmoid", 0.0, False),
        ("sigmoid", 5.0, True),  # 0.0066 < 0.025
        ("sigmoid", -4.0, True),  # 0.0177 < 0.025
        ("sigmoid", -3.0, False),  # 0.0452
        ("tanh", 2.0, True),  # 0.0707 < 0.1
        ("tanh", 1.5, False),  # 0.181
        ("relu", -0.5, True),  # dead side, slope 0
        ("relu", 0.5, False),
        ("leaky_relu", -0.5, True),  # 0.01 < 0.1
        ("elu", -3.0, True),  # e^-3 = 0.0498
        ("elu", -2.0, False),  # e^-2 = 0.135
        ("linear", -9.0, False),
    ],
)
def test_saturated_mask(name, z, saturated):
    module = make_activation(name, WIDTH)
    mask = saturated_mask(get_activation(name), module, torch.full((2, WIDTH), z))
    assert mask.dtype == torch.bool and mask.shape == (2, WIDTH)
    assert bool(mask.all()) is saturated and bool(mask.any()) is saturated


def test_saturated_mask_fraction():
    sigmoid = get_activation("sigmoid")
    module = make_activation("sigmoid", 1)
    z = torch.tensor([[-3.0]])  # slope 0.0452 = 18 % of 0.25
    assert SATURATION_FRACTION == 0.1
    assert not saturated_mask(sigmoid, module, z).item()
    assert saturated_mask(sigmoid, module, z, fraction=0.2).item()
    with pytest.raises(UsageError, match="fraction"):
        saturated_mask(sigmoid, module, z, fraction=0.0)


def test_unknown_activation_names_the_choices():
    with pytest.raises(UsageError, match="unknown activation 'swish'; choose from: sigmoid, tanh"):
        get_activation("swish")
    with pytest.raises(UsageError, match="leaky_relu"):
        make_activation("Relu", WIDTH)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prelu_mode": "channel"}, "choose from: layer, unit"),
        ({"negative_slope": -0.1}, r"negative slope must be >= 0 and < 1.*-0\.1"),
        ({"negative_slope": 1.0}, r"negative slope must be >= 0 and < 1.*1\.0"),
    ],
)
def test_bad_options_raise(options, message):
    with pytest.raises(UsageError, match=message):
        ActivationOptions(**options)


def test_bad_width_raises():
    with pytest.raises(UsageError, match="width must be >= 1"):
        make_activation("prelu", 0)
