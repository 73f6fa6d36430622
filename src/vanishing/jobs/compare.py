"""The main job: train the same MLP with several activations and seeds, then summarise."""

from __future__ import annotations

import dataclasses
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vanishing import records
from vanishing.data.datasets import Dataset
from vanishing.errors import UsageError
from vanishing.executor import Policy, Run, execute, group_size
from vanishing.records import RunResult
from vanishing.settings.config import TrainConfig
from vanishing.settings.naming import compare_run_name


def ensure_writable(out: Path) -> Path:
    """Create the output directory, or fail with a clear message before any training starts.

    The test file has a name of its own (two commands may start on one directory at once)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UsageError(f"cannot write to output directory {out}: {e.strerror or e}") from None
    return out


def compare(
    base: TrainConfig,
    activations: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    dataset: Dataset,
    on_epoch: Callable[[TrainConfig, dict[str, Any]], None] | None = None,
    on_steps: Callable[[int], None] | None = None,
    group: bool | int = True,
    resume: bool = False,
    workers: int = 1,
    stop: threading.Event | None = None,
) -> list[RunResult]:
    """Train `base` once per activation and seed; each run gets its own directory under `out`.

    The runs go through the executor (`runs.execute`): runs of one shape train together in
    groups of up to `runs.group_size` for the device (1 on the CPU), or of up to `group` when it
    is a number (False: one at a time), `workers` units at once, each in a forked process. With
    `resume`, finished runs are read back and unfinished ones continue from their checkpoints;
    without, every run starts afresh. The first run that fails stops the comparison. An unknown
    activation is refused by `TrainConfig` before anything trains.
    """
    configs = [dataclasses.replace(base, activation=a, seed=s) for a in activations for s in seeds]
    runs = [Run(config, Path(out) / compare_run_name(config)) for config in configs]
    policy = Policy(
        workers=workers,
        group=group_size(base.device, group),
        resume=resume,
        keep_finished=resume,
    )
    execute(runs, policy, dataset=dataset, on_epoch=on_epoch, on_steps=on_steps, stop=stop)
    results = [records.load_result(run.config, run.run_dir) for run in runs]
    # Every run either finished (now or before) or raised: compare's failures stop it.
    return [result for result in results if result is not None]
