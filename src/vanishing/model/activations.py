"""The one registry of activation functions, their derivatives and the saturation rule.

Families:
- saturating (sigmoid, tanh, softplus): the slope tends to 0 on at least one side, so a deep
  stack of them multiplies many small factors and the gradient vanishes.
- rectifier (relu, leaky_relu, prelu, rrelu): slope 1 for z > 0 and a constant (0 or small)
  slope for z < 0; gradients pass unchanged through active units, dead units pass none.
- smooth (elu, selu, gelu, silu, mish): rectifier-like for z > 0 but smooth, with a non-zero
  slope for moderately negative z.
- linear: the identity, the reference with no nonlinearity at all.

Saturation rule: a unit is saturated where |f'(z)| is below SATURATION_FRACTION (10 %) of the
activation's maximum slope `derivative_bound`. For rectifiers this counts the negative side
(dead or nearly dead units: relu's slope there is 0, leaky_relu's 0.01).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vanishing.errors import UsageError, choices_error

# The documented threshold: "derivative below 10 % of its maximum".
SATURATION_FRACTION = 0.1

PRELU_MODES = ("layer", "unit")


@dataclass(frozen=True)
class ActivationOptions:
    """Settings of the parametrised activations; the others ignore them."""

    negative_slope: float = 0.01  # leaky_relu: the seed experiment's and PyTorch's default
    prelu_mode: str = "layer"  # "layer": one learned slope per layer; "unit": one per unit
    prelu_init: float = 0.25  # PyTorch's default, from He et al. 2015

    def __post_init__(self) -> None:
        if self.prelu_mode not in PRELU_MODES:
            raise choices_error("PReLU mode", self.prelu_mode, PRELU_MODES)
        if not 0 <= self.negative_slope < 1:
            raise UsageError(f"negative slope must be >= 0 and < 1, got {self.negative_slope!r}")


# Frozen, so one shared instance is a safe default argument.
DEFAULT_OPTIONS = ActivationOptions()


@dataclass(frozen=True)
class Activation:
    """One registry entry: how to build the module and what its slope can be."""

    name: str
    label: str  # as printed in tables and figures, e.g. "LeakyReLU"
    family: str  # "saturating", "rectifier", "smooth" or "linear"
    derivative_bound: float  # sup over z of |f'(z)|; the saturation rule is relative to it
    description: str  # one line for --help and reports
    # (width, options) -> module; left out of ==, as a pickled copy holds a new partial.
    build: Callable[[int, ActivationOptions], nn.Module] = field(compare=False)
    # The functional forms a model's forward may call instead of the module (F.relu,
    # torch.sigmoid, x.tanh(), ...): `watch` measures them too.
    twins: tuple[Callable[..., Tensor], ...] = field(default=(), compare=False)
    # The init its fixed point assumes, where it has one: with it, each layer pulls the
    # activations towards mean 0, variance 1 (SELU with lecun init, Klambauer et al. 2017), so
    # inputs away from that point make the first layers grow or shrink towards it, as designed.
    fixed_point_init: str = ""


def _construct(module_class: type[nn.Module], width: int, options: ActivationOptions) -> nn.Module:
    # Module-level (not a lambda) so that registry entries, and models holding them, pickle.
    return module_class()


def _leaky_relu(width: int, options: ActivationOptions) -> nn.Module:
    return nn.LeakyReLU(options.negative_slope)


def _prelu(width: int, options: ActivationOptions) -> nn.Module:
    slopes = 1 if options.prelu_mode == "layer" else width
    return nn.PReLU(num_parameters=slopes, init=options.prelu_init)


# Maximum slopes of the smooth ones, found numerically on a dense float64 grid (tests re-derive
# them): gelu's is exact, Phi(sqrt 2) + sqrt 2 * phi(sqrt 2) = (1 + erf 1) / 2 + 1 / (e sqrt pi).
_GELU_MAX_SLOPE = 1.1289041452
_SILU_MAX_SLOPE = 1.0998393200
_MISH_MAX_SLOPE = 1.0884981612
# selu's slope is largest just left of 0, where it is scale * alpha.
_SELU_MAX_SLOPE = 1.0507009873554805 * 1.6732632423543772

ACTIVATIONS: dict[str, Activation] = {
    activation.name: activation
    for activation in (
        Activation(
            "sigmoid",
            "Sigmoid",
            "saturating",
            0.25,
            "logistic 1/(1+e^-z); slope at most 1/4, the classic vanishing gradient",
            partial(_construct, nn.Sigmoid),
            (torch.sigmoid, Tensor.sigmoid, Tensor.sigmoid_, torch.sigmoid_),
        ),
        Activation(
            "tanh",
            "Tanh",
            "saturating",
            1.0,
            "hyperbolic tangent; zero-centred, slope 1 at 0 but saturates for |z| > 2",
            partial(_construct, nn.Tanh),
            (torch.tanh, Tensor.tanh, Tensor.tanh_, torch.tanh_),
        ),
        Activation(
            "relu",
            "ReLU",
            "rectifier",
            1.0,
            "max(0, z); slope 1 or 0, units stuck at z < 0 are dead",
            partial(_construct, nn.ReLU),
            (F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_),
        ),
        Activation(
            "leaky_relu",
            "LeakyReLU",
            "rectifier",
            1.0,
            "max(z, a z) with a fixed small slope a for z < 0 (--negative-slope)",
            _leaky_relu,
            (F.leaky_relu, F.leaky_relu_),
        ),
        # The bound holds at init (slope 0.25); the learned slope may grow past 1.
        Activation(
            "prelu",
            "PReLU",
            "rectifier",
            1.0,
            "leaky relu whose negative slope is learned, per layer or per unit",
            _prelu,
        ),
        Activation(
            "rrelu",
            "RReLU",
            "rectifier",
            1.0,
            "leaky relu with a random slope in [1/8, 1/3] while training, the mean when not",
            partial(_construct, nn.RReLU),
        ),
        Activation(
            "elu",
            "ELU",
            "smooth",
            1.0,
            "z for z > 0, e^z - 1 below (alpha = 1); smooth, negative outputs",
            partial(_construct, nn.ELU),
            (F.elu, F.elu_),
        ),
        Activation(
            "selu",
            "SELU",
            "smooth",
            _SELU_MAX_SLOPE,
            "scaled elu whose fixed point keeps activations at mean 0, variance 1",
            partial(_construct, nn.SELU),
            (F.selu, F.selu_, torch.selu, torch.selu_),
            fixed_point_init="lecun",
        ),
        Activation(
            "gelu",
            "GELU",
            "smooth",
            _GELU_MAX_SLOPE,
            "z Phi(z), relu weighted by the normal CDF (exact erf form)",
            partial(_construct, nn.GELU),
            (F.gelu,),
        ),
        Activation(
            "silu",
            "SiLU",
            "smooth",
            _SILU_MAX_SLOPE,
            "z sigmoid(z), also called swish",
            partial(_construct, nn.SiLU),
            (F.silu,),
        ),
        Activation(
            "mish",
            "Mish",
            "smooth",
            _MISH_MAX_SLOPE,
            "z tanh(softplus(z))",
            partial(_construct, nn.Mish),
            (F.mish,),
        ),
        Activation(
            "softplus",
            "Softplus",
            "saturating",
            1.0,
            "log(1 + e^z), a smooth relu whose slope vanishes for z << 0",
            partial(_construct, nn.Softplus),
            (F.softplus,),
        ),
        Activation(
            "linear",
            "Linear",
            "linear",
            1.0,
            "the identity: no nonlinearity, the depth adds nothing",
            partial(_construct, nn.Identity),
        ),
    )
}


def get_activation(name: str) -> Activation:
    """Look an activation up by name."""
    if name not in ACTIVATIONS:
        raise choices_error("activation", name, list(ACTIVATIONS))
    return ACTIVATIONS[name]


def make_activation(
    name: str, width: int, options: ActivationOptions = DEFAULT_OPTIONS
) -> nn.Module:
    """Build the activation module for a hidden layer of `width` units."""
    activation = get_activation(name)
    if width < 1:
        raise UsageError(f"layer width must be >= 1, got {width!r}")
    return activation.build(width, options)


def _kept(tensor: Tensor) -> Tensor:
    return tensor


def derivative(module: nn.Module, z: Tensor) -> Tensor:
    """Elementwise f'(z) of an elementwise activation module, by autograd; z is (batch, width).

    Uses the module's current parameters (e.g. PReLU's learned slopes) and leaves no gradient on
    them. RReLU in training mode draws fresh random slopes, so call it in eval mode for the mean.
    """
    # Its own graph, kept from any saved-tensor hooks the caller has (activation checkpointing
    # counts the tensors a forward saves: these would be counted too).
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(_kept, _kept):
        z = z.detach().requires_grad_(True)
        out = module(
            z.clone()
        )  # a copy: an in-place module (ReLU(inplace=True)) may not write a leaf
        # Elementwise, so the vector-Jacobian product with ones is the diagonal f'(z).
        (slope,) = torch.autograd.grad(out, z, torch.ones_like(out))
    return slope


def saturated_mask(
    act: Activation, module: nn.Module, z: Tensor, fraction: float = SATURATION_FRACTION
) -> Tensor:
    """True where |f'(z)| is below `fraction` of the activation's maximum slope."""
    if not 0 < fraction <= 1:
        raise UsageError(f"saturation fraction must be in (0, 1], got {fraction!r}")
    return derivative(module, z).abs() < fraction * act.derivative_bound


def activation_of(module: nn.Module) -> Activation | None:
    """The registry entry whose module `module` is (an nn.ReLU is "relu"), None for any other
    module; the identity is not an activation here (models use nn.Identity as a placeholder)."""
    for activation in ACTIVATIONS.values():
        if activation.family != "linear" and type(module) is type(
            activation.build(1, DEFAULT_OPTIONS)
        ):
            return activation
    return None


def activation_of_function(function: Callable[..., Tensor]) -> Activation | None:
    """The registry entry whose functional twin `function` is (F.relu is "relu"), else None."""
    for activation in ACTIVATIONS.values():
        if function in activation.twins:
            return activation
    return None
