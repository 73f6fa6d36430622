"""Train K same-shaped MLPs in one pass with stacked weights; every model keeps its own everything.

Each model has its own activation, init, seed, data order, optimizer state, loss, probes and
divergence; nothing is reduced across models (the summed loss gives each model exactly its own
gradient), so one model's NaN cannot reach another. Each model's records are those `train`
writes. `plan_groups` decides which runs of a comparison can share a group.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vanishing import probes
from vanishing.activations import (
    DEFAULT_OPTIONS,
    ActivationOptions,
    get_activation,
    make_activation,
)
from vanishing.data import Dataset, load_dataset
from vanishing.errors import UsageError
from vanishing.model import MLP, build_model, make_optimizer
from vanishing.train import (
    RunLog,
    RunResult,
    StepCallback,
    TrainConfig,
    close_records,
    denormals_flushed,
    open_records,
    resolve_device,
    sync,
    to_inputs,
)

# What the models of one group must share; activation, init and seed may differ.
SHARED_FIELDS = (
    "hidden",
    "optimizer",
    "lr",
    "momentum",
    "batch_size",
    "epochs",
    "dataset",
    "negative_slope",
    "prelu_mode",
    "probe_every",
    "probe_size",
    "device",
)
# RReLU draws random slopes while training: K models drawing from one stream cannot reproduce K
# one-by-one runs (each seeded alone), so it always trains one at a time.
UNGROUPABLE = frozenset({"rrelu"})


def group_key(config: TrainConfig) -> tuple[Any, ...]:
    """Runs with equal keys can train in one group."""
    return tuple(getattr(config, name) for name in SHARED_FIELDS)


def plan_groups(configs: Sequence[TrainConfig], max_size: int) -> list[list[int]]:
    """Partition run indices into groups (of at most `max_size`) that can train together."""
    if max_size < 1:
        raise UsageError(f"group size must be >= 1, got {max_size!r}")
    by_key: dict[tuple[Any, ...], list[int]] = {}
    alone = []
    for i, config in enumerate(configs):
        if config.activation in UNGROUPABLE:
            alone.append([i])
        else:
            by_key.setdefault(group_key(config), []).append(i)
    chunks = [
        members[start : start + max_size]
        for members in by_key.values()
        for start in range(0, len(members), max_size)
    ]
    return sorted(chunks + alone)


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
    layer applies one module per run of equal names (a handful of calls, not K).
    """

    def __init__(
        self,
        hidden: Sequence[int],
        activations: Sequence[str],
        options: ActivationOptions = DEFAULT_OPTIONS,
        in_features: int = 784,
        classes: int = 10,
    ) -> None:
        super().__init__()
        self.hidden = tuple(hidden)
        self.names = tuple(activations)
        self.options = options
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

    @classmethod
    def from_models(cls, models: Sequence[MLP]) -> GroupedMLP:
        """Stack existing models' parameters (copied) into one group."""
        first = models[0]
        group = cls(
            first.hidden,
            [m.activation.name for m in models],
            first.options,
            first.linears[0].in_features,
            first.linears[-1].out_features,
        )
        with torch.no_grad():
            for layer, (weight, bias) in enumerate(zip(group.weights, group.biases, strict=True)):
                weight.copy_(torch.stack([m.linears[layer].weight.T for m in models]))
                bias.copy_(torch.stack([m.linears[layer].bias for m in models]))
            for (name, start, stop), modules in group._segment_modules():
                if name == "prelu":
                    for layer, module in enumerate(modules):
                        module.weight.copy_(
                            torch.stack([m.activations[layer].weight for m in models[start:stop]])
                        )
        return group.to(first.linears[0].weight.device)

    def _segment_modules(self) -> list[tuple[tuple[str, int, int], list[nn.Module]]]:
        """Per segment, its module in every hidden layer."""
        return [
            (segment, [layer[i] for layer in self.activations])
            for i, segment in enumerate(self.segments)
        ]

    def model(self, k: int) -> MLP:
        """Model k as a plain MLP (a copy, on the group's device)."""
        in_features, classes = self.weights[0].shape[1], self.weights[-1].shape[2]
        model = MLP(self.hidden, self.names[k], self.options, in_features, classes)
        model.to(self.weights[0].device)
        with torch.no_grad():
            for linear, weight, bias in zip(model.linears, self.weights, self.biases, strict=True):
                linear.weight.copy_(weight[k].T)
                linear.bias.copy_(bias[k])
            for (name, start, stop), modules in self._segment_modules():
                if name == "prelu" and start <= k < stop:
                    for act, module in zip(model.activations, modules, strict=True):
                        act.weight.copy_(module.weight[k - start])
        return model

    def activate(self, layer: int, z: Tensor) -> Tensor:
        """Each model's activation on its slice of z (K, batch, width)."""
        modules = self.activations[layer]
        if len(self.segments) == 1:
            return modules[0](z)
        parts = [
            m(z[start:stop]) for m, (_, start, stop) in zip(modules, self.segments, strict=True)
        ]
        return torch.cat(parts)

    def forward_hidden(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Logits (K, batch, classes), pre-activations and outputs (K, batch, width_l) per layer."""
        h = x
        pre_activations, outputs = [], []
        for layer in range(len(self.hidden)):
            # (K, batch, in) @ (K, in, out) + (K, 1, out): nn.Linear per model, in one call.
            z = torch.baddbmm(self.biases[layer].unsqueeze(1), h, self.weights[layer])
            h = self.activate(layer, z)
            pre_activations.append(z)
            outputs.append(h)
        logits = torch.baddbmm(self.biases[-1].unsqueeze(1), h, self.weights[-1])
        return logits, pre_activations, outputs

    def forward(self, x: Tensor) -> Tensor:
        """Logits (K, batch, classes) of inputs (K, batch, 784), model k on x[k]."""
        h = x
        for layer in range(len(self.hidden)):
            z = torch.baddbmm(self.biases[layer].unsqueeze(1), h, self.weights[layer])
            h = self.activate(layer, z)
        return torch.baddbmm(self.biases[-1].unsqueeze(1), h, self.weights[-1])


@torch.no_grad()
def evaluate_group(
    group: GroupedMLP, x: Tensor, y: Tensor, chunk: int = 10000
) -> tuple[list[float], list[float]]:
    """Per model, mean per-sample cross-entropy and accuracy over a whole split (x shared)."""
    k = len(group)
    loss_sum = torch.zeros(k, device=x.device)
    correct = torch.zeros(k, device=x.device)
    step = max(1, chunk // k)  # K copies of a chunk are in flight at once
    for start in range(0, len(x), step):
        logits = group(x[start : start + step].expand(k, -1, -1))  # (K, chunk, classes)
        target = y[start : start + step].expand(k, -1)
        loss_sum += probes.per_sample_loss(logits, target).sum(dim=1)
        correct += (logits.argmax(dim=2) == target).sum(dim=1)
    losses, right = torch.stack([loss_sum, correct]).div(len(x)).tolist()
    return losses, right


EpochCallback = Callable[[TrainConfig, dict[str, Any]], None]


def fit_group(
    configs: Sequence[TrainConfig],
    dataset: Dataset,
    device: torch.device,
    logs: Sequence[RunLog],
    on_steps: StepCallback | None = None,
) -> GroupedMLP:
    """`train.fit` for K models at once: records go to each model's log; returns the group.

    Timings: the group's wall time divided by K is recorded as each model's share (its
    train/eval/probe seconds), a fair per-model figure since the K models run as one.
    """
    first, k = configs[0], len(configs)
    models = [build_model(c.hidden, c.activation, c.init, c.options, seed=c.seed) for c in configs]
    group = GroupedMLP.from_models(models).to(device)
    optimizer = make_optimizer(first.optimizer, group.parameters(), first.lr, first.momentum)
    x_train = to_inputs(dataset.train_images, device)  # (60000, 784)
    y_train = dataset.train_labels.to(device)
    x_test = to_inputs(dataset.test_images, device)
    y_test = dataset.test_labels.to(device)
    n = len(x_train)
    # Each model's own generator, drawn in `train.fit`'s order: probe batch, then one per epoch.
    generators = [torch.Generator().manual_seed(c.seed) for c in configs]
    probe_index = torch.stack(
        [torch.randperm(n, generator=g)[: first.probe_size] for g in generators]
    ).to(device)  # (K, probe_size)
    x_probe, y_probe = x_train[probe_index], y_train[probe_index]  # (K, probe, 784), (K, probe)
    rectifier = [get_activation(name).family == "rectifier" for name in group.names]

    step = 0
    for epoch in range(1, first.epochs + 1):
        trained = active = [i for i in range(k) if logs[i].running]
        if not active:
            break
        order = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)
        loss_sum = torch.zeros(k, device=device)  # per model, on the device
        sync(device)
        start = time.perf_counter()
        epoch_probe_seconds = 0.0
        for begin in range(0, n, first.batch_size):
            index = order[:, begin : begin + first.batch_size]  # (K, batch)
            x, y = x_train[index], y_train[index]  # (K, batch, 784), (K, batch)
            probing = step % first.probe_every == 0
            if probing:
                probe_start = time.perf_counter()
                finite = torch.isfinite(loss_sum).tolist()
                for i in active:
                    if not finite[i]:
                        logs[i].diverge(step, epoch)
                active = [i for i in active if finite[i]]
                if not active:
                    break
                measured = probes.measure_group(group, x_probe, y_probe)
                before = probes.snapshot_group(group)
                weight_norms = torch.stack([probes.norms(w) for w in before]).T.tolist()
                for row, norms in zip(measured, weight_norms, strict=True):  # as `train.fit`
                    row["weight_norms"] = norms
                epoch_probe_seconds += time.perf_counter() - probe_start
            losses = probes.per_sample_loss(group(x), y).mean(dim=1)  # (K,)
            optimizer.zero_grad(set_to_none=True)
            # A sum, never a mean: model k's gradient is exactly that of its own loss.
            losses.sum().backward()
            optimizer.step()
            loss_sum += losses.detach() * index.shape[1]
            if probing:
                probe_start = time.perf_counter()
                ratios = probes.update_ratios_group(group, before)
                for i in active:
                    logs[i].probe(step, epoch, measured[i], ratios[i])
                epoch_probe_seconds += time.perf_counter() - probe_start
            step += 1
            if on_steps is not None:
                on_steps(len(active))
        sync(device)
        epoch_train_seconds = (time.perf_counter() - start - epoch_probe_seconds) / k
        train_losses = (loss_sum / n).tolist()
        for i in trained:  # a model that diverged this epoch still spent it, as in `train.fit`
            logs[i].train_seconds += epoch_train_seconds
            logs[i].probe_seconds += epoch_probe_seconds / k
            if logs[i].running and not np.isfinite(train_losses[i]):
                logs[i].diverge(step, epoch)
        active = [i for i in trained if logs[i].running]
        if not active:
            break

        start = time.perf_counter()
        test_losses, test_accuracies = evaluate_group(group, x_test, y_test)
        if any(rectifier[i] for i in active):  # only rectifiers output exact zeros
            dead = probes.dead_units_group(group, x_train)
        eval_seconds = (time.perf_counter() - start) / k
        for i in active:
            if rectifier[i]:
                logs[i].dead = dead[i]
            logs[i].end_epoch(
                epoch,
                step,
                train_losses[i],
                test_losses[i],
                test_accuracies[i],
                epoch_train_seconds,
                eval_seconds,
            )
    return group


def train_group(
    configs: Sequence[TrainConfig],
    *,
    dataset: Dataset | None = None,
    run_dirs: Sequence[Path | str | None] | None = None,
    data_dir: Path | str | None = None,
    verify: bool = True,
    on_epoch: EpochCallback | None = None,
    on_steps: StepCallback | None = None,
) -> list[RunResult]:
    """Train every config in one group; results (and run directories) as `train` gives them."""
    if not configs:
        raise UsageError("a group needs at least one run")
    keys = {group_key(c) for c in configs}
    if len(keys) > 1:
        raise UsageError(f"a group's runs must share {', '.join(SHARED_FIELDS)}")
    rrelu = sorted(UNGROUPABLE & {c.activation for c in configs})
    if rrelu:
        raise UsageError(f"{', '.join(rrelu)} draws random numbers while training: train it alone")
    run_dirs = list(run_dirs) if run_dirs is not None else [None] * len(configs)
    # Equal activations next to each other: one activation call per run of equal names.
    first_seen = {c.activation: i for i, c in reversed(list(enumerate(configs)))}
    order = sorted(range(len(configs)), key=lambda i: (first_seen[configs[i].activation], i))
    device = resolve_device(configs[0].device)
    if dataset is None:
        dataset = load_dataset(configs[0].dataset, data_dir=data_dir, verify=verify)
    writers = []
    try:
        logs = []
        for i in order:
            writers.append(open_records(configs[i], run_dirs[i]))
            callback = (lambda row, c=configs[i]: on_epoch(c, row)) if on_epoch else None
            logs.append(RunLog(configs[i], writers[-1], callback))
        with denormals_flushed():
            fit_group([configs[i] for i in order], dataset, device, logs, on_steps)
    finally:
        for writer in writers:
            if writer is not None:
                writer.close()
    results: list[RunResult] = [None] * len(configs)  # type: ignore[list-item]
    for i, log in zip(order, logs, strict=True):
        results[i] = close_records(log.result(device), run_dirs[i])
    return results
