"""`train`: one run with any settings, its records in a directory named by those settings."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from vanishing import records
from vanishing.data.datasets import Dataset
from vanishing.errors import UsageError
from vanishing.executor import Policy, Run
from vanishing.jobs.common import (
    NO_OPTIONS,
    DataOptions,
    Interrupted,
    Outcome,
    Progress,
    interruption,
    run_dir_of,
    train_runs,
)
from vanishing.records import RunResult
from vanishing.settings.config import TrainConfig

DEFAULT_OUT = Path("runs/train")


def interrupted(out: Path, runs: Sequence[Run]) -> Interrupted:
    """The interruption of a train or compare job: what was kept of its runs, and how to go
    on (from the command line or from Python)."""
    saved = sum((run.run_dir / records.CHECKPOINT).is_file() for run in runs)
    return Interrupted(
        f"interrupted; {saved} unfinished run(s) in {out} have a checkpoint (the last epoch "
        "end); run the same command with --resume (from Python: resume=True) to continue"
    )


def train(
    config: TrainConfig,
    out: Path | str = DEFAULT_OUT,
    *,
    resume: bool = False,
    detect_anomaly: bool = False,
    data: DataOptions | Callable[[str], Dataset] = NO_OPTIONS,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> tuple[Outcome, RunResult]:
    """Train one run in this process into `out`/<its name>; the job's outcome and the run's
    result. With `resume`, a finished run is read back and an unfinished one continues from its
    checkpoint; without, it starts afresh. Stopped (`stop`), it raises `Interrupted`."""
    out = Path(out)
    run = Run(config, run_dir_of(config, out))
    policy = Policy(resume=resume, keep_finished=resume)
    with interruption(lambda: interrupted(out, [run])):
        statuses = train_runs(
            [run],
            policy,
            out=out,
            data=data,
            progress=progress,
            stop=stop,
            detect_anomaly=detect_anomaly,
        )
    result = records.load_result(config, run.run_dir)
    if result is None:  # kept as finished, but failed (the live page records failures)
        saved = records.read_result(run.run_dir) or {}
        raise UsageError(
            f"{run.run_dir} holds a run that failed ({saved.get('error')}); "
            "run without --resume to train it again"
        )
    return Outcome(out, [run], statuses, skipped=int(not statuses)), result
