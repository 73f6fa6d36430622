"""Gradients through time: a recurrent module unrolled step by step with its own parameters.

`unroll(module, input, hx)` computes what `module(input, hx)` does (nn.RNN, nn.LSTM, nn.GRU of
any depth, batch first or not, with or without biases, and the trainer's `LoopRNN`), but one
step at a time, so that every hidden state h_t is a tensor of the autograd graph:
`torch.autograd.grad(loss, steps.hidden)` is then the TOTAL derivative dLoss/dh_t, through the
recurrence and through the layer's output alike, as PyTorch's fused kernels never show it. Gates
are PyTorch's, in its order: LSTM i, f, g, o (c_t = f c_{t-1} + i g, h_t = o tanh(c_t)); GRU r,
z, n (n = tanh(W_in x + b_in + r (W_hn h + b_hn)), h_t = (1 - z) n + z h_{t-1}). Inter-layer
dropout is left out (the module as in eval mode, and no random number drawn). What `unroll`
cannot measure (a PackedSequence, a bidirectional module, an LSTM with proj_size) is None.

`time_probe` turns the unrolled layers and their gradients into a probe row's keys
(`time_signal_norms`, `time_layers`, `gates`, `gates_saturated`, `recurrent_norms`), read back
from the device at once.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence

from vanishing.model.activations import (
    DEFAULT_OPTIONS,
    SATURATION_FRACTION,
    Activation,
    saturated_mask,
)
from vanishing.model.recurrent import LoopRNN

# The gates a probe row names, per cell, in the order the rows list them: an LSTM's sigmoid
# gates (its cell candidate g is a tanh, not a gate), a GRU's reset and update gates.
GATE_NAMES: dict[str, tuple[str, ...]] = {
    "rnn": (),
    "lstm": ("input", "forget", "output"),
    "gru": ("reset", "update"),
}
# A gate below 0.05 is shut, above 0.95 open: it passes (or keeps) almost nothing or almost
# everything, whatever its input does, and its own slope is under a fifth of its maximum.
GATE_SATURATION = 0.05
# Steps of a long sequence that a layer's statistics of values (saturation, histograms, dead
# units) are taken on, evenly spaced, the last among them: over 784 steps they cost a probe
# more than its gradients, and 64 steps estimate a share as well.
STAT_STEPS = 64


def stride_of(steps: int) -> int:
    """Every how many steps the statistics of values are taken (`STAT_STEPS`): 1 up to 64."""
    return -(-steps // STAT_STEPS)


@dataclass
class Steps:
    """One stacked layer unrolled: its hidden states h_t (t = 1..T, each (batch, hidden), in
    the graph), its gates' values per step, and what its saturation is judged on."""

    kind: str  # "rnn", "lstm" or "gru"
    weight_hh: Tensor  # W_hh (gates stacked: (gates * hidden, hidden))
    hidden: list[Tensor] = field(default_factory=list)
    gates: dict[str, list[Tensor]] = field(default_factory=dict)  # name -> T x (batch, hidden)
    # A gated cell's tanh values (the candidate g or n, an LSTM's tanh(c_t)), T x (batch, hidden)
    tanh: list[Tensor] = field(default_factory=list)
    # A plain RNN's activation input z_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh, per step
    pre: list[Tensor] = field(default_factory=list)
    activation: nn.Module | None = None  # a LoopRNN's own activation module
    cell: Tensor | None = None  # an LSTM's c_T
    stacked: dict[int, dict[str, Tensor]] = field(default_factory=dict, repr=False)

    def gate_values(self, stride: int = 1) -> dict[str, Tensor]:
        """Each gate's values over every stride-th step (the last among them), (steps, batch,
        hidden), out of the graph (stacked once per stride, for every statistic of the
        gates)."""
        if stride not in self.stacked:
            self.stacked[stride] = {
                name: torch.stack(values[stride - 1 :: stride]).detach()
                for name, values in self.gates.items()
            }
        return self.stacked[stride]


@dataclass
class Unrolled:
    """What `module(input, hx)` returns, computed step by step, and each stacked layer's steps."""

    output: Tensor
    state: Tensor | tuple[Tensor, Tensor]  # h_n, or an LSTM's (h_n, c_n)
    layers: list[Steps]


def kind_of(module: nn.Module) -> str | None:
    """ "lstm", "gru" or "rnn" for a module `unroll` knows, None for any other."""
    if isinstance(module, nn.LSTM):
        return "lstm"
    if isinstance(module, nn.GRU):
        return "gru"
    if isinstance(module, (nn.RNN, LoopRNN)):
        return "rnn"
    return None


def measurable(module: nn.Module, input: Any) -> bool:
    """Whether `unroll` computes this call: a known module, one direction, no projection, a
    plain (not packed) tensor of 2 (unbatched) or 3 dimensions."""
    return (
        kind_of(module) is not None
        and not getattr(module, "bidirectional", False)
        and not getattr(module, "proj_size", 0)
        and isinstance(input, Tensor)
        and not isinstance(input, PackedSequence)
        and input.dim() in (2, 3)
    )


def unroll(module: nn.Module, input: Any, hx: Any = None) -> Unrolled | None:
    """`module(input, hx)` step by step (see the module's docstring); None when the call is
    not one it can measure (`measurable`), never an error."""
    kind = kind_of(module)
    if kind is None or not measurable(module, input):
        return None
    batch_first = bool(getattr(module, "batch_first", False))
    unbatched = input.dim() == 2
    x = input.unsqueeze(0 if batch_first else 1) if unbatched else input
    if batch_first:
        x = x.transpose(0, 1)  # (T, batch, features)
    layers = int(getattr(module, "num_layers", 1))
    size = int(getattr(module, "hidden_size"))  # noqa: B009 (a Module attribute, typed Any)
    h0, c0 = initial_state(kind, hx, unbatched, layers, x.shape[1], size, x)
    found = []
    last_h, last_c = [], []
    for layer in range(layers):
        steps = unroll_layer(
            module, kind, layer, x, h0[layer], c0[layer] if c0 is not None else None
        )
        found.append(steps)
        x = torch.stack(steps.hidden)  # (T, batch, hidden): the next layer's input
        last_h.append(steps.hidden[-1])
        if kind == "lstm":
            last_c.append(cast(Tensor, steps.cell))
    output = x.transpose(0, 1) if batch_first else x
    h_n = torch.stack(last_h)  # (layers, batch, hidden)
    c_n = torch.stack(last_c) if kind == "lstm" else None
    if unbatched:
        output = output.squeeze(0 if batch_first else 1)
        h_n = h_n.squeeze(1)
        c_n = c_n.squeeze(1) if c_n is not None else None
    state: Tensor | tuple[Tensor, Tensor] = (h_n, c_n) if c_n is not None else h_n
    return Unrolled(output, state, found)


def initial_state(
    kind: str, hx: Any, unbatched: bool, layers: int, batch: int, size: int, like: Tensor
) -> tuple[Tensor, Tensor | None]:
    """h_0 and (an LSTM's) c_0 as (layers, batch, hidden): the given ones, else zeros."""
    zeros = like.new_zeros(layers, batch, size)
    if hx is None:
        return zeros, zeros if kind == "lstm" else None
    h, c = hx if kind == "lstm" else (hx, None)
    if unbatched:
        h = h.unsqueeze(1)
        c = c.unsqueeze(1) if c is not None else None
    return h, c


def unroll_layer(
    module: nn.Module, kind: str, layer: int, x: Tensor, h: Tensor, c: Tensor | None
) -> Steps:
    """One stacked layer over x (T, batch, features) from h (and c): its `Steps`."""
    w_ih = getattr(module, f"weight_ih_l{layer}")
    w_hh = getattr(module, f"weight_hh_l{layer}")
    biased = bool(getattr(module, "bias", True))
    b_ih = getattr(module, f"bias_ih_l{layer}") if biased else None
    b_hh = getattr(module, f"bias_hh_l{layer}") if biased else None
    # Every step's input at once, (batch, gates * hidden) per step; unbound (not indexed per
    # step, whose backward would write a whole (T, ...) tensor of zeros at every step).
    driven = F.linear(x, w_ih, b_ih).unbind(0)
    if kind == "lstm":
        steps = Steps(kind, w_hh, gates={name: [] for name in GATE_NAMES[kind]})
        c = c if c is not None else torch.zeros_like(h)
        for t in range(len(driven)):
            i, f, g, o = (driven[t] + F.linear(h, w_hh, b_hh)).chunk(4, dim=1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            c = f * c + i * g
            squashed = torch.tanh(c)
            h = o * squashed
            steps.hidden.append(h)
            for name, value in zip(GATE_NAMES[kind], (i, f, o), strict=True):
                steps.gates[name].append(value)
            steps.tanh += [g, squashed]
        steps.cell = c
        return steps
    if kind == "gru":
        steps = Steps(kind, w_hh, gates={name: [] for name in GATE_NAMES[kind]})
        for t in range(len(driven)):
            x_r, x_z, x_n = driven[t].chunk(3, dim=1)
            h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, dim=1)
            r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
            h = (1 - z) * n + z * h
            steps.hidden.append(h)
            steps.gates["reset"].append(r)
            steps.gates["update"].append(z)
            steps.tanh.append(n)
        return steps
    activation = getattr(module, "activation", None) if isinstance(module, LoopRNN) else None
    nonlinearity = getattr(module, "nonlinearity", "tanh")
    act = (
        activation
        if activation is not None
        else (torch.relu if nonlinearity == "relu" else torch.tanh)
    )
    steps = Steps(kind, w_hh, activation=activation)
    for t in range(len(driven)):
        z = driven[t] + F.linear(h, w_hh, b_hh)
        h = act(z)
        steps.pre.append(z)
        steps.hidden.append(h)
    return steps


@contextlib.contextmanager
def unrolling(modules: Sequence[nn.Module]) -> Iterator[dict[nn.Module, Unrolled]]:
    """While open, each of `modules` returns its `unroll` in place of its own output (a forward
    hook's replacement), so a model's own forward runs with every h_t in the graph; the dict
    holds each module's last unrolled call. A call `unroll` cannot measure runs as it would."""
    found: dict[nn.Module, Unrolled] = {}

    def hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> Any:
        input, hx = call_arguments(args, kwargs)
        unrolled = unroll(module, input, hx)
        if unrolled is None:
            return None
        found[module] = unrolled
        return unrolled.output, unrolled.state

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in modules]
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()


def call_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """The (input, hx) of a recurrent module's call, given by position or by name."""
    input = args[0] if args else kwargs.get("input")
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    return input, hx


def step_norms(grads: Sequence[Tensor | None], steps: Steps) -> Tensor:
    """||dLoss/dh_t|| for t = 1..T (T,): each step's Frobenius norm over batch x hidden, 0
    where no gradient reached h_t."""
    values = [
        g if g is not None else torch.zeros_like(h)
        for g, h in zip(grads, steps.hidden, strict=True)
    ]
    stacked = torch.stack(values).detach()
    # In float64: a norm squares its values, and float32 squares of a gradient under 1e-19
    # underflow to 0, so a norm would read 0 where the gradient is not (MPS has no float64).
    wide = torch.float32 if stacked.device.type == "mps" else torch.float64
    return stacked.to(wide).flatten(1).norm(dim=1)


def gate_means(steps: Steps) -> Tensor:
    """Each gate's mean value over batch, steps and units (gates,), in GATE_NAMES order."""
    # Per step, then over the steps: no copy of every step's values (784 of them per gate).
    means = [
        torch.stack([value.detach().float().mean() for value in values]).mean()
        for values in steps.gates.values()
    ]
    return torch.stack(means) if means else steps.weight_hh.new_zeros(0, dtype=torch.float)


def gate_saturation(steps: Steps, edge: float = GATE_SATURATION, stride: int = 1) -> Tensor:
    """Each gate's share of values below `edge` or above 1 - `edge` (gates,): shut or open;
    with `stride`, over every stride-th step only."""
    shares = []
    for values in steps.gate_values(stride).values():
        shares.append(((values < edge) | (values > 1 - edge)).float().mean())
    return torch.stack(shares) if shares else steps.weight_hh.new_zeros(0, dtype=torch.float)


def recurrent_norm(steps: Steps) -> Tensor:
    """The spectral norm (largest singular value) of the layer's W_hh, gates stacked; 0-d."""
    return torch.linalg.matrix_norm(steps.weight_hh.detach().float(), ord=2)


def saturated_share(steps: Steps, activation: Activation, stride: int = 1) -> Tensor:
    """The share of a layer's nonlinearity values whose slope is under SATURATION_FRACTION of
    its maximum, over batch, steps and units (0-d). A plain RNN: its activation's, judged on
    its input z_t (`activations.saturated_mask`, the registry's `activation` or a LoopRNN's own
    module). An LSTM or GRU: every sigmoid gate's value s (slope s (1 - s), at most 1/4) and
    every tanh value y of the cell (slope 1 - y^2: the candidate, and an LSTM's tanh(c_t)).
    With `stride`, over every stride-th step only (a long sequence's share, at a fraction of
    the cost)."""
    if steps.kind == "rnn":
        pre = torch.stack(steps.pre[stride - 1 :: stride]).detach()
        module = steps.activation
        if module is None:
            module = activation.build(int(pre.shape[-1]), DEFAULT_OPTIONS)
        was_training = module.training
        module.train(False)  # RReLU's mean slope
        try:
            return saturated_mask(activation, module, pre).float().mean()
        finally:
            module.train(was_training)
    count = torch.zeros((), device=steps.weight_hh.device)
    total = 0
    for values in steps.gate_values(stride).values():
        s = values.float()
        count = count + (s * (1 - s) < SATURATION_FRACTION * 0.25).sum()
        total += s.numel()
    y = torch.stack(steps.tanh[stride - 1 :: stride]).detach().float()
    count = count + (1 - y * y < SATURATION_FRACTION).sum()
    return count / (total + y.numel())


def layer_names(name: str, module: nn.Module) -> list[str]:
    """The time profile's names of a module's stacked layers: "lstm.l0", "lstm.l1"; a
    single-layer module is its own name."""
    layers = int(getattr(module, "num_layers", 1))
    return [name] if layers == 1 else [f"{name}.l{k}" for k in range(layers)]


def through_time(unrolled: Unrolled, grads: Sequence[Tensor | None]) -> list[list[Tensor | None]]:
    """Per stacked layer, dLoss/dh_t for every step, from the gradients the loss gave the
    module's own returns (output, h_n and an LSTM's c_n, None where it gave none): passed back
    through the unrolled copy, which computes the same function. Empty when none arrived."""
    state = unrolled.state if isinstance(unrolled.state, tuple) else (unrolled.state,)
    pairs = [
        (tensor, grad)
        for tensor, grad in zip((unrolled.output, *state), grads, strict=False)
        if grad is not None and tensor.requires_grad
    ]
    hidden = [h for steps in unrolled.layers for h in steps.hidden]
    if not pairs or not all(h.requires_grad for h in hidden):
        return []
    found = torch.autograd.grad(
        [tensor for tensor, _ in pairs],
        hidden,
        [grad.to(tensor.dtype) for tensor, grad in pairs],
        allow_unused=True,
    )
    result: list[list[Tensor | None]] = []
    start = 0
    for steps in unrolled.layers:
        result.append(list(found[start : start + len(steps.hidden)]))
        start += len(steps.hidden)
    return result


def time_probe(
    names: Sequence[str], layers: Sequence[Steps], grads: Sequence[Sequence[Tensor | None]]
) -> dict[str, Any]:
    """A probe row's keys through time for recurrent layers (`names`, their `Steps` and each
    step's dLoss/dh_t): `time_signal_norms` (layers x T), `time_layers`, `gates` and
    `gates_saturated` (a dict per layer), `recurrent_norms`; read back from the device at once."""
    if not layers:
        return {}
    device = layers[0].weight_hh.device
    parts = []
    for steps, layer_grads in zip(layers, grads, strict=True):
        parts += [
            step_norms(layer_grads, steps),
            gate_means(steps),
            gate_saturation(steps, stride=stride_of(len(steps.hidden))),
            recurrent_norm(steps)[None],
        ]
    dtype = functools.reduce(torch.promote_types, [part.dtype for part in parts])
    values = torch.cat([part.to(device, dtype) for part in parts]).tolist()  # one read-back
    norms, means, saturated, spectral = [], [], [], []
    start = 0
    for steps in layers:
        gates = GATE_NAMES[steps.kind]
        cut = [len(steps.hidden), len(gates), len(gates), 1]
        pieces = []
        for size in cut:
            pieces.append(values[start : start + size])
            start += size
        norms.append(pieces[0])
        means.append(dict(zip(gates, pieces[1], strict=True)))
        saturated.append(dict(zip(gates, pieces[2], strict=True)))
        spectral.append(pieces[3][0])
    return {
        "time_signal_norms": norms,
        "time_layers": list(names),
        "gates": means,
        "gates_saturated": saturated,
        "recurrent_norms": spectral,
    }
