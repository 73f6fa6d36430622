"""Recurrent networks: stacked RNN, LSTM or GRU layers, one module per layer so that each layer's
output sequence is visible, and a Linear head on the last step's output.

A tanh or relu RNN, an LSTM and a GRU are PyTorch's own modules (its fused kernels); an RNN with
any other activation of the registry is `LoopRNN`, the same recurrence written out as a loop.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vanishing.errors import choices_error
from vanishing.model.activations import DEFAULT_OPTIONS, ActivationOptions, make_activation
from vanishing.model.mlp import INIT_ALIASES, INITS, _lecun_normal

ARCHS = ("mlp", "rnn", "lstm", "gru")  # "mlp": model.mlp's MLP; the rest are recurrent
RECURRENT = ARCHS[1:]
GATED = ("lstm", "gru")  # cells with their own tanh and sigmoid gates
NATIVE = ("tanh", "relu")  # the activations nn.RNN takes; any other is a LoopRNN
RECURRENT_HIDDEN = (128,)  # one layer of 128 units: Le et al.'s and Arjovsky et al.'s size
GATES = {"rnn": 1, "lstm": 4, "gru": 3}  # blocks of hidden_size rows in W_ih and W_hh
IRNN_INPUT_STD = 1e-3  # Le, Jaitly and Hinton 2015: W_ih ~ N(0, 0.001^2), W_hh = I, biases 0


RECURRENT_PROBE_SIZE = 128  # sequences in a recurrent network's probe batch (see arch_defaults)


def arch_defaults(arch: str) -> dict[str, object]:
    """The settings whose default depends on the network (where none is given): a recurrent
    network's activation is tanh (nn.RNN's own; an LSTM's and GRU's cells), it has one layer
    of RECURRENT_HIDDEN units, and its probe batch is RECURRENT_PROBE_SIZE sequences: the probe
    unrolls every step and keeps each step's values, so 512 pixel sequences would cost an
    LSTM's probe 5.6 GB and a twentieth of its training time."""
    if arch not in RECURRENT:
        return {}
    return {
        "activation": "tanh",
        "hidden": RECURRENT_HIDDEN,
        "probe_size": RECURRENT_PROBE_SIZE,
    }


class LoopRNN(nn.Module):
    """nn.RNN's recurrence h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), written out as a loop
    for an activation f that nn.RNN does not take; nn.RNN's parameter names, init and call
    (batch_first, one layer): `module(input, hx) -> (output, h_n)`."""

    num_layers = 1
    batch_first = True
    bidirectional = False
    bias = True

    def __init__(self, input_size: int, hidden_size: int, activation: nn.Module) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(hidden_size))
        self.bias_hh_l0 = nn.Parameter(torch.empty(hidden_size))
        self.activation = activation
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.hidden_size)  # nn.RNN's U(-1/sqrt(H), 1/sqrt(H))
        for weight in (self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0):
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # input (batch, T, features); hx (1, batch, hidden)
        h = input.new_zeros(len(input), self.hidden_size) if hx is None else hx[0]
        driven = F.linear(input, self.weight_ih_l0, self.bias_ih_l0)  # (batch, T, hidden)
        outputs = []
        for t in range(input.shape[1]):
            h = self.activation(driven[:, t] + F.linear(h, self.weight_hh_l0, self.bias_hh_l0))
            outputs.append(h)
        return torch.stack(outputs, dim=1), h[None]


def recurrent_layer(
    arch: str, input_size: int, hidden_size: int, activation: str, options: ActivationOptions
) -> nn.Module:
    """One recurrent layer of `arch` (batch first): PyTorch's module where it has one."""
    if arch == "lstm":
        return nn.LSTM(input_size, hidden_size, batch_first=True)
    if arch == "gru":
        return nn.GRU(input_size, hidden_size, batch_first=True)
    if activation in NATIVE:
        return nn.RNN(input_size, hidden_size, nonlinearity=activation, batch_first=True)
    return LoopRNN(input_size, hidden_size, make_activation(activation, hidden_size, options))


class RecurrentNet(nn.Module):
    """Stacked recurrent layers of the hidden widths, input side first, and a Linear head on
    the last step: (batch, T, features) -> (batch, outputs)."""

    def __init__(
        self,
        arch: str,
        hidden: Sequence[int],
        activation: str,
        input_size: int,
        outputs: int,
        options: ActivationOptions = DEFAULT_OPTIONS,
    ) -> None:
        super().__init__()
        if arch not in RECURRENT:
            raise choices_error("arch", arch, RECURRENT)
        self.arch, self.activation_name, self.options = arch, activation, options
        sizes = [input_size, *hidden]
        self.layers = nn.ModuleList(
            recurrent_layer(arch, size, width, activation, options)
            for size, width in zip(sizes, hidden, strict=False)
        )
        self.head = nn.Linear(sizes[-1], outputs)

    def forward(
        self, x: Tensor, run: Callable[[nn.Module, Tensor], Tensor] | None = None
    ) -> Tensor:
        """(batch, T, features) -> (batch, outputs); `run(layer, h)`, when given, computes
        each layer's output sequence in place of the layer's own call (the probe's unroll)."""
        h = x
        for layer in self.layers:
            h = layer(h)[0] if run is None else run(layer, h)  # (batch, T, width)
        return self.head(h[:, -1])  # (batch, outputs)

    def layer_weights(self) -> list[list[Tensor]]:
        """The weights of each weighted layer, input side first: a recurrent layer's W_ih and
        W_hh, then the head's weight (a layer's gradient and update are measured over its
        weights together, as an MLP's over its Linear weight)."""
        return [list(weights_of(layer)[:2]) for layer in self.layers] + [[self.head.weight]]


def weights_of(layer: nn.Module) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A single-layer recurrent module's W_ih, W_hh, b_ih and b_hh (nn.RNN's names)."""
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    return cast(tuple[Tensor, Tensor, Tensor, Tensor], tuple(getattr(layer, n) for n in names))


def _blocks(weight: Tensor, arch: str) -> tuple[Tensor, ...]:
    """A stacked weight's gate blocks (views), each (hidden, fan_in)."""
    return weight.data.chunk(GATES[arch], dim=0)


def _kaiming_rule(model: RecurrentNet) -> Callable[[Tensor], object]:
    slope = {"leaky_relu": model.options.negative_slope, "prelu": model.options.prelu_init}
    a = slope.get(model.activation_name, 0.0)
    return lambda weight: nn.init.kaiming_normal_(weight, a=a, nonlinearity="leaky_relu")


def initialize(
    model: RecurrentNet, init: str, gain: float = 1.0, forget_bias: float | None = None
) -> None:
    """Re-initialise a recurrent network in place by the init registry's name (`mlp.INITS`).

    "default" keeps PyTorch's own init; "identity" is IRNN's (W_hh = I, W_ih ~ N(0, 1e-6),
    biases 0); "orthogonal" draws each gate's block of W_hh orthogonal (W_ih keeps PyTorch's);
    the other rules draw every gate block of W_ih and W_hh and the head's weight, biases 0.
    `gain` multiplies the recurrent weights W_hh (the factor each step multiplies the gradient
    by), `forget_bias` sets an LSTM's forget-gate bias (b_ih's, with b_hh's zero)."""
    name = INIT_ALIASES.get(init, init)
    if name not in INITS:
        raise choices_error("init", init, [*INITS, *INIT_ALIASES])
    rules: dict[str, Callable[[Tensor], object]] = {
        "xavier_uniform": nn.init.xavier_uniform_,
        "xavier_normal": nn.init.xavier_normal_,
        "kaiming": _kaiming_rule(model),
        "lecun": _lecun_normal,
    }
    with torch.no_grad():
        for layer in model.layers:
            weight_ih, weight_hh, bias_ih, bias_hh = weights_of(layer)
            if name == "identity":
                nn.init.normal_(weight_ih, 0.0, IRNN_INPUT_STD)
                for block in _blocks(weight_hh, model.arch):
                    nn.init.eye_(block)
            elif name == "orthogonal":
                for block in _blocks(weight_hh, model.arch):
                    nn.init.orthogonal_(block)
            elif name in rules:
                for weight in (weight_ih, weight_hh):
                    for block in _blocks(weight, model.arch):
                        rules[name](block)
            if name != "default":
                bias_ih.zero_()
                bias_hh.zero_()
            if gain != 1:  # a gain of 1 leaves the draws as they were, bit for bit
                weight_hh.mul_(gain)
            if forget_bias is not None:  # LSTM gates i, f, g, o: the second block
                size = weight_hh.shape[1]
                bias_ih[size : 2 * size] = forget_bias
                bias_hh[size : 2 * size] = 0.0
        if name in rules:
            rules[name](model.head.weight)
            model.head.bias.zero_()


def build_recurrent(
    arch: str,
    hidden: Sequence[int],
    activation: str,
    input_size: int,
    outputs: int,
    init: str = "default",
    options: ActivationOptions = DEFAULT_OPTIONS,
    seed: int | None = None,
    *,
    init_gain: float = 1.0,
    forget_bias: float | None = None,
) -> RecurrentNet:
    """Build and initialise a recurrent network; with a seed the weights are reproducible."""
    with contextlib.nullcontext() if seed is None else torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = RecurrentNet(arch, hidden, activation, input_size, outputs, options)
        initialize(model, init, init_gain, forget_bias)
    return model
