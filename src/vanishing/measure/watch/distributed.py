"""A watch under torch.distributed (DistributedDataParallel, FSDP2's `fully_shard`): which rank
writes what, the model's own layer names, and a measured step's numbers combined over the ranks.

Every rank runs the same hooks; at a measured step only, in the optimizer's step pre-hook, the
ranks take part in a few collectives (nothing between measured steps):
- weight gradients: DDP's backward leaves each rank's LOCAL gradient (it all-reduces after, and
  the loop may clip before the step), so the last value backward accumulates into each weight
  is copied into one flat buffer (`GradBuffer`) and all-reduced here: the averaged gradient the
  optimizer receives, before any clipping, the same on every rank. FSDP2 hands its hooks the
  reduce-scattered (averaged) shard: its squares are summed over the ranks. Weight norms and
  update ratios of sharded weights likewise.
- signals ||dLoss/da||: each rank's s_r is of its own loss on its own batch; the job's loss is
  the mean of the ranks', so over the global batch the signal is sqrt(sum_r s_r^2) / W.
- unit statistics over the global batch: means weighted by sample counts, std pooled, the
  spread across samples pooled per unit, histograms on common edges summed, the saturated
  share over every (sample, unit) value, and a unit dead when dead on every rank.
- a recurrent module's time profile is rank 0's own (its steps may differ between ranks).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vanishing.errors import UsageError
from vanishing.measure import probes
from vanishing.measure.watch.capture import Captures, Part
from vanishing.measure.watch.layers import Layers, joint_norm
from vanishing.measure.watch.rows import hold

RANKS = ("one", "all")  # one run written by rank 0; or that run and a directory per rank
PREFIX = "module."  # DistributedDataParallel's name for the model it wraps
JOIN_REFUSED = (
    "watch: DistributedDataParallel's Join (uneven inputs) is not supported: a rank out of "
    "batches cannot take part in a measured step's collectives; give every rank the same "
    "number of batches (DistributedSampler(..., drop_last=True))"
)


def unwrap(model: nn.Module) -> nn.Module:
    """The model a DistributedDataParallel wraps (its `.module`), else the model itself: the
    watch names and hooks the user's own model, so its layers are named as in one process."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.module
    return model


def own_names(layers: Any, model: nn.Module) -> Any:
    """`layers=` names as the wrapped model's own: DDP's "module." prefix left off."""
    if layers is None or model is unwrap(model) or isinstance(layers, str):
        return layers
    return [name.removeprefix(PREFIX) if isinstance(name, str) else name for name in layers]


def local(tensor: Tensor) -> Tensor:
    """This rank's shard of a DTensor (FSDP2's parameters and gradients), else the tensor."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


def is_fsdp1(model: nn.Module) -> bool:
    """Whether FSDP1's FullyShardedDataParallel wraps any part of the model."""
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # a torch built without distributed
        return False
    return any(isinstance(module, FullyShardedDataParallel) for module in model.modules())


def process_count() -> int:
    """The world size of the initialised default process group; 1 without one."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@dataclass
class Distributed:
    """This process's place in the job, and the collectives of a measured step."""

    rank: int
    size: int
    ranks: str  # "one" or "all"
    sharded: bool  # FSDP2: the parameters are DTensor shards
    wrapper: Any = None  # the DistributedDataParallel given, if one was (its Join state)
    # id(weight) -> (start, size, index): its gradient's slice of `buffer`, and its flag's
    offsets: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    buffer: Tensor | None = None  # a measured step's local gradients, then their average

    @property
    def parallel(self) -> str:
        """How the job shares the model: "fsdp2" (sharded) or "ddp"."""
        return "fsdp2" if self.sharded else "ddp"

    def settings(self) -> dict[str, Any]:
        """config.json keys of the combined run."""
        return {"world_size": self.size, "ranks": self.ranks, "parallel": self.parallel}

    def rank_settings(self) -> dict[str, Any]:
        """config.json keys of this rank's own directory (ranks="all")."""
        return {
            "world_size": self.size,
            "rank": self.rank,
            "ranks": "all",
            "parallel": self.parallel,
        }

    def check_join(self) -> None:
        """Refuse a measured step inside DDP's Join (uneven inputs): a rank that ran out of
        batches shadows DDP's all-reduce only, so the watch's collectives would not match."""
        config = getattr(self.wrapper, "_join_config", None)
        if config is not None and getattr(config, "enable", False):
            raise UsageError(JOIN_REFUSED)

    def all_reduce(self, tensor: Tensor, op: Any = None) -> Tensor:
        dist = torch.distributed
        dist.all_reduce(tensor, op=op if op is not None else dist.ReduceOp.SUM)
        return tensor

    # -- weight gradients -------------------------------------------------------------------

    def keep(self, weight: Tensor, layers: Layers, captures: Captures) -> None:
        """A weight's gradient as backward has just accumulated it, at a measured step: DDP's
        local one copied into the step's buffer (the last backward's value stays: under
        gradient accumulation the accumulated one), FSDP2's averaged shard as its squares."""
        grad = weight.grad
        if grad is None:
            return
        if self.sharded:
            captures.param_grads[id(weight)] = local(grad).detach().double().square().sum()
            return
        if self.buffer is None:
            self.buffer = self.new_buffer(layers, grad.device)
        if id(weight) not in self.offsets:  # not a watched layer's weight (any longer)
            return
        start, size, index = self.offsets[id(weight)]
        self.buffer[start : start + size] = grad.detach().flatten()
        self.buffer[index] = 1.0

    def new_buffer(self, layers: Layers, device: torch.device) -> Tensor:
        """Zeros for every watched weight's gradient, then a flag per weight (set when a
        gradient came): the same layout on every rank."""
        if not self.offsets:
            unique = {id(w): w for weights in layers.weights.values() for w in weights}
            total = sum(w.numel() for w in unique.values())
            start = 0
            for index, (key, weight) in enumerate(unique.items()):
                self.offsets[key] = (start, weight.numel(), total + index)
                start += weight.numel()
        size = sum(size for _, size, _ in self.offsets.values()) + len(self.offsets)
        dtype = torch.float64 if any_double(layers) else torch.float32
        return torch.zeros(size, dtype=dtype, device=device)

    def grads(self, layers: Layers, captures: Captures) -> tuple[dict[str, Tensor], ...]:
        """Per layer, the norm of the gradient the optimizer is given now (after any clipping)
        and of the averaged gradient backward left (before it): every rank takes part."""
        self.check_join()  # the measured step's first collective: none reached yet
        device = first_device(layers)
        if self.sharded:
            entries = [(name, w) for name, ws in layers.weights.items() for w in ws]
            zero = torch.zeros((), dtype=torch.float64, device=device)
            squares = [captures.param_grads.get(id(w)) for _, w in entries] + [
                local(w.grad).detach().double().square().sum() if w.grad is not None else None
                for _, w in entries
            ]
            packed = torch.stack(
                [s if s is not None else zero for s in squares]
                + [zero + (s is not None) for s in squares]
            )
            summed = self.all_reduce(packed).tolist()
            captures.param_grads.clear()
            half = len(entries)
            values, flags = summed[: 2 * half], summed[2 * half :]
            backward = group_norms(entries, values[:half], flags[:half], device)
            now = group_norms(entries, values[half:], flags[half:], device)
            return now, backward
        now = {}
        for name, weights in layers.weights.items():
            grads = [w.grad for w in weights if w.grad is not None]
            if grads:
                now[name] = joint_norm(grads)
        buffer = self.buffer if self.buffer is not None else self.new_buffer(layers, device)
        self.buffer = None
        self.all_reduce(buffer)
        first_flag = len(buffer) - len(self.offsets)
        flags = buffer[first_flag:].tolist()
        backward = {}
        for name, weights in layers.weights.items():
            norms = []
            for weight in weights:
                if id(weight) not in self.offsets:
                    continue
                start, size, index = self.offsets[id(weight)]
                if flags[index - first_flag] > 0:  # some rank's backward reached it
                    norms.append(buffer[start : start + size].float().norm() / self.size)
            if norms:
                backward[name] = torch.stack(norms).norm()
        return now, backward

    def norms(self, groups: Sequence[Sequence[Tensor]]) -> Tensor:
        """The L2 norm of each group of tensors taken as one vector; shards summed over the
        ranks (one collective) when the weights are sharded."""
        if not self.sharded:
            return torch.stack([joint_norm(group) for group in groups])
        squares = torch.stack(
            [
                torch.stack([local(t).detach().double().square().sum() for t in group]).sum()
                for group in groups
            ]
        )
        return self.all_reduce(squares).sqrt().float()

    # -- the measured step's activation layers, over the global batch ------------------------

    def combine(self, captures: Captures, layers: Layers) -> Captures:
        """A Captures of the job's measurements from this rank's: each activation layer's
        block (`probes.layer_block`'s layout) and signal over the global batch. Two
        collectives: the layers' value ranges, shapes and live units (max), then their sums."""
        names = layers.fixed_activations
        device = first_device(layers)
        widths = [layers.widths.get(name, 0) for name in names]
        parts: list[Part | None] = []
        for name in names:
            part = captures.parts.get(name)
            fresh = part is not None and part.output._version == part.version
            parts.append(part if fresh else None)
        values = [p.output.detach().float().flatten(1) if p is not None else None for p in parts]
        first = []  # per layer: -lo, hi, features, -features, then its units' live flags
        for part, v, width in zip(parts, values, widths, strict=True):
            if part is None or v is None:
                first.append(torch.full((4,), -math.inf, dtype=torch.float64, device=device))
                first.append(torch.zeros(width, dtype=torch.float64, device=device))
                continue
            finite = v.isfinite()
            lo = torch.where(finite, v, math.inf).amin()
            hi = torch.where(finite, v, -math.inf).amax()
            features = float(v.shape[1])
            head = torch.stack([-lo.double(), hi.double()])
            shape = torch.tensor([features, -features], dtype=torch.float64, device=device)
            alive = part.alive if part.alive.numel() == width else torch.ones(width)
            first += [head, shape, alive.double().to(device)]
        maxima = self.all_reduce(torch.cat(first), torch.distributed.ReduceOp.MAX).tolist()
        second, layout, start = [], [], 0
        for name, part, v, width in zip(names, parts, values, widths, strict=True):
            low, hi, longest, shortest = maxima[start : start + 4]  # low is -lo
            lo = -low
            alive = torch.tensor(maxima[start + 4 : start + 4 + width])
            start += 4 + width
            features = int(longest) if longest == -shortest and math.isfinite(longest) else 0
            layout.append((lo, hi, alive, features))
            second.append(self.sums(captures.signals.get(name), part, v, lo, hi, features))
        totals = self.all_reduce(torch.cat(second)).tolist()
        combined = Captures()
        start = 0
        for name, (lo, hi, alive, features) in zip(names, layout, strict=True):
            size = SUMS + probes.HISTOGRAM_BINS + 3 * features
            block, signal = self.block(totals[start : start + size], lo, hi, alive, features)
            start += size
            if signal is not None:
                combined.signals[name] = signal.to(device)
            if block is not None:
                combined.blocks[name] = block.to(device)
        return combined

    def sums(
        self,
        signal: Tensor | None,
        part: Part | None,
        v: Tensor | None,
        lo: float,
        hi: float,
        features: int,
    ) -> Tensor:
        """This rank's sums of one activation layer, float64: SUMS scalars, the histogram's
        counts on edges common to every rank, and per feature (when every rank's features
        agree) n m, the squares about its mean m and n m^2 over this rank's n samples: pooled
        as Chan's parallel variance, squares = sum M2 + sum n m^2 - (sum n m)^2 / N."""
        device = v.device if v is not None else torch.device("cpu")
        head = torch.zeros(SUMS, dtype=torch.float64)
        counts = torch.zeros(probes.HISTOGRAM_BINS, dtype=torch.float64, device=device)
        columns = torch.zeros(3 * features, dtype=torch.float64, device=device)
        if signal is not None:
            head[0], head[1] = float(signal) ** 2, 1.0
        if part is not None and v is not None:
            x = v.double()  # (samples, features)
            mean = x.mean()  # squares about this rank's own mean: no cancellation
            head[2], head[3] = x.numel(), float(x.sum())
            head[4], head[5] = float((x - mean).square().sum()), float(x.numel() * mean.square())
            head[6], head[7] = float(part.saturated) * part.inputs, part.inputs
            head[8] = x.shape[0]
            bounds = (torch.tensor([lo], device=device), torch.tensor([hi], device=device))
            binned = probes.histograms(v.reshape(1, -1), bounds=bounds)
            counts = binned[0, probes.HISTOGRAM_BINS + 1 :].double()
            if features:
                means = x.mean(dim=0)
                spread = (x - means).square().sum(dim=0)
                samples = x.shape[0]
                columns = torch.cat([samples * means, spread, samples * means.square()])
        return torch.cat([head.to(device), counts, columns])

    def block(
        self, sums: list[float], lo: float, hi: float, alive: Tensor, features: int
    ) -> tuple[Tensor | None, Tensor | None]:
        """One layer's block over the global batch, and its signal, from the ranks' sums."""
        signal_sq, signals, n, total, within, means, saturated, inputs, samples = sums[:SUMS]
        signal = torch.tensor(math.sqrt(signal_sq) / self.size) if signals else None
        if n == 0:
            return None, signal
        mean = total / n
        var = max(within + (means - total * total / n), 0.0) / (n - 1) if n > 1 else math.nan
        if features and samples > 1:
            columns = torch.tensor(sums[SUMS + probes.HISTOGRAM_BINS :], dtype=torch.float64)
            s1, m2, s2 = columns.view(3, features)
            per_feature = (m2 + (s2 - s1.square() / samples)).clamp_min(0) / samples
            spread = float(per_feature.mean().sqrt())
        else:
            spread = math.nan  # one sample, or the ranks' positions differ
        bounds = torch.tensor([lo]), torch.tensor([hi])
        edges = probes.histograms(torch.zeros(1, 1), bounds=bounds)[0, : probes.HISTOGRAM_BINS + 1]
        counts = torch.tensor(sums[SUMS : SUMS + probes.HISTOGRAM_BINS])
        dead = float((alive == 0).double().mean()) if alive.numel() else math.nan
        share = saturated / inputs if inputs else math.nan
        stats = torch.tensor([0.0, mean, math.sqrt(var), share, dead, spread])
        return torch.cat([stats, edges.float(), counts.float()]), signal


# per layer: signal^2, signal present, values, their sum, squares about the rank's mean,
# values x mean^2, saturated values, input values, samples
SUMS = 9


def group_norms(
    entries: Sequence[tuple[str, Tensor]], squares: list[float], flags: list[float], device: Any
) -> dict[str, Tensor]:
    """Per layer, sqrt of its weights' summed squares (those a gradient reached)."""
    found: dict[str, float] = {}
    for (name, _), square, flag in zip(entries, squares, flags, strict=True):
        if flag > 0:
            found[name] = found.get(name, 0.0) + square
    return {name: torch.tensor(math.sqrt(value), device=device) for name, value in found.items()}


def any_double(layers: Layers) -> bool:
    return any(w.dtype == torch.float64 for ws in layers.weights.values() for w in ws)


def first_device(layers: Layers) -> torch.device:
    for weights in layers.weights.values():
        for weight in weights:
            return local(weight).device
    return torch.device("cpu")


def check(
    model: nn.Module, ranks: Any, optimizer: Any, probe: Any, size: int | None = None
) -> Distributed | None:
    """This process's place in a distributed job of `size` processes (default: the default
    process group's world size; None in one process, or a world of 1); each argument the job
    cannot be watched with a UsageError, before any collective."""
    if not isinstance(ranks, str) or ranks not in RANKS:
        raise UsageError(
            'watch: ranks must be "one" (one run, written by rank 0) or "all" (that run and '
            f"a directory per rank), got {ranks!r}"
        )
    size = process_count() if size is None else size
    if size == 1:
        if ranks == "all":
            raise UsageError(
                'watch: ranks="all" needs torch.distributed: an initialised process group of '
                "world size > 1 (as torchrun starts); in one process leave ranks out"
            )
        return None
    if is_fsdp1(model):
        raise UsageError(
            "watch: FullyShardedDataParallel (FSDP1) is not supported: its flat parameters "
            "hide the layers; shard with FSDP2's torch.distributed.fsdp.fully_shard instead"
        )
    if optimizer is None:
        raise UsageError(
            "watch: under torch.distributed the watch needs the optimizer: a step is an "
            "optimizer step, when every rank has the averaged gradient"
        )
    if probe is not None:
        raise UsageError(
            "watch: probe= is not supported under torch.distributed; leave it out: the "
            "training steps themselves are measured"
        )
    sharded = any(callable(getattr(p, "to_local", None)) for p in model.parameters())
    wrapper = model if isinstance(model, nn.parallel.DistributedDataParallel) else None
    world = Distributed(torch.distributed.get_rank(), size, ranks, sharded, wrapper=wrapper)
    world.check_join()
    return world


def hold_runs(
    world: Distributed, out: Path | str | None, model: nn.Module
) -> tuple[Path, int | None, Path | None, int | None]:
    """The run directory every rank agrees on (rank 0 holds it: `out`, else one it chooses
    and sends to the others) and, with ranks="all", this rank's out/rank{r}, held by it. A
    refusal on any rank is every rank's UsageError (no rank is left waiting)."""
    dist = torch.distributed
    error, run_dir, lock = None, None, None
    if world.rank == 0:
        try:
            run_dir, lock = hold(out, model)
        except UsageError as refused:
            error = str(refused)
    shared: list[Any] = [str(run_dir) if run_dir is not None else None, error]
    dist.broadcast_object_list(shared, src=0)
    if shared[1] is not None:
        raise UsageError(shared[1])
    run_dir = Path(shared[0])
    rank_dir, rank_lock = None, None
    if world.ranks == "all":
        try:
            rank_dir, rank_lock = hold(run_dir / f"rank{world.rank}", model)
        except UsageError as refused:
            error = str(refused)
    errors: list[Any] = [None] * world.size
    dist.all_gather_object(errors, error)
    failed = next((e for e in errors if e is not None), None)
    if failed is not None:
        for held in (lock, rank_lock):
            if held is not None:
                os.close(held)
        raise UsageError(failed)
    return run_dir, lock, rank_dir, rank_lock
