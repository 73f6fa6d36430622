"""The MLP, its stacked twin (K MLPs trained as one), and the registries of inits and optimizers."""

from __future__ import annotations

import contextlib
import itertools
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vanishing.errors import UsageError, brief, choices_error
from vanishing.model.activations import (
    DEFAULT_OPTIONS,
    Activation,
    ActivationOptions,
    get_activation,
    make_activation,
)

SEED_HIDDEN = (520, 320, 240, 120)  # the reference experiment's hidden widths
DEFAULT_WIDTH = 256  # for --depth without --width: wide enough that width is not the bottleneck
MAX_DEPTH = 10_000  # far beyond any depth that trains; a bound keeps (width,) * depth a list
# Far beyond any width that fits in memory (the memory check refuses those with their size); a
# bound keeps that check's arithmetic in floats and a width's digits printable.
MAX_WIDTH = 10**15


def hidden_widths(
    hidden: Sequence[int] | None = None, depth: int | None = None, width: int | None = None
) -> tuple[int, ...]:
    """The hidden widths from an explicit list, or depth x width, or the seed experiment's."""
    if hidden is not None:
        if depth is not None or width is not None:
            raise UsageError(
                "give either the hidden widths (--hidden) or --depth/--width, not both"
            )
        return check_widths(hidden)
    if depth is None and width is None:
        return SEED_HIDDEN
    # Width alone keeps the seed experiment's depth.
    depth = len(SEED_HIDDEN) if depth is None else depth
    width = DEFAULT_WIDTH if width is None else width
    check_depth(depth)
    if width < 1:
        raise UsageError(f"width must be >= 1 unit, got {brief(width)}")
    check_width(width)
    return (width,) * depth


def check_depth(depth: int) -> None:
    """A network's number of hidden layers: 1 to MAX_DEPTH."""
    if not 1 <= depth <= MAX_DEPTH:
        raise UsageError(f"depth must be 1 to {MAX_DEPTH} hidden layers, got {brief(depth)}")


def check_width(width: int) -> None:
    """A hidden width no larger than MAX_WIDTH."""
    if width > MAX_WIDTH:
        raise UsageError(f"a hidden width must be at most {MAX_WIDTH:,} units, got {brief(width)}")


def check_widths(hidden: Sequence[Any]) -> tuple[int, ...]:
    """Hidden widths, each an integer >= 1, 1 to MAX_DEPTH of them: as a tuple of ints."""
    if len(hidden) == 0:
        raise UsageError("hidden widths must not be empty; e.g. 520,320,240,120")
    for value in hidden:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise UsageError(f"every hidden width must be an integer >= 1, got {brief(value)}")
        check_width(int(value))
    check_depth(len(hidden))
    return tuple(int(value) for value in hidden)


# Normalisation layers, placed between a hidden Linear and its activation (Ioffe & Szegedy's
# placement): name -> a module for a layer of that width, or None for no layer.
NORMS: dict[str, Callable[[int], nn.Module] | None] = {
    "none": None,
    "batch": nn.BatchNorm1d,
    "layer": nn.LayerNorm,
}


def check_norm(norm: str) -> None:
    """A registered normalisation name, else a UsageError naming the choices."""
    if norm not in NORMS:
        raise choices_error("norm", norm, list(NORMS))


def check_residual(hidden: Sequence[int]) -> None:
    """Residual skips add a layer's input to its output: every hidden width must be equal."""
    if len(set(hidden)) > 1:
        raise UsageError(f"residual connections need equal hidden widths, got {tuple(hidden)}")


# How batch norm normalises in `forward_hidden`: with the batch's own statistics (the probes: the
# network as training sees it) or with the running ones (as `evaluate` sees it); neither updates
# the running statistics.
Statistics = Literal["batch", "running"]


class HiddenPass(NamedTuple):
    """What `forward_hidden` returns; lists per hidden layer, input side first, each (batch,
    width_l), or (K, batch, width_l) for a group."""

    logits: Tensor  # (batch, classes)
    pre_activations: list[Tensor]  # the activation's input: norm(W h + b), or W h + b
    post_activations: list[Tensor]  # the activation's output act(pre_activation)
    outputs: list[Tensor]  # the layer's output h_l: h_{l-1} + act(..) with a skip, else act(..)


# A group of same-shaped models trains at once with stacked weights (GroupedMLP), so the MLP
# stays plain: Linear layers in a ModuleList, activations (and norms) per layer, no hidden state
# but batch norm's running statistics.
class MLP(nn.Module):
    """784 -> hidden... -> 10, the same activation after every hidden layer; optionally a norm
    before each activation and an identity skip around every hidden layer but the first."""

    def __init__(
        self,
        hidden: Sequence[int],
        activation: str,
        options: ActivationOptions = DEFAULT_OPTIONS,
        in_features: int = 784,
        classes: int = 10,
        *,
        norm: str = "none",
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.hidden = hidden_widths(hidden)
        self.activation = get_activation(activation)
        self.options = options
        check_norm(norm)
        if residual:
            check_residual(self.hidden)
        self.norm, self.residual = norm, residual
        sizes = (in_features, *self.hidden, classes)
        self.linears = nn.ModuleList(
            nn.Linear(fan_in, fan_out) for fan_in, fan_out in zip(sizes, sizes[1:], strict=False)
        )
        # One module per layer, so PReLU learns its slopes separately in every layer.
        self.activations = nn.ModuleList(
            make_activation(activation, width, options) for width in self.hidden
        )
        # Registered after the activations, and None without a norm: a plain MLP's parameters
        # and state_dict are what they always were. Norms draw no random numbers.
        make_norm = NORMS[norm]
        self.norms = nn.ModuleList(make_norm(w) for w in self.hidden) if make_norm else None

    def linear_layers(self) -> list[nn.Linear]:
        """The Linear layers, input layer first, typed (a ModuleList's items are plain Modules)."""
        return [cast(nn.Linear, linear) for linear in self.linears]

    def normalize(self, layer: int, z: Tensor, statistics: Statistics | None = None) -> Tensor:
        """Hidden layer `layer`'s norm of z (batch, width): as the module's mode says (None), or
        for batch norm with the given statistics, the running ones left as they are."""
        if self.norms is None:
            return z
        module = self.norms[layer]
        if statistics is None or not isinstance(module, nn.BatchNorm1d):
            return module(z)  # layer norm has no statistics to choose: per sample
        if statistics == "batch":  # no running buffers: nothing to update
            return F.batch_norm(z, None, None, module.weight, module.bias, True, 0.0, module.eps)
        return F.batch_norm(
            z, module.running_mean, module.running_var, module.weight, module.bias, False, 0.0,
            module.eps,
        )  # fmt: skip

    def layer(
        self, layer: int, h: Tensor, statistics: Statistics | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Hidden layer `layer` on its input h: (activation input, activation output, output)."""
        u = self.normalize(layer, self.linears[layer](h), statistics)  # (batch, width)
        a = self.activations[layer](u)
        # The first layer projects 784 -> width: no skip around it.
        return u, a, h + a if self.residual and layer > 0 else a

    def forward(self, x: Tensor) -> Tensor:
        """Logits (batch, classes) of images (batch, 784) or (batch, 28, 28)."""
        h = x.flatten(1)
        for layer in range(len(self.hidden)):
            h = self.layer(layer, h)[2]
        return self.linears[-1](h)

    def forward_hidden(self, x: Tensor, statistics: Statistics = "batch") -> HiddenPass:
        """Logits and every hidden layer's activation input, activation output and output.

        Batch norm uses `statistics` ("batch": x's own, as in training; "running": as in
        evaluation) and never updates the running ones, whatever the module's mode: measuring
        changes no state.
        """
        h = x.flatten(1)
        pre_activations, post_activations, outputs = [], [], []
        for layer in range(len(self.hidden)):
            u, a, h = self.layer(layer, h, statistics)
            pre_activations.append(u)
            post_activations.append(a)
            outputs.append(h)
        return HiddenPass(self.linears[-1](h), pre_activations, post_activations, outputs)


# RReLU draws random slopes while training: K models drawing from one stream cannot reproduce K
# one-by-one runs (each seeded alone), so it always trains one at a time.
UNGROUPABLE = frozenset({"rrelu"})


class StackedPReLU(nn.Module):
    """PReLU for a slice of models: a learned slope per model (per unit in `unit` mode)."""

    def __init__(self, models: int, slopes: int, init: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((models, slopes), init))  # (models, 1 or width)

    def forward(self, z: Tensor) -> Tensor:
        # z is (models, batch, width); `z > 0` as in PyTorch's prelu, forward and backward.
        return torch.where(z > 0, z, self.weight.unsqueeze(1) * z)


class GroupedMLP(nn.Module):
    """K MLPs of one shape: stacked weights (K, in, out) and biases (K, out), batched products.

    Weights are stored transposed from nn.Linear's (out, in): the product and its weight gradient
    are then both contiguous (through `.mT` the gradient would need a strided copy every step,
    which cost more than the products themselves on the CPU).

    `activations` names each model's activation; equal names must be contiguous, so that a
    layer applies one module per run of equal names (a handful of calls, not K). `residual` as
    in `MLP`; a group has no norm layers (runs with one train alone).
    """

    def __init__(
        self,
        hidden: Sequence[int],
        activations: Sequence[str],
        options: ActivationOptions = DEFAULT_OPTIONS,
        in_features: int = 784,
        classes: int = 10,
        *,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.hidden = tuple(hidden)
        self.names = tuple(activations)
        self.options = options
        if residual:
            check_residual(self.hidden)
        self.residual = residual
        k = len(self.names)
        self.segments: list[tuple[str, int, int]] = []  # (activation, first model, end)
        start = 0
        for name, members in itertools.groupby(self.names):
            stop = start + len(list(members))
            self.segments.append((name, start, stop))
            start = stop
        if len({name for name, _, _ in self.segments}) != len(self.segments):
            raise ValueError(f"equal activations must be contiguous in a group: {self.names}")
        if UNGROUPABLE & set(self.names):
            raise ValueError("rrelu draws random numbers while training: train it alone")
        sizes = (in_features, *self.hidden, classes)
        pairs = list(zip(sizes, sizes[1:], strict=False))
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(k, i, o)) for i, o in pairs)
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(k, o)) for _, o in pairs)
        # activations[layer][segment]
        self.activations = nn.ModuleList(
            nn.ModuleList(
                self._activation(name, stop - start, width) for name, start, stop in self.segments
            )
            for width in self.hidden
        )

    def _activation(self, name: str, models: int, width: int) -> nn.Module:
        if name == "prelu":
            slopes = 1 if self.options.prelu_mode == "layer" else width
            return StackedPReLU(models, slopes, self.options.prelu_init)
        return make_activation(name, width, self.options)  # stateless: one serves every model

    def __len__(self) -> int:
        return len(self.names)

    def layer_activations(self, layer: int) -> nn.ModuleList:
        """The activation modules of hidden layer `layer`, one per segment."""
        return cast(nn.ModuleList, self.activations[layer])  # a ModuleList of ModuleLists

    @classmethod
    def from_models(cls, models: Sequence[MLP]) -> GroupedMLP:
        """Stack existing models' parameters (copied) into one group."""
        first = models[0]
        if any(m.norms is not None for m in models):
            raise ValueError("a group has no norm layers: train models with a norm alone")
        linears = first.linear_layers()
        group = cls(
            first.hidden,
            [m.activation.name for m in models],
            first.options,
            linears[0].in_features,
            linears[-1].out_features,
            residual=first.residual,
        )
        with torch.no_grad():
            stacked = group.stack([list(m.parameters()) for m in models])
            for parameter, value in zip(group.parameters(), stacked, strict=True):
                parameter.copy_(value)
        return group.to(linears[0].weight.device)

    def _prelu_models(self) -> range:
        """The models with PReLU (at most one segment: equal names are contiguous)."""
        return next((range(a, b) for name, a, b in self.segments if name == "prelu"), range(0))

    def unstack(self, tensors: Sequence[Tensor], k: int) -> list[Tensor]:
        """Model k's slices (views) of tensors shaped like `self.parameters()` (the parameters,
        their gradients or optimizer state), in `MLP.parameters()` order and nn.Linear's (out, in)
        layout. A 0-d tensor (an optimizer's step count) is one for all K models: passed as is.
        """
        layers, prelu = len(self.weights), self._prelu_models()
        assert len(tensors) == 2 * layers + len(self.hidden) * (len(prelu) > 0)  # noqa: S101 an internal invariant

        def part(tensor: Tensor, index: int, transpose: bool = False) -> Tensor:
            if tensor.dim() == 0:
                return tensor
            return tensor[index].T if transpose else tensor[index]

        own = []
        for layer in range(layers):  # MLP order: linears (weight, bias), then activations
            own += [part(tensors[layer], k, transpose=True), part(tensors[layers + layer], k)]
        if k in prelu:
            own += [part(slopes, k - prelu.start) for slopes in tensors[2 * layers :]]
        return own

    def stack(self, per_model: Sequence[Sequence[Tensor]]) -> list[Tensor]:
        """The inverse of `unstack`: from every model's tensors (in `MLP.parameters()` order),
        new tensors shaped like `self.parameters()`. Of 0-d tensors the first model's is taken."""
        layers, prelu = len(self.weights), self._prelu_models()
        assert len(per_model) == len(self)  # noqa: S101 an internal invariant

        def join(index: int, models: Sequence[int], transpose: bool = False) -> Tensor:
            parts = [per_model[k][index] for k in models]
            if parts[0].dim() == 0:
                return parts[0].clone()
            return torch.stack([p.T for p in parts] if transpose else parts)

        every = range(len(self))
        stacked = [join(2 * layer, every, transpose=True) for layer in range(layers)]
        stacked += [join(2 * layer + 1, every) for layer in range(layers)]
        if prelu:
            stacked += [join(2 * layers + layer, prelu) for layer in range(len(self.hidden))]
        return stacked

    def model(self, k: int) -> MLP:
        """Model k as a plain MLP (a copy, on the group's device); the global RNG is left as it
        was (the new MLP's own random init, overwritten here, draws from a forked one)."""
        in_features, classes = self.weights[0].shape[1], self.weights[-1].shape[2]
        with torch.random.fork_rng(devices=[]):
            model = MLP(
                self.hidden, self.names[k], self.options, in_features, classes,
                residual=self.residual,
            )  # fmt: skip
        model.to(self.weights[0].device)
        with torch.no_grad():
            own = self.unstack(list(self.parameters()), k)
            for parameter, value in zip(model.parameters(), own, strict=True):
                parameter.copy_(value)
        return model

    def activate(self, layer: int, z: Tensor) -> Tensor:
        """Each model's activation on its slice of z (K, batch, width)."""
        modules = self.layer_activations(layer)
        if len(self.segments) == 1:
            return modules[0](z)
        parts = [
            m(z[start:stop]) for m, (_, start, stop) in zip(modules, self.segments, strict=True)
        ]
        return torch.cat(parts)

    def parameter_models(self) -> list[range]:
        """For each of `self.parameters()`, the models its rows (its first dimension) belong to:
        every model for the stacked weights and biases, its segment's for a StackedPReLU."""
        owners = [range(len(self))] * (2 * len(self.weights))
        prelu = self._prelu_models()
        return owners + [prelu] * (len(self.hidden) if prelu else 0)

    def layer(self, layer: int, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Hidden layer `layer` of every model on h (K, batch, in): `MLP.layer`'s three."""
        # (K, batch, in) @ (K, in, out) + (K, 1, out): nn.Linear per model, in one call.
        z = torch.baddbmm(self.biases[layer].unsqueeze(1), h, self.weights[layer])
        a = self.activate(layer, z)
        return z, a, h + a if self.residual and layer > 0 else a

    def forward_hidden(self, x: Tensor) -> HiddenPass:
        """`MLP.forward_hidden` per model: logits (K, batch, classes), lists of (K, batch, w)."""
        h = x
        pre_activations, post_activations, outputs = [], [], []
        for layer in range(len(self.hidden)):
            z, a, h = self.layer(layer, h)
            pre_activations.append(z)
            post_activations.append(a)
            outputs.append(h)
        logits = torch.baddbmm(self.biases[-1].unsqueeze(1), h, self.weights[-1])
        return HiddenPass(logits, pre_activations, post_activations, outputs)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (K, batch, classes) of inputs (K, batch, 784), model k on x[k]."""
        h = x
        for layer in range(len(self.hidden)):
            h = self.layer(layer, h)[2]
        return torch.baddbmm(self.biases[-1].unsqueeze(1), h, self.weights[-1])


def _init_default(model: MLP, activation: Activation) -> None:
    # Re-draw by PyTorch's own rule: U(+-1/sqrt(fan_in)) for weights and biases.
    for linear in model.linear_layers():
        linear.reset_parameters()


def _init_weights(rule: Callable[[Tensor], object]) -> Callable[[MLP, Activation], None]:
    """An init scheme that applies `rule` to every Linear weight and zeroes the biases."""

    def init(model: MLP, activation: Activation) -> None:
        for linear in model.linear_layers():
            rule(linear.weight)
            nn.init.zeros_(linear.bias)

    return init


def _init_kaiming(model: MLP, activation: Activation) -> None:
    # He et al.'s gain sqrt(2 / (1 + a^2)) uses the slope a of the negative side.
    nonlinearity: Literal["leaky_relu", "relu"]
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
    # IRNN's recurrent weight (Le, Jaitly and Hinton 2015); config allows it for --arch rnn only.
    "identity": _init_weights(nn.init.eye_),
}
INIT_ALIASES = {"xavier": "xavier_uniform", "he": "kaiming"}


def init_names() -> list[str]:
    """Every accepted init name, aliases included."""
    return [*INITS, *INIT_ALIASES]


def initialize(model: MLP, init: str, activation: str | None = None, gain: float = 1.0) -> None:
    """Re-initialise the model's Linear layers in place; activation defaults to the model's.

    `gain` multiplies every Linear weight (the output layer's too) after the init's draw, so the
    weights' standard deviation is `gain` times the init's; biases and norm layers keep theirs.
    """
    name = INIT_ALIASES.get(init, init)
    if name not in INITS:
        raise choices_error("init", init, init_names())
    chosen = model.activation if activation is None else get_activation(activation)
    INITS[name](model, chosen)
    if gain != 1:  # a gain of 1 leaves the draws as they were, bit for bit
        with torch.no_grad():
            for linear in model.linear_layers():
                linear.weight.mul_(gain)


@dataclass(frozen=True)
class Optimizer:
    """A registered optimizer: how to make it, what it keeps and how its step relates to the
    gradient (what the verdicts say of a small gradient)."""

    label: str  # as sentences name it
    make: Callable[[Iterable[Tensor], float, float], torch.optim.Optimizer]  # (params, lr, mom.)
    state: int  # values kept per parameter (sgd: its momentum buffer, kept with momentum only)
    # Whether it divides each weight's step by the running size of that weight's own gradient
    # (Adam, RMSprop): a layer whose gradient is 1,000x smaller then still takes steps of about
    # the learning rate. SGD's step is the learning rate times the gradient (with momentum, a
    # running sum of them): a 1,000x smaller gradient, a 1,000x smaller step.
    rescales: bool


OPTIMIZERS: dict[str, Optimizer] = {
    # The seed experiment's settings; Adam has no momentum argument (its betas play that role).
    # fused: one kernel for all parameters, about 3x faster per step than foreach on the CPU.
    "adam": Optimizer(
        "Adam",
        lambda params, lr, momentum: torch.optim.Adam(
            params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, fused=True
        ),
        state=2,
        rescales=True,
    ),
    "sgd": Optimizer(
        "SGD",
        lambda params, lr, momentum: torch.optim.SGD(
            params, lr=lr, momentum=momentum, foreach=True
        ),
        state=1,
        rescales=False,
    ),
    # Each weight's step divided by the running size of its own gradient, as Adam's is, without
    # Adam's momentum and bias correction (PyTorch's and Keras's defaults).
    "rmsprop": Optimizer(
        "RMSprop",
        lambda params, lr, momentum: torch.optim.RMSprop(
            params, lr=lr, alpha=0.99, eps=1e-8, foreach=True
        ),
        state=1,
        rescales=True,
    ),
    # Adam with decoupled weight decay (Loshchilov & Hutter 2019), at PyTorch's default 0.01.
    "adamw": Optimizer(
        "AdamW",
        lambda params, lr, momentum: torch.optim.AdamW(
            params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, fused=True
        ),
        state=2,
        rescales=True,
    ),
}


def make_optimizer(
    name: str, params: Iterable[Tensor], lr: float, momentum: float = 0.0
) -> torch.optim.Optimizer:
    """Build a registered optimizer; momentum is used by sgd only."""
    if name not in OPTIMIZERS:
        raise choices_error("optimizer", name, list(OPTIMIZERS))
    check_optimizer_settings(lr, momentum)
    return OPTIMIZERS[name].make(params, lr, momentum)


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
    *,
    norm: str = "none",
    residual: bool = False,
    init_gain: float = 1.0,
) -> MLP:
    """Build and initialise an MLP (`MLP`'s norm and residual, `initialize`'s gain); with a seed
    the weights are reproducible."""
    # fork_rng restores the global RNG afterwards, so building a model never shifts other draws.
    with contextlib.nullcontext() if seed is None else torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = MLP(hidden, activation, options, norm=norm, residual=residual)
        initialize(model, init, gain=init_gain)
    return model
