"""What every job shares: where its data comes from, what it tells its front door as it goes, how
it ends when stopped, what it returns, and its middle part (`train_runs`: the checks, one data
load, the executor).

A job never prints and never installs signal handlers: its front door (the command line, the
Python API, the live page) passes a `Progress` to hear from it and a stop event to end it.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vanishing import records
from vanishing.data import sequences
from vanishing.data.datasets import Dataset, load_dataset
from vanishing.devices import resolve_device
from vanishing.errors import UsageError
from vanishing.executor import Policy, Run, check, execute, is_pending
from vanishing.records import RunResult
from vanishing.settings.config import TrainConfig
from vanishing.settings.naming import compare_run_name, run_name


@dataclass(frozen=True)
class DataOptions:
    """Where a job's data set comes from: your own copy (`data_dir`, default
    $VANISHING_DATA), the cache of verified data sets (`cache_dir`, default $VANISHING_CACHE or
    ~/.cache/vanishing), and whether its MD5s must match the canonical files (`verify`)."""

    data_dir: str | Path | None = None
    cache_dir: str | Path | None = None
    verify: bool = True

    def load(self, name: str, note: Callable[[str], None] | None = None) -> Dataset:
        """The data set `name`, found, verified and cached; `note` hears where it came from."""
        return load_dataset(
            name, data_dir=self.data_dir, cache_dir=self.cache_dir, verify=self.verify, report=note
        )

    def to_dict(self) -> dict[str, Any]:
        """As `load_dataset`'s keyword arguments (what a Ray task loads its own copy with)."""
        return {"data_dir": self.data_dir, "cache_dir": self.cache_dir, "verify": self.verify}


NO_OPTIONS = DataOptions()  # the defaults: $VANISHING_DATA, the cache, verified


class Progress:
    """What a job tells its front door as it goes; each method does nothing unless overridden."""

    def note(self, message: str) -> None:
        """A line of provenance: where the data came from, how many runs are already done."""

    def planned(self, total: int, skipped: int, steps: int) -> None:
        """Before training: the job's runs, how many of them are finished already, and the
        optimisation steps its runs take in all."""

    def epoch(self, config: TrainConfig, row: dict[str, Any]) -> None:
        """A run finished an epoch (its epoch row, as metrics.jsonl has it)."""

    def steps(self, count: int) -> None:
        """`count` more optimisation steps were taken."""

    def finished(self, run: Run, status: str) -> None:
        """A run ended: ok, diverged or failed."""


class Interrupted(KeyboardInterrupt):
    """A job stopped by its stop event (Ctrl-C, SIGTERM, the page's Stop button) between two
    steps, every record whole; the message says what was kept and how to resume."""


@contextlib.contextmanager
def interruption(said: Callable[[], Interrupted]) -> Iterator[None]:
    """A job's Ctrl-C (a KeyboardInterrupt that is not yet an `Interrupted`) becomes the job's
    own `Interrupted`, `said()`: what it kept and how to go on."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise said() from None


@dataclass
class Outcome:
    """What a job did: every run it was given (in order), the statuses of those it trained now,
    and what it wrote besides the runs."""

    out: Path
    runs: list[Run]
    statuses: dict[Path, str] = field(default_factory=dict)  # trained now, by directory
    skipped: int = 0  # finished before this job
    table: str | None = None  # the printed summary table (compare)
    rows: list[dict[str, Any]] = field(default_factory=list)  # runs.csv's rows (sweep)
    report: Path | None = None  # report.html (compare, sweep)

    @property
    def run_dirs(self) -> list[Path]:
        return [run.run_dir for run in self.runs]

    @property
    def configs(self) -> list[TrainConfig]:
        return [run.config for run in self.runs]

    @property
    def ran(self) -> int:
        """How many runs trained now (ended ok, diverged or failed)."""
        return len(self.statuses)

    def results(self) -> list[RunResult]:
        """The results of the finished runs among the job's (failed runs have none), as their
        result.json files say."""
        results = []
        for run in self.runs:
            saved = records.read_result(run.run_dir)
            if saved is None or saved.get("status") == "failed":
                continue
            result = records.load_result(run.config, run.run_dir)
            if result is not None:
                results.append(result)
        return results


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


def run_dir_of(config: TrainConfig, out: Path) -> Path:
    """Where `config`'s run goes under `out` (train, compare): a directory named by its settings
    (`run_name`), so that two settings never share one. Older versions named it
    ACTIVATION-seedSEED: such a directory holding this very config is used instead, so that it
    resumes and is kept."""
    legacy = out / compare_run_name(config)
    path = legacy / records.CONFIG
    if not (out / run_name(config)).exists() and path.is_file():
        try:
            saved = records.read_json(path)
        except (OSError, ValueError):
            saved = None
        is_run = isinstance(saved, dict) and saved.get("source") != "watch"
        if is_run and not config.differences(saved):
            return legacy
    return out / run_name(config)


def check_shared(configs: Sequence[TrainConfig]) -> None:
    """A job's runs share one data set (loaded once) and one device (its workers are the
    device's): runs that differ in either are separate jobs."""
    for name in ("dataset", "device"):
        values = list(dict.fromkeys(getattr(c, name) for c in configs))
        if len(values) > 1:
            raise UsageError(
                f"the runs of one job share one {name}, got {', '.join(values)}: start a job "
                f"for each {name}"
            )


def steps_of(configs: Sequence[TrainConfig], dataset: Dataset | None) -> int:
    """The optimisation steps the configs' runs take in all on `dataset` (none loaded: 0)."""
    if dataset is None:
        return 0
    return sum(
        -(-sequences.examples(dataset, "train", c) // c.batch_size) * c.epochs for c in configs
    )


def train_runs(
    runs: Sequence[Run],
    policy: Policy,
    *,
    out: Path,
    data: DataOptions | Callable[[str], Dataset] = NO_OPTIONS,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    detect_anomaly: bool = False,
    prepare: Callable[[], None] | None = None,
) -> dict[Path, str]:
    """The middle of every job: refuse what cannot run (before the data loads and before `out`,
    where the runs' directories are, is written), load the data once, train what `policy` says
    is pending through the executor; each trained run's status.

    `data` says where the data set comes from, or is a function that returns it (the live page
    keeps the sets it loaded). `prepare` runs once everything is checked and loaded, before
    anything trains (a sweep writes sweep.json there). Setting `stop` ends training between two
    steps with KeyboardInterrupt, every record whole.
    """
    import torch

    progress = progress or Progress()
    configs = [run.config for run in runs]
    check_shared(configs)
    for device in dict.fromkeys(c.device for c in configs):
        resolve_device(device)  # a missing GPU is an error before anything else
    if len({run.run_dir for run in runs}) < len(runs):
        raise UsageError("two runs of one job would share a directory: give each its own settings")
    check(runs, policy)  # before the data loads (on its registered size)
    ensure_writable(out)
    skipped = sum(not is_pending(run, policy) for run in runs)
    dataset = None
    if policy.backend == "local" and skipped < len(runs):
        name = configs[0].dataset
        dataset = data.load(name, progress.note) if isinstance(data, DataOptions) else data(name)
    if dataset is not None:
        check(runs, policy, dataset)  # on the data itself: its size, the batches
    if prepare is not None:
        prepare()
    progress.planned(len(runs), skipped, steps_of(configs, dataset))
    anomaly = torch.autograd.set_detect_anomaly(True) if detect_anomaly else None
    with anomaly or contextlib.nullcontext():
        return execute(
            runs,
            policy,
            dataset=dataset,
            data_options=data.to_dict() if isinstance(data, DataOptions) else None,
            on_epoch=progress.epoch,
            on_steps=progress.steps,
            on_done=progress.finished,
            stop=stop,
        )
