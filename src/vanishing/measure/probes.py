"""Measurements of gradient flow, saturation and dead units, taken on a fixed probe batch.

Every probe returns plain Python numbers (one read-back from the device per probe point), so
training can write them straight into `metrics.jsonl`. Lists are per layer, input layer first.
The `*_group` functions measure every model of a `model.GroupedMLP` at once, each model on its
own slice: the same numbers as the single-model functions, per model.

Where a layer has a norm and a skip (`MLP.forward_hidden`): saturation is judged on the
activation's input (after the norm), dead units on the activation's output (a residual stream is
not zero when its unit is dead), and the signal and activation statistics (and histogram) are of
the layer's output h_l (the residual stream). No probe changes any state of the model: batch
norm's running statistics and its batch count are left as they were.

What each measurement means, in the words the report quotes, is `vanishing.measure.definitions`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor
from torch.nn import functional as F

from vanishing.measure import time as through_time
from vanishing.model.activations import Activation, get_activation, saturated_mask
from vanishing.model.mlp import MLP, GroupedMLP, StackedPReLU
from vanishing.model.recurrent import RecurrentNet

# A few dozen: enough for a shape (a saturation peak, a spike of zeros) at a probe batch's
# 512 x width values, few enough that a probe row of metrics.jsonl stays a few kB.
HISTOGRAM_BINS = 32
# Per-layer scalars read back beside the histogram: signal, mean, std, saturated, dead, spread.
STATS = 6

DEAD_CHUNK = 8192  # training rows per pass of the dead-unit count


def measure(model: MLP, activation: Activation, x: Tensor, y: Tensor) -> dict[str, Any]:
    """Gradient norms, activation statistics, saturation and dead units on one batch, and the
    weights' norms (before the step that follows)."""
    was_training = model.training
    model.eval()  # RReLU uses its mean slope: the probe itself must not be random
    weights = [linear.weight for linear in model.linear_layers()]
    with torch.enable_grad():
        # Batch norm with the probe batch's own statistics: the network training steps. The
        # running ones are the identity at step 0 and would measure the un-normalised network.
        logits, pre, post, hidden = model.forward_hidden(x, "batch")  # L x (batch, width)
        loss = F.cross_entropy(logits, y)
        grads = torch.autograd.grad(loss, weights + hidden)
    model.train(was_training)
    weight_grads, signal_grads = grads[: len(weights)], grads[len(weights) :]
    with torch.no_grad():
        # One (L, STATS + 2 * bins + 1) block for the hidden layers, read back at once.
        per_hidden = torch.stack(
            [
                layer_block(g.norm(), h, saturated_share(activation, module, z), dead_share(a))
                for g, h, module, z, a in zip(
                    signal_grads, hidden, model.activations, pre, post, strict=True
                )
            ]
        ).tolist()
        # Weight-gradient norms, then the weights' own norms: one read-back.
        grad_norms, weight_norms = torch.stack(
            [
                torch.stack([g.norm() for g in weight_grads]),
                torch.stack([w.norm() for w in weights]),
            ]
        ).tolist()
        slopes = prelu_slopes(model)
        logits_spread = float(spread(logits.detach()))
    return probe_row(
        float(loss.detach()), grad_norms, per_hidden, weight_norms, slopes, logits_spread
    )


def measure_recurrent(
    model: RecurrentNet,
    activation: Activation,
    x: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
) -> dict[str, Any]:
    """`measure` for a recurrent network, and its time profile: its own forward on the probe
    batch x (batch, T, features), each recurrent layer unrolled (`through_time.unroll`) so
    that every step's h_t is in the graph, and the loss `loss_fn(output, y)`.

    Per weighted layer (each recurrent layer's W_ih and W_hh together, then the head) its
    weight-gradient and weight norms; per recurrent layer the `layer_block` of its output
    sequence (batch, T, hidden): the signal ||dLoss/d(output)|| as the layer above (or the head,
    on the last step) takes it, the statistics and histogram over every step (over
    `through_time.STAT_STEPS` evenly spaced steps when T is longer), the saturated
    share (`through_time.saturated_share`) and the units zero on every sample and step; then
    `through_time.time_probe`'s keys, its layers named "lstm 1", "lstm 2"..."""
    was_training = model.training
    model.eval()
    layers = list(model.layers)
    groups = model.layer_weights()  # per layer, its weights
    weights = [w for group in groups for w in group]
    unrolled: list[through_time.Unrolled] = []

    def run(layer: torch.nn.Module, h: Tensor) -> Tensor:
        found = cast(through_time.Unrolled, through_time.unroll(layer, h))  # never None here
        unrolled.append(found)
        return found.output

    with torch.enable_grad():
        output = model(x, run)
        loss = loss_fn(output, y)
        steps = [u.layers[0] for u in unrolled]  # one stacked layer per module
        sequences = [u.output for u in unrolled]  # L x (batch, T, hidden)
        hidden = [h for s in steps for h in s.hidden]
        grads = torch.autograd.grad(loss, weights + sequences + hidden)
    model.train(was_training)
    weight_grads = grads[: len(weights)]
    signal_grads = grads[len(weights) : len(weights) + len(layers)]
    step_grads = grads[len(weights) + len(layers) :]
    stride = through_time.stride_of(x.shape[1])  # statistics of values: on STAT_STEPS steps
    with torch.no_grad():
        per_hidden = torch.stack(
            [
                layer_block(
                    g.norm(),
                    h.detach()[:, stride - 1 :: stride],
                    through_time.saturated_share(s, activation, stride),
                    dead_share(h.detach()[:, stride - 1 :: stride], dim=2),
                )
                for g, h, s in zip(signal_grads, sequences, steps, strict=True)
            ]
        ).tolist()
        norms, start = [], 0
        for group in groups:
            size = len(group)
            norms.append(
                torch.stack(
                    [
                        torch.stack([g.norm() for g in weight_grads[start : start + size]]).norm(),
                        torch.stack([w.detach().norm() for w in group]).norm(),
                    ]
                )
            )
            start += size
        grad_norms, weight_norms = torch.stack(norms).T.tolist()
        prelus = [loop_prelu(layer) for layer in layers]
        slopes = [p.weight.mean() for p in prelus if p is not None]
        prelu = torch.stack(slopes).tolist() if len(slopes) == len(layers) else None
        logits_spread = float(spread(output.detach()))
        per_step, start = [], 0
        for s in steps:
            per_step.append(list(step_grads[start : start + len(s.hidden)]))
            start += len(s.hidden)
        names = [f"{model.arch} {k + 1}" for k in range(len(layers))]
        profile = through_time.time_probe(names, steps, per_step)
    row = probe_row(
        float(loss.detach()), grad_norms, per_hidden, weight_norms, prelu, logits_spread
    )
    return {**row, **profile}


def loop_prelu(layer: torch.nn.Module) -> torch.nn.PReLU | None:
    """A LoopRNN's PReLU activation (its learned slope is recorded), else None."""
    found = getattr(layer, "activation", None)
    return found if isinstance(found, torch.nn.PReLU) else None


def spread(output: Tensor, samples: int = 0) -> Tensor:
    """How much a layer's output depends on the input: per unit (and position), the std of its
    value across the batch's samples, as the root mean square over units (a 0-d tensor; nan
    for one sample). The whole tensor's std also counts the spread that biases put between
    units, which does not depend on the input: a 40-layer ReLU net at PyTorch's default init
    keeps a std of 0.26 of layer 1's at layer 40 while its spread falls 1e8-fold. With
    `samples` 1, a stack of K models' outputs (K, batch, ...): each model's, (K,)."""
    values = output.detach().float()
    spreads = values.var(dim=samples, correction=0).flatten(samples).mean(dim=-1).sqrt()
    return spreads if values.shape[samples] > 1 else torch.full_like(spreads, torch.nan)


def probe_row(
    loss: float | None,
    grad_norms: Sequence[float | None],
    per_hidden: list[list[float]],
    weight_norms: list[float],
    slopes: list[float] | None = None,
    logits_spread: float | None = None,
) -> dict[str, Any]:
    """A probe's measurements as metrics.jsonl holds them, from the numbers read back: the
    weight-gradient norms per weighted layer (None where no gradient reached one), a
    `layer_block` row per hidden layer, the weights' norms. The vanishing ratio is the first
    over the last layer that has a gradient."""
    signal, mean, std, saturated, dead, spreads, histogram = (
        split_layers(per_hidden) if per_hidden else ([],) * (STATS + 1)
    )
    reached = [norm for norm in grad_norms if norm is not None]
    return {
        "loss": loss,
        "grad_norms": grad_norms,
        "vanishing_ratio": ratio(reached[0], reached[-1]) if reached else None,
        "signal_norms": signal,
        "activation_mean": mean,
        "activation_std": std,
        "activation_spread": spreads,
        **({"logits_spread": logits_spread} if logits_spread is not None else {}),
        "activation_histogram": histogram,
        "saturated_fraction": saturated,
        "dead_fraction": dead,
        **({"prelu_slopes": slopes} if slopes is not None else {}),
        "weight_norms": weight_norms,
    }


def saturated_share(activation: Activation, module: torch.nn.Module, z: Tensor) -> Tensor:
    """The share of (sample, unit) values of an activation's input `z` where its slope is under
    the saturation threshold (`activations.saturated_mask`), as a 0-d tensor on z's device.
    RReLU's slope is its mean (eval mode) for the measurement, its mode restored after."""
    was_training = module.training
    module.train(False)
    try:
        return saturated_mask(activation, module, z).float().mean()
    finally:
        module.train(was_training)


def active_units(output: Tensor, dim: int = 1) -> Tensor:
    """Per unit (one index of `dim`: a Linear's feature, a conv's channel), whether its
    activation output is non-zero for some sample (and position); a (units,) bool tensor."""
    per_unit = output.transpose(0, dim).flatten(1)  # (units, samples x positions)
    return (per_unit != 0).any(dim=1)


def dead_share(output: Tensor, dim: int = 1) -> Tensor:
    """The share of units whose activation output is zero for every sample (and position)."""
    return (~active_units(output, dim)).float().mean()


def layer_block(signal: Tensor, output: Tensor, saturated: Tensor, dead: Tensor) -> Tensor:
    """One layer's row of a probe (STATS + 2 * bins + 1,): the back-propagated signal's norm,
    the output's mean, std, the saturated and dead shares, its spread across samples (`spread`),
    then the output's histogram (`histograms`). `split_layers` reads a stack of these rows back
    into named lists."""
    stats = torch.stack(
        [signal, output.mean(), output.std(), saturated, dead, spread(output).to(output.dtype)]
    ).to(output.dtype)
    return torch.cat([stats, histograms(output.detach().flatten()[None])[0]])


def histograms(
    values: Tensor, bins: int = HISTOGRAM_BINS, bounds: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """Per row of `values` (K, N), a histogram as one row of the result (K, 2 * bins + 1): its
    bins + 1 edges, then its bins' counts (whole numbers, as floats to share a read-back).

    Edges are numpy.histogram's: equal bins from the row's smallest to its largest value (0.5
    either side when they are equal), the last bin closed. Per layer and step, so no value is
    ever clipped, every bin is used by a layer of any scale (a sigmoid's (0, 1), a residual
    stream's hundreds) and the counts sum to N; the edges are recorded, so histograms of other
    layers and steps are drawn against the same axis. Non-finite values (a diverged run) are
    not counted and do not stretch the edges; a row with no finite value has nan edges and
    zero counts. `bounds` (K,) each: the smallest and largest finite values, when the rows are
    parts of larger sets (a distributed job's global batch: its ranks' histograms then sum).
    """
    finite = values.isfinite()
    if bounds is None:
        lo = torch.where(finite, values, math.inf).amin(dim=1)  # (K,)
        hi = torch.where(finite, values, -math.inf).amax(dim=1)
    else:
        lo, hi = bounds
    empty = ~(lo <= hi)  # no finite value (here, or in any part)
    lo, hi = lo.masked_fill(empty, math.nan), hi.masked_fill(empty, math.nan)
    flat = lo == hi
    lo, hi = torch.where(flat, lo - 0.5, lo), torch.where(flat, hi + 0.5, hi)
    steps = torch.arange(bins + 1, device=values.device, dtype=values.dtype)
    edges = steps * ((hi - lo) / bins)[:, None] + lo[:, None]  # (K, bins + 1), as np.linspace
    edges[:, -1] = hi
    # Bin i holds edges[i] <= v < edges[i + 1]; the largest value falls in the last one. The
    # bin by arithmetic (halves: no overflow over a float's whole range), then moved by one
    # where rounding put it beside its edges, as numpy.histogram does: searchsorted's answer
    # at a fraction of its time on a recurrent layer's T x batch x hidden values.
    kept = torch.where(finite, values, lo[:, None])
    low, span = (lo / 2)[:, None], ((hi - lo) / 2)[:, None]
    position = (kept / 2 - low) / span * bins
    position = torch.where(position.isfinite(), position, 0.0)  # a row with no finite value
    index = position.floor().clamp(0, bins - 1).long()
    index -= ((kept < edges.gather(1, index)) & (index > 0)).long()
    index += ((kept >= edges.gather(1, index + 1)) & (index < bins - 1)).long()
    counts = torch.zeros(len(values), bins, device=values.device, dtype=values.dtype)
    counts.scatter_add_(1, index, finite.to(values.dtype))  # exact below 2^24 values a bin
    return torch.cat([edges, counts], dim=1)


def split_layers(rows: list[list[float]]) -> tuple[list[Any], ...]:
    """Per-layer rows of STATS scalars then a histogram (`histograms`) -> one list per scalar
    (signal, mean, std, saturated, dead, spread) and the histograms as {"edges", "counts"}
    records."""
    columns = [list(column) for column in zip(*(row[:STATS] for row in rows), strict=True)]
    cut = STATS + HISTOGRAM_BINS + 1
    histogram = [
        {"edges": row[STATS:cut], "counts": [int(count) for count in row[cut:]]} for row in rows
    ]
    return (*columns, histogram)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, inf when only the denominator is zero, nan when both are."""
    if denominator == 0:
        return float("nan") if numerator == 0 else float("inf")
    return numerator / denominator


def prelu_slopes(model: MLP) -> list[float] | None:
    """Mean learned negative slope per layer for PReLU activations, else None."""
    slopes = [m.weight.mean() for m in model.activations if isinstance(m, torch.nn.PReLU)]
    return torch.stack(slopes).tolist() if slopes else None


def layer_weights(model: MLP | RecurrentNet) -> list[Tensor]:
    """Each weighted layer's weights as one tensor: an MLP's Linear weights, a recurrent
    layer's W_ih and W_hh flattened together."""
    if isinstance(model, RecurrentNet):
        return [torch.cat([w.flatten() for w in group]) for group in model.layer_weights()]
    return [linear.weight for linear in model.linear_layers()]


def snapshot(model: MLP | RecurrentNet) -> list[Tensor]:
    """Copies of the weights, to measure one optimizer step's update."""
    return [weight.detach().clone() for weight in layer_weights(model)]


def relative(change: Tensor, size: Tensor) -> Tensor:
    """A step's norm over the weights' norm (elementwise); nan where the weights were 0 (a
    zero-initialised layer, e.g. LoRA's B: its first step has no size to be measured against,
    and any ratio would read as a step a billion times too large)."""
    return torch.where(size > 0, change / size.clamp_min(1e-30), torch.nan)


def update_ratios(model: MLP | RecurrentNet, before: list[Tensor]) -> list[float]:
    """||W_after - W_before|| / ||W_before|| per layer."""
    with torch.no_grad():
        values = torch.stack(
            [
                relative((weight - old).norm(), old.norm())
                for weight, old in zip(layer_weights(model), before, strict=True)
            ]
        )
    return values.tolist()


@torch.no_grad()
def dead_units(model: MLP, x: Tensor, chunk: int = DEAD_CHUNK) -> list[float]:
    """Per hidden layer, the fraction of units whose activation output is zero for every row of
    `x`."""
    alive = [torch.zeros(width, dtype=torch.bool, device=x.device) for width in model.hidden]
    for start in range(0, len(x), chunk):
        # Batch norm with its running statistics, as `evaluate` sees the network: a sample's
        # output is then its own, not its chunk's, so the count does not depend on `chunk`
        # (batch statistics of 8192-sample chunks would be neither training's nor the data
        # set's); at an epoch end they have followed the training batches for an epoch.
        post = model.forward_hidden(x[start : start + chunk], "running").post_activations
        for flags, a in zip(alive, post, strict=True):
            flags |= (a != 0).any(dim=0)
    return torch.stack([1 - flags.float().mean() for flags in alive]).tolist()


def per_sample_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of each sample: logits (K, batch, classes), y (K, batch) -> (K, batch)."""
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape)


def norms(t: Tensor) -> Tensor:
    """L2 norm of each model's slice of a stacked tensor (K, ...) -> (K,)."""
    return t.flatten(1).norm(dim=1)


def measure_group(group: GroupedMLP, x: Tensor, y: Tensor) -> list[dict[str, Any]]:
    """`measure` for every model of a group; x (K, batch, 784), y (K, batch), model k on x[k]."""
    weights = list(group.weights)
    with torch.enable_grad():
        logits, pre, post, hidden = group.forward_hidden(x)  # L x (K, batch, width)
        losses = per_sample_loss(logits, y).mean(dim=1)  # (K,)
        # The sum: each model's gradients are those of its own mean loss, as in `measure`.
        grads = torch.autograd.grad(losses.sum(), weights + hidden)
    weight_grads, signal_grads = grads[: len(weights)], grads[len(weights) :]
    with torch.no_grad():
        stats = torch.stack(
            [
                torch.stack([norms(g) for g in signal_grads]),
                torch.stack([h.flatten(1).mean(dim=1) for h in hidden]),
                torch.stack([h.flatten(1).std(dim=1) for h in hidden]),
                torch.stack([saturated_group(group, layer, z) for layer, z in enumerate(pre)]),
                torch.stack([(a == 0).all(dim=1).float().mean(dim=1) for a in post]),
                torch.stack([spread(h, samples=1) for h in hidden]),
            ]
        )  # (STATS, L, K)
        shapes = torch.stack([histograms(h.flatten(1)) for h in hidden])  # (L, K, 2 * bins + 1)
        per_hidden = torch.cat([stats.permute(2, 1, 0), shapes.transpose(0, 1)], dim=2)
        grad_norms, weight_norms = (
            torch.stack(
                [
                    torch.stack([norms(g) for g in weight_grads]),
                    torch.stack([norms(w) for w in weights]),
                ]
            )
            .permute(0, 2, 1)
            .tolist()
        )  # 2 x K x (L + 1)
        per_model = per_hidden.tolist()  # K x L x (STATS + 2 * bins + 1)
        slopes = prelu_slopes_group(group)
        loss_values = losses.tolist()
        logits_spreads = spread(logits, samples=1).tolist()
    return [
        probe_row(
            loss_values[k], grad_norms[k], layers, weight_norms[k], slopes.get(k), logits_spreads[k]
        )
        for k, layers in enumerate(per_model)
    ]


def saturated_group(group: GroupedMLP, layer: int, z: Tensor) -> Tensor:
    """Per model, the saturated share of (sample, unit) pairs of one layer; z (K, batch, width)."""
    parts = [
        saturated_mask(get_activation(name), module, z[start:stop]).flatten(1).float().mean(dim=1)
        for (name, start, stop), module in zip(
            group.segments, group.layer_activations(layer), strict=True
        )
    ]
    return torch.cat(parts)


def prelu_slopes_group(group: GroupedMLP) -> dict[int, list[float]]:
    """Model index -> mean learned negative slope per layer, for the group's PReLU models."""
    slopes = {}
    for i, (name, start, _) in enumerate(group.segments):
        if name == "prelu":
            # The PReLU segment's modules are StackedPReLU (GroupedMLP._activation).
            prelus = [
                cast(StackedPReLU, group.layer_activations(layer)[i])
                for layer in range(len(group.hidden))
            ]
            means = torch.stack([prelu.weight.mean(dim=1) for prelu in prelus])
            for offset, values in enumerate(means.T.tolist()):  # (models, L)
                slopes[start + offset] = values
    return slopes


def snapshot_group(group: GroupedMLP) -> list[Tensor]:
    """Copies of the stacked weights, to measure one optimizer step's update."""
    return [weight.detach().clone() for weight in group.weights]


def update_ratios_group(group: GroupedMLP, before: list[Tensor]) -> list[list[float]]:
    """Per model, ||W_after - W_before|| / ||W_before|| per layer."""
    with torch.no_grad():
        values = torch.stack(
            [
                relative(norms(weight - old), norms(old))
                for weight, old in zip(group.weights, before, strict=True)
            ]
        )  # (L + 1, K)
    return values.T.tolist()


@torch.no_grad()
def dead_units_group(group: GroupedMLP, x: Tensor, chunk: int = DEAD_CHUNK) -> list[list[float]]:
    """Per model and hidden layer, the fraction of units with zero activation output on every
    row of `x` (`dead_units` per model)."""
    k = len(group)
    alive = [torch.zeros(k, width, dtype=torch.bool, device=x.device) for width in group.hidden]
    step = max(1, chunk // k)  # K copies of a chunk are in flight at once
    for start in range(0, len(x), step):
        post = group.forward_hidden(x[start : start + step].expand(k, -1, -1)).post_activations
        for flags, a in zip(alive, post, strict=True):
            flags |= (a != 0).any(dim=1)
    return torch.stack([1 - flags.float().mean(dim=1) for flags in alive]).T.tolist()
