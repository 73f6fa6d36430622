"""Live training jobs: a page's form values parsed as the CLI parses options, and each job's runs
trained through the one executor (`runs.execute`) in a background thread that a stop event ends."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vanishing import executor as runs
from vanishing.data.datasets import Dataset, load_dataset
from vanishing.devices import cores, resolve_device
from vanishing.errors import UsageError
from vanishing.model.mlp import hidden_widths, parse_hidden
from vanishing.settings.config import TrainConfig, check_momentum, settings, value_of
from vanishing.settings.naming import run_name
from vanishing.training import memory

MAX_RUNS = 4  # runs side by side on one page
SHAPE_FIELDS = ("depth", "width")  # instead of `hidden`, as the CLI's --depth/--width


def given(value: Any) -> bool:
    """Whether a form value was filled in: an empty field is left to the default."""
    return value is not None and not (isinstance(value, str) and value.strip() == "")


def whole_number(name: str, value: Any) -> int:
    """--depth or --width's value, from the form's text or a JSON number."""
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    raise UsageError(f"{name}: expected int, got {value!r}")


def parse_config(values: Any) -> TrainConfig:
    """One run's TrainConfig from a form's values (text, or JSON numbers and bools), each parsed
    as the CLI parses its option (`config.value_of`); what is missing takes the default."""
    if not isinstance(values, dict):
        raise UsageError(f"each run must be an object of settings, got {values!r}")
    fields = {setting.name: setting for setting in settings()}
    unknown = sorted(set(values) - set(fields) - set(SHAPE_FIELDS))
    if unknown:
        raise UsageError(
            f"unknown setting(s) {', '.join(unknown)}; known: {', '.join([*fields, *SHAPE_FIELDS])}"
        )
    filled = {name: value for name, value in values.items() if given(value)}
    config: dict[str, Any] = {}
    for name, value in filled.items():
        if name in SHAPE_FIELDS:
            continue
        if name == "hidden":
            hidden = parse_hidden(value) if isinstance(value, str) else value
            if not isinstance(hidden, (list, tuple)):
                raise UsageError(f"hidden: expected widths such as 520,320,240,120, got {value!r}")
            config["hidden"] = hidden
        else:
            config[name] = value_of(fields[name], value, name, text=isinstance(value, str))
    shape = {name: whole_number(name, filled[name]) for name in SHAPE_FIELDS if name in filled}
    if "hidden" in config or shape:
        config["hidden"] = hidden_widths(
            config.get("hidden"), shape.get("depth"), shape.get("width")
        )
    # A form sends every field: momentum counts as given only where it is not the default.
    momentum = config.get("momentum", TrainConfig.momentum)
    check_momentum({**config, "momentum": None if momentum == TrainConfig.momentum else momentum})
    return TrainConfig(**config)


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
    runs: list[runs.Run]
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    state: str = "running"  # then "done", "stopped" or "failed"
    error: str | None = None

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
        self.data_options = data_options or {}
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.datasets: dict[str, Dataset] = {}  # loaded (and verified) once, by the first job
        self.loading = threading.Lock()  # apart from `lock`: a load must not hold up requests

    def policy(self, configs: Sequence[TrainConfig], resume: bool) -> runs.Policy:
        """The executor's policy for a job: on the CPU one single-threaded worker per run, up to
        --workers (default: the cores); on a GPU the runs train in this process, as a group."""
        device = configs[0].device
        on_cpu = resolve_device(device).type == "cpu"
        workers = min(len(configs), self.workers or cores()) if on_cpu else 1
        return runs.Policy(
            workers=workers,
            threads=1 if on_cpu else None,
            group=runs.group_size(device, True, "local"),
            resume=resume,
            keep_finished=True,
            failures="record",
            claim=True,
        )

    def start(self, configs: Sequence[TrainConfig], out: Path, resume: bool) -> Job:
        """Check and start a job training `configs` into `out/<run name>`; refused with a
        UsageError (memory) or a RuntimeError (too many jobs running)."""
        for config in configs:  # each run alone; the executor checks the workers at once
            memory.check_fits([config], resolve_device(config.device))
        policy = self.policy(configs, resume)
        unique = {run_name(c): c for c in configs}  # the same setting twice is one run
        job_runs = [runs.Run(config, out / name) for name, config in unique.items()]
        with self.lock:
            running = sum(job.active for job in self.jobs.values())
            if running >= self.max_jobs:
                raise RuntimeError(
                    f"{running} job(s) already training, one per core ({self.max_jobs}): stop "
                    "one first"
                )
            for run in job_runs:
                run.run_dir.mkdir(parents=True, exist_ok=True)
            job = Job(secrets.token_hex(4), job_runs)
            job.thread = threading.Thread(
                target=self.train, args=(job, policy), name=f"live-job-{job.id}", daemon=True
            )
            self.jobs[job.id] = job
            job.thread.start()
        return job

    def train(self, job: Job, policy: runs.Policy) -> None:
        """A job's thread: its runs through the executor, its end state recorded."""
        try:
            dataset = self.dataset(job.runs[0].config.dataset)  # the executor's: the first run's
            runs.execute(job.runs, policy, dataset=dataset, stop=job.stop)
        except KeyboardInterrupt:  # the stop event, heard between two steps
            job.state = "stopped"
        except UsageError as e:
            job.state, job.error = "failed", str(e)
        except Exception as e:  # a WriteError or a worker's death: said, not raised in a thread
            job.state, job.error = "failed", runs.error_line(e)
        else:
            job.state = "stopped" if job.stop.is_set() else "done"

    def dataset(self, name: str) -> Dataset:
        """The data set, loaded by the first job that needs it (in its thread), then shared."""
        with self.loading:
            if name not in self.datasets:
                self.datasets[name] = load_dataset(name, **self.data_options)
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
