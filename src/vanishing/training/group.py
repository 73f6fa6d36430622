"""Train K same-shaped MLPs in one pass with stacked weights; every model keeps its own everything.

Each model has its own activation, init, seed, data order, optimizer state, loss, probes and
divergence; nothing is reduced across models (the summed loss gives each model exactly its own
gradient), so one model's NaN cannot reach another. Each model's records are those `train`
writes, its checkpoint.pt included: at every epoch end but the last, each model still running gets
its own, in `train`'s format (its plain MLP, its share of the optimizer state as a single model's
optimizer holds it, its data order), so either path can continue it. `plan_groups` decides which
runs of a comparison can share a group; runs with a norm layer (or RReLU) train alone.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from vanishing import records
from vanishing.data import sequences
from vanishing.data.datasets import Dataset, load_dataset
from vanishing.devices import resolve_device, sync
from vanishing.errors import UsageError
from vanishing.measure import probes
from vanishing.model.activations import (
    get_activation,
)
from vanishing.model.mlp import MLP, UNGROUPABLE, GroupedMLP, make_optimizer
from vanishing.records import RunResult
from vanishing.settings.config import TrainConfig, per_model_fields
from vanishing.training.loop import (
    EVAL_CHUNK,
    RunLog,
    StepCallback,
    denormals_flushed,
    make_model,
)

# What the models of one group must share: every setting but those declared `per_model`.
SHARED_FIELDS = tuple(
    f.name for f in dataclasses.fields(TrainConfig) if f.name not in per_model_fields()
)


def group_key(config: TrainConfig) -> tuple[Any, ...]:
    """Runs with equal keys can train in one group."""
    return tuple(getattr(config, name) for name in SHARED_FIELDS)


def alone(config: TrainConfig) -> str | None:
    """Why the run cannot train in a group (it trains one at a time), None when it can."""
    if config.activation in UNGROUPABLE:
        return f"{config.activation} draws random numbers while training"
    if config.arch != "mlp":
        return f"a {config.arch} network has no grouped form"
    if config.norm != "none":
        # A group has no norm layers: batch norm's statistics would need stacking per model.
        return f"a model with {config.norm} norm has no grouped form"
    return None


def plan_groups(
    configs: Sequence[TrainConfig],
    max_size: int,
    epochs: Sequence[int | None] | None = None,
) -> list[list[int]]:
    """Partition run indices into groups (of at most `max_size`) that can train together.

    `epochs`, when resuming, is each run's checkpoint epoch (None: no checkpoint): a group
    continues from one epoch, so only runs of equal epochs share one.
    """
    if max_size < 1:
        raise UsageError(f"group size must be >= 1, got {max_size!r}")
    epochs = list(epochs) if epochs is not None else [None] * len(configs)
    by_key: dict[tuple[Any, ...], list[int]] = {}
    singles = []
    for i, config in enumerate(configs):
        if alone(config) is not None:
            singles.append([i])
        else:
            by_key.setdefault((*group_key(config), epochs[i]), []).append(i)
    chunks = [
        members[start : start + max_size]
        for members in by_key.values()
        for start in range(0, len(members), max_size)
    ]
    return sorted(chunks + singles)


@torch.no_grad()
def clip_group_gradients(group: GroupedMLP, max_norms: Tensor) -> Tensor:
    """`train.clip_gradients` per model: clip model k's gradient norm (over its slices of every
    stacked gradient) to max_norms[k] (K,), inf for a model that does not clip; (K,) bools,
    whether each model's norm was above its limit. Nothing is summed across models."""
    pairs = [
        (p, models)
        for p, models in zip(group.parameters(), group.parameter_models(), strict=True)
        if p.grad is not None
    ]
    per_tensor = torch.zeros(len(pairs), len(group), device=max_norms.device)  # (tensors, K)
    for row, (p, models) in zip(per_tensor, pairs, strict=True):
        row[models.start : models.stop] = probes.norms(cast(Tensor, p.grad))
    total = per_tensor.norm(dim=0)  # (K,): the norm of the norms, as clip_grad_norm_ takes it
    # torch's coefficient: max_norm / (norm + 1e-6), at most 1; a model without a limit keeps its
    # gradients (times 1: bit for bit, a non-finite one too).
    coefficient = (max_norms / (total + 1e-6)).clamp(max=1.0)
    coefficient = torch.where(torch.isinf(max_norms), torch.ones_like(coefficient), coefficient)
    for p, models in pairs:
        grad = cast(Tensor, p.grad)  # (models, ...)
        grad.mul_(coefficient[models.start : models.stop].view(-1, *[1] * (grad.dim() - 1)))
    return total > max_norms


@torch.no_grad()
def evaluate_group(
    group: GroupedMLP, x: Tensor, y: Tensor, chunk: int = EVAL_CHUNK
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


def model_optimizer_state(group_state: dict[str, Any], group: GroupedMLP, k: int) -> dict[str, Any]:
    """Model k's share of the group optimizer's `state_dict()`, laid out as a single model's
    optimizer (`make_optimizer` on `group.model(k).parameters()`) holds it: state per parameter in
    `MLP.parameters()` order, each tensor sliced off the stack (a weight's transposed back) and
    copied, step counts copied; the hyper-parameters as they are (one optimizer made them both).
    """
    states = group_state["state"]  # {index in group.parameters(): {name: tensor}}; {} before a step
    names = list(states[0]) if states else []
    own: dict[int, dict[str, Any]] = {}
    for name in names:
        values = group.unstack([states[i][name] for i in range(len(states))], k)
        for index, value in enumerate(values):  # a copy: a view would save the whole stack
            own.setdefault(index, {})[name] = value.clone(memory_format=torch.contiguous_format)
    count = len(group.unstack(list(group.parameters()), k))
    (hyper,) = group_state["param_groups"]  # make_optimizer makes one parameter group
    return {"state": own, "param_groups": [{**hyper, "params": list(range(count))}]}


def load_model_optimizer_states(
    optimizer: torch.optim.Optimizer, group: GroupedMLP, model_states: Sequence[dict[str, Any]]
) -> None:
    """Load every model's own optimizer state (`model_optimizer_state`'s layout, models in group
    order) into the group's optimizer: the inverse of `model_optimizer_state`."""
    first = model_states[0]["state"]
    stacked: dict[int, dict[str, Tensor]] = {}
    for name in first.get(0, {}):
        per_model = [[s["state"][i][name] for i in range(len(s["state"]))] for s in model_states]
        for index, value in enumerate(group.stack(per_model)):
            stacked.setdefault(index, {})[name] = value
    (hyper,) = model_states[0]["param_groups"]
    params = list(range(len(optimizer.param_groups[0]["params"])))
    optimizer.load_state_dict({"state": stacked, "param_groups": [{**hyper, "params": params}]})


def save_model_checkpoints(
    run_dirs: Sequence[Path | str | None],
    configs: Sequence[TrainConfig],
    members: Sequence[int],
    epoch: int,
    step: int,
    group: GroupedMLP,
    optimizer: torch.optim.Optimizer,
    generators: Sequence[torch.Generator],
    logs: Sequence[RunLog],
) -> None:
    """For each of `members` with a run directory, the checkpoint `train.fit` would write for it."""
    targets = [(k, run_dir) for k in members if (run_dir := run_dirs[k]) is not None]
    group_state = optimizer.state_dict() if targets else {}
    for k, run_dir in targets:
        config, model = configs[k], group.model(k)
        # A single model's optimizer holding model k's share: its state_dict() is the one
        # `train.fit` saves, so that the single path can continue from it.
        single = make_optimizer(config.optimizer, model.parameters(), config.lr, config.momentum)
        single.load_state_dict(model_optimizer_state(group_state, group, k))
        # The global RNG as `train` leaves it: seeded, then drawn from by no groupable activation.
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(torch.Generator().manual_seed(config.seed).get_state())
            records.save_checkpoint(
                run_dir, config, epoch, step, model, single, generators[k], logs[k].state_dict()
            )


EpochCallback = Callable[[TrainConfig, dict[str, Any]], None]


def fit_group(
    configs: Sequence[TrainConfig],
    dataset: Dataset,
    device: torch.device,
    logs: Sequence[RunLog],
    on_steps: StepCallback | None = None,
    run_dirs: Sequence[Path | str | None] | None = None,
    checkpoints: Sequence[dict[str, Any]] | None = None,
) -> GroupedMLP:
    """`train.fit` for K models at once: records go to each model's log; returns the group.

    With `run_dirs`, each model still running gets a checkpoint at every epoch end but the last,
    as `train.fit` writes it; `checkpoints` (one per model, all of one epoch) continues from them.
    Timings: the group's wall time divided by K is recorded as each model's share (its
    train/eval/probe seconds), a fair per-model figure since the K models run as one.
    """
    first, k = configs[0], len(configs)
    models = [cast(MLP, make_model(c)) for c in configs]  # `alone` keeps recurrent ones out
    if checkpoints is not None:
        for model, checkpoint in zip(models, checkpoints, strict=True):
            records.check_fits(checkpoint, model)
            model.load_state_dict(checkpoint["model"])
    group = GroupedMLP.from_models(models).to(device)
    optimizer = make_optimizer(first.optimizer, group.parameters(), first.lr, first.momentum)
    # The models share every setting that reads the data (the first --train-size examples...).
    x_train = sequences.inputs(dataset, "train", first, device)  # (60000, 784)
    y_train = sequences.targets(dataset, "train", first, device)
    x_test = sequences.inputs(dataset, "test", first, device)
    y_test = sequences.targets(dataset, "test", first, device)
    n = len(x_train)
    # Each model's own generator, drawn in `train.fit`'s order: probe batch, then one per epoch.
    generators = [torch.Generator().manual_seed(c.seed) for c in configs]
    probe_index = torch.stack(
        [torch.randperm(n, generator=g)[: first.probe_size] for g in generators]
    ).to(device)  # (K, probe_size)
    x_probe, y_probe = x_train[probe_index], y_train[probe_index]  # (K, probe, 784), (K, probe)
    rectifier = [get_activation(name).family == "rectifier" for name in group.names]
    clipping = [c.clip_grad_norm is not None for c in configs]
    max_norms = None  # (K,) each model's limit, inf for none; None when no model clips
    if any(clipping):
        limits = [math.inf if c.clip_grad_norm is None else c.clip_grad_norm for c in configs]
        max_norms = torch.tensor(limits, device=device)

    step, first_epoch = 0, 1
    if checkpoints is not None:
        load_model_optimizer_states(optimizer, group, [c["optimizer"] for c in checkpoints])
        for generator, checkpoint in zip(generators, checkpoints, strict=True):
            generator.set_state(checkpoint["generator"])
        # The global RNG is not restored: no groupable activation draws from it while training.
        step, first_epoch = checkpoints[0]["step"], checkpoints[0]["epoch"] + 1
    for epoch in range(first_epoch, first.epochs + 1):
        trained = active = [i for i in range(k) if logs[i].running]
        if not active:
            break
        order = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)
        loss_sum = torch.zeros(k, device=device)  # per model, on the device
        clipped = torch.zeros(k, dtype=torch.long, device=device)  # per model, this epoch
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
                epoch_probe_seconds += time.perf_counter() - probe_start
            losses = probes.per_sample_loss(group(x), y).mean(dim=1)  # (K,)
            optimizer.zero_grad(set_to_none=True)
            # A sum, never a mean: model k's gradient is exactly that of its own loss.
            losses.sum().backward()
            if max_norms is not None:
                clipped += clip_group_gradients(group, max_norms)
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
        clipped_steps = [
            c if on else None for c, on in zip(clipped.tolist(), clipping, strict=True)
        ]
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
                clipped_steps[i],
            )
        if run_dirs is not None and epoch < first.epochs:
            running = [i for i in active if logs[i].running]
            save_model_checkpoints(
                run_dirs, configs, running, epoch, step, group, optimizer, generators, logs
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
    resume: bool = False,
) -> list[RunResult]:
    """Train every config in one group; results (and run directories) as `train` gives them.

    With `resume`, the group continues from its runs' checkpoints (written by a group or by
    `train`) to the same results as an uninterrupted group, when every run has one of the same
    epoch; when none has one, it starts afresh. Runs of different epochs are a UsageError:
    `plan_groups` with their epochs puts them in different groups.
    """
    if not configs:
        raise UsageError("a group needs at least one run")
    keys = {group_key(c) for c in configs}
    if len(keys) > 1:
        raise UsageError(f"a group's runs must share {', '.join(SHARED_FIELDS)}")
    for config in configs:
        reason = alone(config)
        if reason is not None:
            raise UsageError(f"{reason}: train it alone, not in a group")
    run_dirs = list(run_dirs) if run_dirs is not None else [None] * len(configs)
    # Equal activations next to each other: one activation call per run of equal names.
    first_seen = {c.activation: i for i, c in reversed(list(enumerate(configs)))}
    order = sorted(range(len(configs)), key=lambda i: (first_seen[configs[i].activation], i))
    device = resolve_device(configs[0].device)
    checkpoints: list[dict[str, Any] | None] = [None] * len(configs)
    if resume:
        # On the CPU: the models are built there, and a generator's state must be a CPU tensor.
        checkpoints = [
            records.load_checkpoint(c, d, torch.device("cpu")) if d is not None else None
            for c, d in zip(configs, run_dirs, strict=True)
        ]
        epochs = [None if c is None else c["epoch"] for c in checkpoints]
        if len(set(epochs)) > 1:
            shown = ", ".join(
                f"{d}: {f'epoch {e}' if e else 'none'}"
                for d, e in zip(run_dirs, epochs, strict=True)
            )
            raise UsageError(
                f"a group resumes from checkpoints of one epoch, these differ ({shown}); "
                "resume runs of different epochs in different groups"
            )
    if dataset is None:
        dataset = load_dataset(configs[0].dataset, data_dir=data_dir, verify=verify)
    writers = []
    try:
        logs = []
        for i in order:
            callback = (lambda row, c=configs[i]: on_epoch(c, row)) if on_epoch else None
            log = RunLog(configs[i], None, callback)
            checkpoint = checkpoints[i]
            if checkpoint is not None:
                log.load_state_dict(checkpoint["log"], checkpoint["path"])
            offset = log.offset if checkpoint is not None else None  # cut back to it
            writers.append(records.open_run(configs[i], run_dirs[i], offset))
            log.writer = writers[-1]
            logs.append(log)
        # Every run has a checkpoint or none has: the epochs check above allows no mix.
        resumed = [c for i in order if (c := checkpoints[i]) is not None] or None
        with denormals_flushed():
            fit_group(
                [configs[i] for i in order],
                dataset,
                device,
                logs,
                on_steps,
                run_dirs=[run_dirs[i] for i in order],
                checkpoints=resumed,
            )
    finally:
        for writer in writers:
            if writer is not None:
                writer.close()
    results: list[RunResult] = [None] * len(configs)  # type: ignore[list-item]
    for i, log in zip(order, logs, strict=True):
        results[i] = records.close_run(log.result(device), run_dirs[i])
    return results
