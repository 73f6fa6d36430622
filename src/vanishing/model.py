"""The MLP, and the registries of weight-init schemes and optimizers."""

import math
import numbers
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from vanishing.activations import (
    DEFAULT_OPTIONS,
    Activation,
    ActivationOptions,
    get_activation,
    make_activation,
)
from vanishing.errors import UsageError, choices_error

SEED_HIDDEN = (520, 320, 240, 120)  # the reference experiment's hidden widths
DEFAULT_WIDTH = 256  # for --depth without --width: wide enough that width is not the bottleneck


def hidden_widths(
    hidden: Sequence[int] | None = None, depth: int | None = None, width: int | None = None
) -> tuple[int, ...]:
    """The hidden widths from an explicit list, or depth x width, or the seed experiment's."""
    if hidden is not None:
        if depth is not None or width is not None:
            raise UsageError(
                "give either the hidden widths (--hidden) or --depth/--width, not both"
            )
        if len(hidden) == 0:
            raise UsageError("hidden widths must not be empty; e.g. 520,320,240,120")
        for value in hidden:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise UsageError(f"every hidden width must be an integer >= 1, got {value!r}")
        return tuple(int(value) for value in hidden)
    if depth is None and width is None:
        return SEED_HIDDEN
    # Width alone keeps the seed experiment's depth.
    depth = len(SEED_HIDDEN) if depth is None else depth
    width = DEFAULT_WIDTH if width is None else width
    if depth < 1:
        raise UsageError(f"depth must be >= 1 hidden layer, got {depth!r}")
    if width < 1:
        raise UsageError(f"width must be >= 1 unit, got {width!r}")
    return (width,) * depth


def parse_hidden(text: str) -> tuple[int, ...]:
    """Parse comma-separated hidden widths such as "520,320,240,120"."""
    expected = "expected comma-separated integers >= 1, e.g. 520,320,240,120"
    widths = []
    for item in text.split(","):
        item = item.strip()
        try:
            value = int(item)
        except ValueError:
            raise UsageError(f"bad hidden width {item!r} in {text!r}; {expected}") from None
        if value < 1:
            raise UsageError(f"bad hidden width {item!r} in {text!r}; {expected}")
        widths.append(value)
    return tuple(widths)


# A later version trains a group of same-shaped models at once with stacked weights, so the
# MLP stays plain: Linear layers in a ModuleList, activations per layer, no hidden state.
class MLP(nn.Module):
    """784 -> hidden... -> 10, the same activation after every hidden layer."""

    def __init__(
        self,
        hidden: Sequence[int],
        activation: str,
        options: ActivationOptions = DEFAULT_OPTIONS,
        in_features: int = 784,
        classes: int = 10,
    ) -> None:
        super().__init__()
        self.hidden = hidden_widths(hidden)
        self.activation = get_activation(activation)
        self.options = options
        sizes = (in_features, *self.hidden, classes)
        self.linears = nn.ModuleList(
            nn.Linear(fan_in, fan_out) for fan_in, fan_out in zip(sizes, sizes[1:], strict=False)
        )
        # One module per layer, so PReLU learns its slopes separately in every layer.
        self.activations = nn.ModuleList(
            make_activation(activation, width, options) for width in self.hidden
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits (batch, classes) of images (batch, 784) or (batch, 28, 28)."""
        h = x.flatten(1)
        # zip stops at the last activation; the output layer has none.
        for linear, act in zip(self.linears, self.activations, strict=False):
            h = act(linear(h))
        return self.linears[-1](h)

    def forward_hidden(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Logits, pre-activations z_l and outputs h_l = act(z_l) of every hidden layer."""
        h = x.flatten(1)
        pre_activations, outputs = [], []
        for linear, act in zip(self.linears, self.activations, strict=False):
            z = linear(h)  # (batch, width_l)
            h = act(z)
            pre_activations.append(z)
            outputs.append(h)
        return self.linears[-1](h), pre_activations, outputs


def _init_default(model: MLP, activation: Activation) -> None:
    # Re-draw by PyTorch's own rule: U(+-1/sqrt(fan_in)) for weights and biases.
    for linear in model.linears:
        linear.reset_parameters()


def _init_weights(rule: Callable[[Tensor], object]) -> Callable[[MLP, Activation], None]:
    """An init scheme that applies `rule` to every Linear weight and zeroes the biases."""

    def init(model: MLP, activation: Activation) -> None:
        for linear in model.linears:
            rule(linear.weight)
            nn.init.zeros_(linear.bias)

    return init


def _init_kaiming(model: MLP, activation: Activation) -> None:
    # He et al.'s gain sqrt(2 / (1 + a^2)) uses the slope a of the negative side.
    if activation.name == "leaky_relu":
        a, nonlinearity = model.options.negative_slope, "leaky_relu"
    elif activation.name == "prelu":
        a, nonlinearity = model.options.prelu_init, "leaky_relu"
    else:
        a, nonlinearity = 0.0, "relu"
    _init_weights(
        lambda weight: nn.init.kaiming_normal_(
            weight, a=a, mode="fan_in", nonlinearity=nonlinearity
        )
    )(model, activation)


def _lecun_normal(weight: Tensor) -> Tensor:
    fan_in = weight.shape[1]  # weight is (fan_out, fan_in)
    return nn.init.normal_(weight, 0.0, 1 / math.sqrt(fan_in))


INITS: dict[str, Callable[[MLP, Activation], None]] = {
    "default": _init_default,
    "xavier_uniform": _init_weights(nn.init.xavier_uniform_),
    "xavier_normal": _init_weights(nn.init.xavier_normal_),
    "kaiming": _init_kaiming,
    "lecun": _init_weights(_lecun_normal),
    "orthogonal": _init_weights(nn.init.orthogonal_),
}
INIT_ALIASES = {"xavier": "xavier_uniform", "he": "kaiming"}


def init_names() -> list[str]:
    """Every accepted init name, aliases included."""
    return [*INITS, *INIT_ALIASES]


def initialize(model: MLP, init: str, activation: str | None = None) -> None:
    """Re-initialise the model's Linear layers in place; activation defaults to the model's."""
    name = INIT_ALIASES.get(init, init)
    if name not in INITS:
        raise choices_error("init", init, init_names())
    chosen = model.activation if activation is None else get_activation(activation)
    INITS[name](model, chosen)


OPTIMIZERS: dict[str, Callable[[Iterable[Tensor], float, float], torch.optim.Optimizer]] = {
    # The seed experiment's settings; Adam has no momentum argument (its betas play that role).
    # fused: one kernel for all parameters, about 3x faster per step than foreach on the CPU.
    "adam": lambda params, lr, momentum: torch.optim.Adam(
        params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, fused=True
    ),
    "sgd": lambda params, lr, momentum: torch.optim.SGD(
        params, lr=lr, momentum=momentum, foreach=True
    ),
}


def make_optimizer(
    name: str, params: Iterable[Tensor], lr: float, momentum: float = 0.0
) -> torch.optim.Optimizer:
    """Build a registered optimizer; momentum is used by sgd only."""
    if name not in OPTIMIZERS:
        raise choices_error("optimizer", name, list(OPTIMIZERS))
    check_optimizer_settings(lr, momentum)
    return OPTIMIZERS[name](params, lr, momentum)


def check_optimizer_settings(lr: float, momentum: float) -> None:
    """A learning rate and momentum any registered optimizer accepts (also `TrainConfig`'s)."""
    if not lr > 0 or not math.isfinite(lr):
        raise UsageError(f"learning rate must be a finite number > 0, got {lr!r}")
    if not 0 <= momentum < 1:
        raise UsageError(f"momentum must be >= 0 and < 1, got {momentum!r}")


def build_model(
    hidden: Sequence[int],
    activation: str,
    init: str = "default",
    options: ActivationOptions = DEFAULT_OPTIONS,
    seed: int | None = None,
) -> MLP:
    """Build and initialise an MLP; with a seed the weights are reproducible."""
    if seed is None:
        model = MLP(hidden, activation, options)
        initialize(model, init)
        return model
    # fork_rng restores the global RNG afterwards, so building a model never shifts other draws.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLP(hidden, activation, options)
        initialize(model, init)
    return model
