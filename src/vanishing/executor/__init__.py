"""The one way runs are executed: plan them, check them, then train them here, in child processes
or on Ray.

`compare`, `sweep` and anything else that trains describe their runs (`Run`: a config and its
directory) and call `execute` with a `Policy`; the policy is where they differ:

- planning (`plan`): a finished run (its result.json, for this config) is kept or trained again
  (`keep_finished`, `retry_failed`); an unfinished one continues from its checkpoint or starts
  afresh (`resume`); runs of one shape train together in units of up to `group` models
  (`group.train_group`, the same records as `train`), only runs checkpointed at one epoch together;
- the checks (`preflight`): before anything is written or trains, the policy's values, every unit
  in its device's memory with `workers` of the largest at once (`memory.check_fits`), and the
  batch sizes against the training set. A caller may call `preflight.check` before it loads the
  data (on the training set's registered size); `execute` calls it again on the data it trains on;
- the pool (`pool`): `workers` units at once, each in a forked child with `threads` threads
  (default: the cores shared out). A child dies with its parent, so a killed command leaves no
  orphan training. Without `fork` (not Linux), with one worker or one unit, units train in this
  process (`local`);
- failures (`failures`): "raise" stops everything at the first run that raises (our own errors
  arrive as themselves, anything else as a WorkerError with the child's traceback) or worker that
  dies; "record" writes such runs as failed (result.json with status "failed" and the error) and
  goes on. A record that cannot be written (WriteError, a full disk) always stops everything;
- one writer per run directory: each run trains under its lock (`run_dir/.lock`, an flock the
  kernel drops when its holder dies, so a lock is never stale). With `claim`, executors sharing a
  directory split its runs: a run another holds, or has just finished, is left to it; without,
  a run another process holds is refused (one line naming the directory and the holder's pid)
  before anything is written;
- `backend`: "local" (the above) or "ray" (`ray`): one task per unit on a Ray cluster, which
  trains into temporary directories on its node and returns each run's files (no shared file
  system needed; no resume there).

Measured on 2 cores (a real `compare`, 4 runs, 1 epoch): two one-thread workers took 9.8 s, one
run at a time 12.5 s, a group of 4 13.4 s; so the CPU trains one model per process, a GPU groups.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vanishing.data.datasets import Dataset, load_dataset
from vanishing.executor.local import (
    Callbacks,
    DoneCallback,
    EpochCallback,
    Locks,
    StepsCallback,
    WorkerError,
    error_line,
    run_here,
)
from vanishing.executor.planning import (
    BACKENDS,
    FAILURES,
    MAX_GROUP,
    Policy,
    Run,
    finished_status,
    group_size,
    is_pending,
    plan,
)
from vanishing.executor.pool import pooled, run_pool
from vanishing.executor.preflight import (
    check,
    check_batch_sizes,
    check_memory,
    check_sizes,
    check_workers,
    memory_needed,
    workers_for,
)
from vanishing.executor.ray import run_ray

__all__ = [
    "BACKENDS",
    "FAILURES",
    "MAX_GROUP",
    "Policy",
    "Run",
    "WorkerError",
    "check",
    "check_batch_sizes",
    "check_sizes",
    "check_memory",
    "check_workers",
    "error_line",
    "execute",
    "finished_status",
    "group_size",
    "is_pending",
    "memory_needed",
    "plan",
    "workers_for",
]


def execute(
    runs: Sequence[Run],
    policy: Policy,
    *,
    dataset: Dataset | None = None,
    data_options: dict[str, Any] | None = None,
    on_epoch: EpochCallback | None = None,
    on_steps: StepsCallback | None = None,
    on_done: DoneCallback | None = None,
    stop: threading.Event | None = None,
) -> dict[Path, str]:
    """Train the runs that `policy` says are pending; each trained run's status, by directory.

    Local units share `dataset` (loaded here with `data_options` when not given, and only when
    something is to train); Ray tasks load their own. The callbacks run in this process, children
    or not: `on_epoch(config, row)` per epoch row, `on_steps(count)` as steps are taken,
    `on_done(run, status)` as each run ends. Setting `stop` (a signal handler does) ends training
    between two steps with KeyboardInterrupt, every record whole: the runs left resume later.
    """
    stop = stop or threading.Event()
    # Before anything is written or trains, and before the data loads when it is loaded here.
    units = check(runs, policy, dataset)
    statuses: dict[Path, str] = {}
    if not units:
        return statuses

    def done(run: Run, status: str) -> None:
        statuses[run.run_dir] = status
        if on_done is not None:
            on_done(run, status)

    if policy.backend == "ray":
        run_ray(units, policy, data_options or {}, done, stop)
        return statuses
    if dataset is None:
        dataset = load_dataset(units[0][0].config.dataset, **(data_options or {}))
        configs = [run.config for unit in units for run in unit]
        check_sizes(configs, dataset)
        check_batch_sizes(configs, dataset)
    callbacks = Callbacks(on_epoch, on_steps, stop)
    with Locks() as locks:
        locks.begin(units, policy)  # a run another process holds is refused here, if it is
        if pooled(units, policy):
            run_pool(units, dataset, policy, callbacks, done, stop, locks)
        else:
            run_here(units, dataset, policy, callbacks, done, locks)
    return statuses
