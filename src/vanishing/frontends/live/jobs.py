"""Live training jobs: a page's form values parsed by the one settings parser (`settings.codec`,
as the command line's options are), and each job's runs trained by the live page's job
(`jobs.live`) in a background thread that a stop event ends."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vanishing import executor
from vanishing.data.datasets import Dataset
from vanishing.devices import cores
from vanishing.errors import UsageError
from vanishing.jobs.common import DataOptions
from vanishing.jobs.live import LiveRuns, live_runs
from vanishing.settings import codec
from vanishing.settings.config import TrainConfig

MAX_RUNS = 4  # runs side by side on one page


def parse_config(values: Any) -> TrainConfig:
    """One run's TrainConfig from a form's values (text, or JSON numbers and bools), parsed as
    the command line's options are (`codec.config`); an empty field takes the default."""
    if not isinstance(values, dict):
        raise UsageError(f"each run must be an object of settings, got {values!r}")
    # A form sends every field: an empty one is left to the default.
    return codec.config({k: v for k, v in values.items() if not empty(v)})


def empty(value: Any) -> bool:
    """A form's empty field: nothing, or blank text."""
    return value is None or (isinstance(value, str) and value.strip() == "")


def parse_request(body: Any) -> tuple[list[TrainConfig], bool]:
    """POST /api/runs's body: 1 to MAX_RUNS runs' configs and whether to resume them."""
    if not isinstance(body, dict):
        raise UsageError('expected a JSON object {"runs": [...], "resume": false}')
    unknown = sorted(set(body) - {"runs", "resume"})
    if unknown:
        raise UsageError(f"unknown key(s) {', '.join(unknown)}; expected runs and resume")
    items, resume = body.get("runs"), body.get("resume", False)
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_RUNS:
        count = len(items) if isinstance(items, list) else items
        raise UsageError(f"give 1 to {MAX_RUNS} runs at once, got {count!r}")
    if not isinstance(resume, bool):
        raise UsageError(f"resume: expected true or false, got {resume!r}")
    return [parse_config(item) for item in items], resume


@dataclass
class Job:
    """Runs started together by one request, training in one thread."""

    id: str
    runs: list[executor.Run]
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    state: str = "running"  # then "done", "stopped" or "failed"
    error: str | None = None
    memory: dict[torch.device, int] = field(default_factory=dict)  # LiveRuns.memory

    @property
    def active(self) -> bool:
        return self.state == "running"

    def summary(self, paths: Sequence[str]) -> dict[str, Any]:
        state = "stopping" if self.active and self.stop.is_set() else self.state
        return {"job": self.id, "state": state, "runs": list(paths), "error": self.error}


class Jobs:
    """Every job this server started; at most `max_jobs` running at once.

    Each job trains in a thread of its own. The server's main thread must run no parallel torch
    code (nothing wide enough for a thread pool): once one thread has started GNU OpenMP's pool,
    training in any other thread ran at half speed (measured: 3.3 s against 1.5 s an epoch). A
    fresh thread per job is at full speed.
    """

    def __init__(
        self,
        workers: int | None = None,
        max_jobs: int | None = None,
        data_options: dict[str, Any] | None = None,
    ) -> None:
        self.workers = workers
        self.max_jobs = max_jobs or cores()
        options = dict(data_options or {})
        self.note = options.pop("report", None)  # where a data set's provenance is said
        self.data = DataOptions(**options)
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.datasets: dict[str, Dataset] = {}  # loaded (and verified) once, by the first job
        self.loading = threading.Lock()  # apart from `lock`: a load must not hold up requests

    def start(self, configs: Sequence[TrainConfig], out: Path, resume: bool) -> Job:
        """Check and start a job training `configs` into `out/<run name>`; refused with a
        UsageError (memory, counting what the jobs already training need) or a RuntimeError
        (too many jobs running)."""
        with self.lock:  # one start at a time: each counts the jobs started before it
            reserved: dict[torch.device, int] = {}
            for other in self.jobs.values():
                if other.active:
                    for device, needed in other.memory.items():
                        reserved[device] = reserved.get(device, 0) + needed
            ready = live_runs(configs, out, resume, self.workers, reserved)
            running = sum(job.active for job in self.jobs.values())
            if running >= self.max_jobs:
                raise RuntimeError(
                    f"{running} job(s) already training, one per core ({self.max_jobs}): stop "
                    "one first"
                )
            for run in ready.runs:
                run.run_dir.mkdir(parents=True, exist_ok=True)
            job = Job(secrets.token_hex(4), ready.runs, memory=ready.memory)
            job.thread = threading.Thread(
                target=self.train, args=(job, ready), name=f"live-job-{job.id}", daemon=True
            )
            self.jobs[job.id] = job
            job.thread.start()
        return job

    def train(self, job: Job, ready: LiveRuns) -> None:
        """A job's thread: its runs through the live page's job, its end state recorded."""
        try:
            ready.train(self.dataset, job.stop)
        except KeyboardInterrupt:  # the stop event, heard between two steps
            job.state = "stopped"
        except UsageError as e:
            job.state, job.error = "failed", str(e)
        except Exception as e:  # a WriteError or a worker's death: said, not raised in a thread
            job.state, job.error = "failed", executor.error_line(e)
        else:
            job.state = "stopped" if job.stop.is_set() else "done"

    def dataset(self, name: str) -> Dataset:
        """The data set, loaded by the first job that needs it (in its thread), then shared."""
        with self.loading:
            if name not in self.datasets:
                self.datasets[name] = self.data.load(name, self.note)
            return self.datasets[name]

    def stop(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        if job is not None:
            job.stop.set()
        return job

    def latest(self, run_dir: Path) -> Job | None:
        """The last job started on `run_dir`, if any."""
        found = None
        for job in list(self.jobs.values()):
            if any(run.run_dir == run_dir for run in job.runs):
                found = job
        return found

    def close(self, timeout: float | None = None) -> None:
        """Stop every job and wait for its thread: the executor kills its children, every run
        left unfinished keeps its checkpoint to resume."""
        for job in list(self.jobs.values()):
            job.stop.set()
        for job in list(self.jobs.values()):
            if job.thread is not None:
                job.thread.join(timeout)
