"""`compare`, the main job: the same MLP once per activation and seed, then the summary table
(printed and summary.csv) and the report, read back from the runs' records."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from vanishing.data.datasets import Dataset
from vanishing.executor import Policy, Run, group_size, workers_for
from vanishing.jobs.common import (
    NO_OPTIONS,
    DataOptions,
    Outcome,
    Progress,
    interruption,
    run_dir_of,
    train_runs,
)
from vanishing.jobs.train import interrupted
from vanishing.settings.config import TrainConfig

DEFAULT_OUT = Path("runs/compare")
AXES = ("activation", "seed")  # what a comparison's runs differ in


def compare(
    configs: Sequence[TrainConfig],
    out: Path | str = DEFAULT_OUT,
    *,
    workers: int | None = None,
    group: bool | int = True,
    resume: bool = False,
    detect_anomaly: bool = False,
    data: DataOptions | Callable[[str], Dataset] = NO_OPTIONS,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> Outcome:
    """Train every config (one per activation and seed, the rest shared) into a directory of
    `out` named by its settings (`jobs.common.run_dir_of`: runs of other settings never share
    one), then write summary.csv and report.html there, of these runs; the outcome holds the
    summary table.

    Runs go through the executor: on the CPU `workers` runs at once, each in a forked child
    (default: one per core); on a GPU runs of one shape train together in groups of up to
    `executor.group_size` (`group` a number caps it; False: one at a time). With `resume`,
    finished runs are read back and unfinished ones continue from their checkpoints; without,
    every run starts afresh. The first run that fails stops the comparison; stopped (`stop`), it
    raises `Interrupted`.
    """
    out = Path(out)
    configs = list(configs)
    device = configs[0].device
    count = workers_for(device, workers)
    runs = [Run(config, run_dir_of(config, out)) for config in configs]
    policy = Policy(
        workers=count, group=group_size(device, group), resume=resume, keep_finished=resume
    )
    with interruption(lambda: interrupted(out, runs)):
        statuses = train_runs(
            runs,
            policy,
            out=out,
            data=data,
            progress=progress,
            stop=stop,
            detect_anomaly=detect_anomaly,
        )
    # The table and the report read back exactly these runs' records (matplotlib, scipy and
    # jinja2 load only here).
    from vanishing.reporting import loading, summary, write_report

    run_dirs = [run.run_dir for run in runs]
    records, _ = loading.load_runs(run_dirs)
    rows = summary.summary_rows(records)
    summary.write_summary_csv(out / "summary.csv", rows)
    html, _ = write_report(run_dirs, out / "report.html")
    return Outcome(
        out,
        runs,
        statuses,
        skipped=len(runs) - len(statuses),
        table=summary.format_summary(rows),
        report=html,
    )
