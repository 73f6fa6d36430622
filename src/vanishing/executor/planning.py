"""Planning: the runs to execute and how (`Run`, `Policy`), which are still to train, in what units.

A finished run (its result.json, for this config) is kept or trained again (`keep_finished`,
`retry_failed`); an unfinished one continues from its checkpoint or starts afresh (`resume`); runs
of one shape train together in units of up to `group` models (`group.train_group`, the same
records as `train`), only runs checkpointed at one epoch together. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vanishing import records
from vanishing.devices import resolve_device
from vanishing.errors import UsageError
from vanishing.settings.config import TrainConfig
from vanishing.training.group import plan_groups

FAILURES = ("raise", "record")
BACKENDS = ("local", "ray")
# Most models one unit trains at once, per device type. A group amortises the per-step overhead
# (Python, dispatch, kernel launches, the optimizer call) over K models: on a GPU that is nearly
# all of a small MLP's step; on the CPU the step is arithmetic already (see the package docstring).
MAX_GROUP = {"cpu": 1, "cuda": 64, "mps": 16}


@dataclass(frozen=True)
class Run:
    """One run to execute: its settings and the directory its records go to."""

    config: TrainConfig
    run_dir: Path


@dataclass(frozen=True)
class Policy:
    """How `execute` plans and runs (the package docstring says what each choice means; the
    values are checked by `preflight.check_policy`, which `execute` calls first)."""

    workers: int = 1  # units trained at once; above 1, each in a forked child
    threads: int | None = None  # per child; None: the cores shared out among the children
    group: int = 1  # most runs one unit trains together
    resume: bool = False  # continue unfinished runs from their checkpoints
    keep_finished: bool = False  # a finished run is not trained again...
    retry_failed: bool = False  # ...unless it failed or diverged
    failures: str = "raise"  # or "record"
    claim: bool = False  # leave a run another process holds to it (else: refuse it)
    backend: str = "local"  # or "ray"
    address: str | None = None  # the Ray cluster's (None: a local one)


def group_size(device: str, group: bool | int = True, backend: str = "local") -> int:
    """The most runs one unit trains together: `group` when it is a number, 1 for False, else the
    device's MAX_GROUP (for Ray, the workers' device as named: `auto` counts as the CPU)."""
    if group is not True:
        return max(1, int(group))
    kind = device if backend == "ray" else resolve_device(device).type
    return MAX_GROUP.get(kind, 1)


def finished_status(run: Run) -> str | None:
    """The status in the run's result.json when it is this config's (device aside), else None."""
    result = records.read_result(run.run_dir)  # None too when it holds no result
    if result is None or not records.same_config(result["config"], run.config):
        return None
    status = result.get("status")
    return status if isinstance(status, str) else None


def is_pending(run: Run, policy: Policy) -> bool:
    """Whether the run is still to train under `policy`."""
    if not policy.keep_finished:
        return True
    status = finished_status(run)
    return status is None or (policy.retry_failed and status in ("failed", "diverged"))


def checkpoint_epoch(run: Run) -> int | None:
    """The epoch of the run's checkpoint (one of another config is a UsageError), None if none."""
    checkpoint = records.load_checkpoint(run.config, run.run_dir, torch.device("cpu"))
    return None if checkpoint is None else checkpoint["epoch"]


def plan(runs: Sequence[Run], policy: Policy) -> list[list[Run]]:
    """The runs still to train, in units that train together (`plan_groups`): with `resume`, only
    runs checkpointed at one epoch share a unit, and every checkpoint is read here, before any
    training. A run whose checkpoint cannot be read (or is another config's) is a UsageError, or,
    when failures are recorded, a unit of its own (where training records why)."""
    todo = [run for run in runs if is_pending(run, policy)]
    if not policy.resume or policy.backend == "ray":  # every run starts afresh
        return plan_units(todo, policy.group, [None] * len(todo))
    planned, epochs, alone = [], [], []
    for run in todo:
        try:
            epochs.append(checkpoint_epoch(run))
            planned.append(run)
        except UsageError:
            if policy.failures == "raise":
                raise
            alone.append([run])
    return plan_units(planned, policy.group, epochs) + alone


def plan_units(runs: Sequence[Run], size: int, epochs: Sequence[int | None]) -> list[list[Run]]:
    """`plan_groups` over runs."""
    groups = plan_groups([run.config for run in runs], size, epochs)
    return [[runs[i] for i in members] for members in groups]
