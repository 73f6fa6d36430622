"""`sweep`: every run of a grid that has not finished yet, then runs.csv, points.csv, pairs.csv
and the report.

A sweep directory holds one run directory per grid point and seed, named from its config
(`settings.naming.run_name`: readable parts plus a stable hash), so the same config is never run
twice. The runs go through the one executor: finished runs are kept, unfinished ones continue
from their checkpoints (a sweep is meant to be resumed), a run that raises is recorded with
status "failed" and its error and one that diverges with "diverged" (neither stops the sweep),
and each run is locked while it trains, so that sweeps sharing a directory split its runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from vanishing import records
from vanishing.data.datasets import Dataset
from vanishing.executor import Policy, Run, group_size, workers_for
from vanishing.jobs.common import (
    NO_OPTIONS,
    DataOptions,
    Interrupted,
    Outcome,
    Progress,
    interruption,
    train_runs,
)
from vanishing.settings.grid import SweepSpec, expand
from vanishing.settings.naming import run_name

SWEEP_FILE = "sweep.json"  # the grid, written into the sweep's directory


def default_out(name: str) -> Path:
    """Where a sweep named `name` (its preset, its TOML file's stem, or `grid`) goes."""
    return Path(f"runs/sweep-{name}")


def interrupted(out: Path, runs: Sequence[Run]) -> Interrupted:
    """A sweep's interruption: its finished runs are kept, and the same command resumes it."""
    done = sum(records.is_complete(run.run_dir) for run in runs)
    return Interrupted(
        f"interrupted, {done} run(s) finished in {out}; run the same command again to resume"
    )


def sweep(
    spec: SweepSpec,
    out: Path | str,
    *,
    workers: int | None = None,
    backend: str = "local",
    address: str | None = None,
    retry_failed: bool = False,
    resume: bool = True,
    group: bool | int = True,
    data: DataOptions | Callable[[str], Dataset] = NO_OPTIONS,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> Outcome:
    """Run every unfinished run of the grid into `out`, then write its CSVs and report.

    Local runs share one data set; Ray tasks (`backend="ray"`, a cluster at `address`) load
    their own. `workers` local processes train one run each (default: one per core); on a GPU
    runs of one shape train together in units of up to `executor.group_size` (`group` a number caps
    it, False: one at a time). With `resume` (the default) unfinished local runs continue from
    their checkpoints; `retry_failed` trains failed and diverged runs again. Runs that a
    concurrent sweep on the same directory holds are left to it. Stopped (`stop`), it raises
    `Interrupted`, every finished run kept.
    """
    out = Path(out)
    count = workers_for(spec.device, workers, backend)  # before anything is written
    policy = Policy(
        workers=count,
        threads=1,  # a sweep's children use one thread each: more runs at once, not faster ones
        group=group_size(spec.device, group, backend),
        resume=resume,
        keep_finished=True,
        retry_failed=retry_failed,
        failures="record",
        claim=True,
        backend=backend,
        address=address,
    )
    runs = [Run(config, out / run_name(config)) for config in expand(spec)]
    with interruption(lambda: interrupted(out, runs)):
        statuses = train_runs(
            runs,
            policy,
            out=out,
            data=data,
            progress=progress,
            stop=stop,
            prepare=lambda: records.write_json(out / SWEEP_FILE, spec.to_dict()),
        )
    # matplotlib and scipy load only when the tables and the report are drawn
    from vanishing.reporting import summary, write_report

    run_dirs = [run.run_dir for run in runs]
    rows = summary.tabulate(out, run_dirs)
    html, _ = write_report([out], out / "report.html")
    return Outcome(out, runs, statuses, len(runs) - len(statuses), rows=rows, report=html)
