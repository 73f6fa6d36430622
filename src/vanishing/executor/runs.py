"""The one way runs are executed: plan them, then train them here, in child processes or on Ray.

`compare`, `sweep` and anything else that trains describe their runs (`Run`: a config and its
directory) and call `execute` with a `Policy`; the policy is where they differ:

- planning: a finished run (its result.json, for this config) is kept or trained again
  (`keep_finished`, `retry_failed`); an unfinished one continues from its checkpoint or starts
  afresh (`resume`); runs of one shape train together in units of up to `group` models
  (`group.train_group`, the same records as `train`), only runs checkpointed at one epoch together;
- the pool: `workers` units at once, each in a forked child with `threads` threads (default: the
  cores shared out). A child dies with its parent, so a killed command leaves no orphan training.
  Without `fork` (not Linux), with one worker or one unit, units train in this process;
- failures (`failures`): "raise" stops everything at the first run that raises (our own errors
  arrive as themselves, anything else as a WorkerError with the child's traceback) or worker that
  dies; "record" writes such runs as failed (result.json with status "failed" and the error) and
  goes on. A record that cannot be written (WriteError, a full disk) always stops everything;
- sharing (`claim`): each run is locked while it trains (`run_dir/.lock`, an flock the kernel
  drops when its holder dies, so a lock is never stale), so executors sharing a directory split
  its runs; a run another holds, or has just finished, is left to it;
- memory: before anything is written or trains, every unit is checked to fit on its device,
  `workers` of the largest at once (`check_memory`, `memory.check_fits`): one that cannot is a
  UsageError. A `dataset` given to `execute` was loaded by the caller (the CLI checks each run
  alone before it loads one for `train` and `compare`), and its training set's size caps the
  batches; without one, the check comes before `execute` loads the data;
- `backend`: "local" (the above) or "ray": one task per unit on a Ray cluster, which trains into
  temporary directories on its node and returns each run's files (no shared file system needed;
  no resume there).

Measured on 2 cores (a real `compare`, 4 runs, 1 epoch): two one-thread workers took 9.8 s, one
run at a time 12.5 s, a group of 4 13.4 s; so the CPU trains one model per process, a GPU groups.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, cast

import torch

from vanishing import records
from vanishing.data.datasets import Dataset, load_dataset
from vanishing.devices import cores, resolve_device
from vanishing.errors import DataError, UsageError, choices_error
from vanishing.settings.config import TrainConfig
from vanishing.training.group import plan_groups, train_group
from vanishing.training.loop import check_batch_norm, train, versions
from vanishing.training.memory import check_fits

FAILURES = ("raise", "record")
BACKENDS = ("local", "ray")
# Most models one unit trains at once, per device type. A group amortises the per-step overhead
# (Python, dispatch, kernel launches, the optimizer call) over K models: on a GPU that is nearly
# all of a small MLP's step; on the CPU the step is arithmetic already (see the module docstring).
MAX_GROUP = {"cpu": 1, "cuda": 64, "mps": 16}
# Our own errors cross from a child as themselves (the CLI makes them one line); others do not.
KNOWN_ERRORS = (UsageError, DataError, records.WriteError)
PR_SET_PDEATHSIG = 1  # prctl(2)


class WorkerError(RuntimeError):
    """A worker died, or raised something that is not the user's fault (its traceback inside)."""


@dataclass(frozen=True)
class Run:
    """One run to execute: its settings and the directory its records go to."""

    config: TrainConfig
    run_dir: Path


@dataclass(frozen=True)
class Policy:
    """How `execute` plans and runs (the module docstring says what each choice means)."""

    workers: int = 1  # units trained at once; above 1, each in a forked child
    threads: int | None = None  # per child; None: the cores shared out among the children
    group: int = 1  # most runs one unit trains together
    resume: bool = False  # continue unfinished runs from their checkpoints
    keep_finished: bool = False  # a finished run is not trained again...
    retry_failed: bool = False  # ...unless it failed or diverged
    failures: str = "raise"  # or "record"
    claim: bool = False  # lock each run while it trains
    backend: str = "local"  # or "ray"
    address: str | None = None  # the Ray cluster's (None: a local one)

    def __post_init__(self) -> None:
        if self.failures not in FAILURES:
            raise choices_error("failure policy", self.failures, FAILURES)
        if self.backend not in BACKENDS:
            raise choices_error("backend", self.backend, BACKENDS)
        if self.workers < 1:
            raise UsageError(f"--workers must be >= 1, got {self.workers}")
        if self.group < 1:
            raise UsageError(f"group size must be >= 1, got {self.group!r}")


EpochCallback = Callable[[TrainConfig, dict[str, Any]], None]
StepsCallback = Callable[[int], None]
DoneCallback = Callable[[Run, str], None]


def workers_for(device: str, workers: int | None, backend: str = "local") -> int:
    """How many units train at once on `device` (`auto` resolved): `workers`, by default one per
    core on the CPU. A GPU's runs train in this one process (several as a group): a forked child
    cannot use CUDA once the parent has asked whether there is any. Ray places its tasks itself
    (the count is not used)."""
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if backend not in BACKENDS:
        raise choices_error("backend", backend, BACKENDS)
    if backend == "ray":
        return workers or 1
    if resolve_device(device).type == "cpu":
        return workers or cores()
    if workers is not None and workers > 1:
        raise UsageError(
            f"--workers {workers}: on a GPU the runs train in one process (runs of one shape "
            "together, as a group); more workers need --device cpu"
        )
    return 1


def group_size(device: str, group: bool | int = True, backend: str = "local") -> int:
    """The most runs one unit trains together: `group` when it is a number, 1 for False, else the
    device's MAX_GROUP (for Ray, the workers' device as named: `auto` counts as the CPU)."""
    if group is not True:
        return max(1, int(group))
    kind = device if backend == "ray" else resolve_device(device).type
    return MAX_GROUP.get(kind, 1)


def finished_status(run: Run) -> str | None:
    """The status in the run's result.json when it is this config's (device aside), else None."""
    path = run.run_dir / records.RESULT
    if not path.is_file():
        return None
    try:
        result = records.read_json(path)
    except (OSError, ValueError):
        return None
    if not records.same_config(result.get("config", {}), run.config):
        return None
    return result.get("status")


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
    units = plan(runs, policy)
    statuses: dict[Path, str] = {}
    if not units:
        return statuses
    # Before anything is written or trains, and before the data loads when it is loaded here.
    check_memory(units, policy, len(dataset.train_labels) if dataset is not None else None)

    def done(run: Run, status: str) -> None:
        statuses[run.run_dir] = status
        if on_done is not None:
            on_done(run, status)

    if policy.backend == "ray":
        run_ray(units, policy, data_options or {}, done, stop)
        return statuses
    if dataset is None:
        dataset = load_dataset(units[0][0].config.dataset, **(data_options or {}))
    check_batch_sizes([run.config for unit in units for run in unit], dataset)
    callbacks = Callbacks(on_epoch, on_steps, stop)
    if policy.workers <= 1 or len(units) <= 1 or not can_fork():
        for unit in units:
            with Claim(unit, policy) as members:
                if members:
                    for run, status in zip(
                        members, train_unit(members, dataset, policy, callbacks), strict=True
                    ):
                        done(run, status)
        return statuses
    run_pool(units, dataset, policy, callbacks, done, stop)
    return statuses


def check_memory(
    units: Sequence[Sequence[Run]], policy: Policy, train_samples: int | None = None
) -> None:
    """Refuse (UsageError, one line), before anything trains, units that would not fit in the
    memory of their device (`memory.check_fits`), counting the units that train at once, on a
    training set of `train_samples` images (None: the size its spec registers).

    Local children share the machine's memory: `workers` units at once, each counted as the
    largest (an upper bound, simpler than following the pool's schedule, and loose only for a
    grid of very unequal shapes). Ray's tasks run on the cluster's nodes, whose memory is not
    this machine's: not checked here.
    """
    if policy.backend == "ray":
        return
    pooled = policy.workers > 1 and len(units) > 1 and can_fork()  # as `execute` decides
    at_once = min(policy.workers, len(units)) if pooled else 1
    devices: dict[str, torch.device] = {}
    shapes: dict[tuple[torch.device, int], set[TrainConfig]] = {}
    for unit in units:
        for run in unit:
            name = run.config.device
            device = devices.setdefault(name, resolve_device(name))
            # Seeds need equal memory: one config per shape, activation and K is enough.
            config = dataclasses.replace(run.config, seed=0)
            shapes.setdefault((device, len(unit)), set()).add(config)
    for (device, models), configs in shapes.items():
        check_fits(sorted(configs, key=repr), device, models, at_once, train_samples=train_samples)


def check_batch_sizes(configs: Sequence[TrainConfig], dataset: Dataset) -> None:
    """A batch larger than the training set would train one short step per epoch, and batch
    norm cannot normalise a batch of one (`train.check_batch_norm`): refused."""
    n = len(dataset.train_labels)
    for config in configs:
        check_batch_norm(config, n)
        if config.batch_size > n:
            raise UsageError(
                f"--batch-size {config.batch_size} is larger than the training set ({n} "
                f"images of {dataset.name}); at most {n}"
            )


@dataclass
class Callbacks:
    """Training's callbacks, with `stop` heard between two steps."""

    on_epoch: EpochCallback | None
    on_steps: StepsCallback | None
    stop: threading.Event

    def epoch(self, config: TrainConfig, row: dict[str, Any]) -> None:
        if self.on_epoch is not None:
            self.on_epoch(config, row)

    def steps(self, count: int) -> None:
        if self.stop.is_set():  # between two steps: every record so far is whole
            raise KeyboardInterrupt
        if self.on_steps is not None:
            self.on_steps(count)


def train_unit(
    unit: Sequence[Run], dataset: Dataset, policy: Policy, callbacks: Callbacks | Progress
) -> list[str]:
    """Train one unit (one run alone, or several as a group); their statuses, in order.

    With failures "record", an exception is written as the failure of every run it left without
    a result (all of a group's: `train_group` writes results at the end); a WriteError and an
    interruption are raised whatever the policy.
    """
    if policy.resume and len(unit) > 1:
        # Planned before the runs were claimed: another executor may have moved some of them on
        # since. Their checkpoints, read again under the locks, must still be of one epoch.
        parts = plan(unit, dataclasses.replace(policy, keep_finished=False))
        if len(parts) > 1:
            statuses = {}
            for part in parts:
                for run, status in zip(
                    part, train_unit(part, dataset, policy, callbacks), strict=True
                ):
                    statuses[run.run_dir] = status
            return [statuses[run.run_dir] for run in unit]
    if policy.failures == "record":
        for run in unit:  # a retried run's old result must not pass for this attempt's
            (run.run_dir / records.RESULT).unlink(missing_ok=True)
    try:
        if len(unit) == 1:
            (run,) = unit
            results = [
                train(
                    run.config,
                    dataset=dataset,
                    run_dir=run.run_dir,
                    on_epoch=lambda row: callbacks.epoch(run.config, row),
                    on_steps=callbacks.steps,
                    resume=policy.resume,
                )
            ]
        else:
            results = train_group(
                [run.config for run in unit],
                dataset=dataset,
                run_dirs=[run.run_dir for run in unit],
                on_epoch=callbacks.epoch,
                on_steps=callbacks.steps,
                resume=policy.resume,
            )
        return [result.status for result in results]
    except records.WriteError:
        raise
    except Exception as e:
        if policy.failures == "raise":
            raise
        return record_failures(unit, error_line(e))


def error_line(error: BaseException) -> str:
    """The last line of an exception as Python prints it, e.g. `RuntimeError: boom`."""
    return traceback.format_exception_only(type(error), error)[-1].strip()


def failed_result(config: TrainConfig, error: str, run_dir: Path) -> dict[str, Any]:
    """The result.json of a run that raised or whose worker died."""
    return {
        "status": "failed",
        "error": error,
        "config": config.to_dict(),
        "test_accuracy": None,
        "test_loss": None,
        "history": [],
        "versions": versions(),
        "run_dir": str(run_dir),
    }


def record_failures(unit: Sequence[Run], error: str) -> list[str]:
    """Write `error` as the result of every run of the unit without one; their statuses."""
    statuses = []
    for run in unit:
        status = finished_status(run)
        if status is None:
            run.run_dir.mkdir(parents=True, exist_ok=True)
            records.write_json(
                run.run_dir / records.RESULT, failed_result(run.config, error, run.run_dir)
            )
            status = "failed"
        statuses.append(status)
    return statuses


class Claim:
    """The unit's runs that this process may train now, locked (with `policy.claim`) for as long
    as the block lasts: a run another process holds, or that is no longer pending, is left out."""

    def __init__(self, unit: Sequence[Run], policy: Policy) -> None:
        self.fds: list[int] = []
        self.members: list[Run] = []
        if not policy.claim:
            self.members = list(unit)
            return
        try:
            for run in unit:
                fd = records.lock_run(run.run_dir)
                if fd is None:
                    continue
                if is_pending(run, policy):  # again, under the lock: another may have finished it
                    self.fds.append(fd)
                    self.members.append(run)
                else:
                    os.close(fd)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def __enter__(self) -> list[Run]:
        return self.members

    def __exit__(self, *exc: object) -> None:
        self.release()


def can_fork() -> bool:
    """Linux forks cheaply and safely here; elsewhere units train in this process."""
    return sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()


def die_with_parent(parent: int) -> None:
    """Have Linux SIGKILL us when the parent dies, even by SIGKILL: an orphan would go on writing
    into run directories that a resumed command is writing to, and holding their locks."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's `finally` is all there is
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def become_worker(parent: int, threads: int) -> None:
    """What a forked training child does first: default SIGTERM, Ctrl-C left to the parent (which
    stops its children), death with the parent, its share of the cores."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)
    torch.set_num_threads(threads)


def warm_up() -> None:
    """Import, before forking, what every training child would otherwise import for itself: a
    torch optimizer's first construction imports torch._dynamo, about 2 s of one core."""
    import torch._dynamo  # noqa: F401


Send = Callable[[Any], None]


class Progress:
    """A child's callbacks: epoch rows sent at once, step counts gathered for 0.1 s."""

    def __init__(self, send: Send) -> None:
        self.send, self.pending, self.last = send, 0, time.monotonic()

    def epoch(self, config: TrainConfig, row: dict[str, Any]) -> None:
        self.flush()
        self.send(("epoch", config, row))

    def steps(self, count: int) -> None:
        self.pending += count
        if time.monotonic() - self.last > 0.1:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.send(("steps", self.pending))
        self.pending, self.last = 0, time.monotonic()


def child_main(
    unit: Sequence[Run],
    dataset: Dataset,
    policy: Policy,
    connection: Connection,
    parent: int,
    threads: int,
    inherited_locks: Sequence[int],
) -> None:
    """A child's whole life: its start, one unit, its outcome sent to the parent.

    The unit trains in a new thread: GNU OpenMP's thread pool does not survive fork (the main
    thread's pool still counts the parent's threads, and its first parallel region with more
    than one thread waits for them forever); a new thread starts a pool of its own."""
    become_worker(parent, threads)
    for fd in inherited_locks:  # other units' locks, copied by fork: theirs to release
        os.close(fd)
    worker = threading.Thread(target=train_and_report, args=(unit, dataset, policy, connection))
    worker.start()
    worker.join()


def train_and_report(
    unit: Sequence[Run], dataset: Dataset, policy: Policy, connection: Connection
) -> None:
    """Train the unit; send its statuses, or what it raised, to the parent."""
    progress = Progress(lambda message: connection.send(("message", message)))
    try:
        statuses = train_unit(unit, dataset, policy, progress)
        progress.flush()
    except BaseException as e:  # everything goes back to the parent, which decides
        if isinstance(e, KNOWN_ERRORS):
            connection.send(("error", e))  # pickled whole: a WriteError keeps errno and strerror
        else:
            connection.send(("error", WorkerError(traceback.format_exc().rstrip())))
    else:
        connection.send(("done", statuses))
    finally:
        connection.close()


@dataclass
class Child:
    """A unit training in a child process: the process, and the unit's runs and locks."""

    process: Any  # multiprocessing's Process of the fork context
    lock: Claim


def run_pool(
    units: Sequence[Sequence[Run]],
    dataset: Dataset,
    policy: Policy,
    callbacks: Callbacks,
    done: DoneCallback,
    stop: threading.Event,
) -> None:
    """Train units in forked children, `policy.workers` at once (see `execute`). Whatever stops
    the pool, every child still running is killed first (SIGKILL: it may not have set up its
    handlers yet); its runs stay unfinished and resume later. A child that dies while `stop` is
    set, or of SIGTERM or SIGINT (a signal sent to the whole process group), was interrupted, not
    failed: its runs stay unfinished too."""
    threads = policy.threads or max(1, cores() // min(policy.workers, len(units)))
    warm_up()  # once here, not once per child
    context = multiprocessing.get_context("fork")
    queue = list(units)
    running: dict[Connection, Child] = {}
    try:
        while queue or running:
            if stop.is_set():
                raise KeyboardInterrupt
            while queue and len(running) < policy.workers:
                lock = Claim(queue.pop(0), policy)
                if not lock.members:
                    continue
                # The child inherits every lock we hold: it closes all but its own.
                others = [fd for child in running.values() for fd in child.lock.fds]
                receiver = None
                try:
                    receiver, sender = context.Pipe(duplex=False)
                    with sender:  # closed here once the child has its copy: EOF when it is gone
                        process = context.Process(
                            target=child_main,
                            args=(
                                lock.members,
                                dataset,
                                policy,
                                sender,
                                os.getpid(),
                                threads,
                                others,
                            ),
                            daemon=True,
                        )
                        process.start()
                except BaseException:
                    lock.release()
                    if receiver is not None:
                        receiver.close()
                    raise
                running[receiver] = Child(process, lock)
            for ready in wait(list(running), timeout=0.2):
                receiver = cast(Connection, ready)  # wait returns what it was given
                child = running[receiver]
                try:
                    kind, payload = receiver.recv()
                except EOFError:  # died without an outcome (killed, out of memory)
                    kind, payload = "died", None
                if kind == "message":
                    if payload[0] == "steps":
                        callbacks.steps(payload[1])
                    elif payload[0] == "epoch":
                        callbacks.epoch(payload[1], payload[2])
                    continue
                del running[receiver]
                receiver.close()
                child.process.join()
                try:
                    if kind == "error":
                        raise payload
                    if kind == "died":
                        payload = died(child, policy, stop)
                finally:
                    child.lock.release()
                for run, status in zip(child.lock.members, payload, strict=True):
                    done(run, status)
    finally:
        for child in running.values():
            if child.process.is_alive():
                child.process.kill()
        for receiver, child in running.items():
            child.process.join()
            receiver.close()
            child.lock.release()


def died(child: Child, policy: Policy, stop: threading.Event) -> list[str]:
    """A child ended without an outcome: interrupted (KeyboardInterrupt, its runs left to resume),
    or its runs' failure, raised or recorded as `policy.failures` says."""
    code = child.process.exitcode
    if stop.is_set() or code in (-signal.SIGTERM, -signal.SIGINT):
        raise KeyboardInterrupt
    if policy.failures == "raise":
        raise WorkerError(
            f"a worker process exited with code {code} "
            "before its job finished (killed, or out of memory: fewer "
            "--workers need less)"
        )
    return record_failures(child.lock.members, f"worker exited with code {code}")


def run_ray(
    units: Sequence[Sequence[Run]],
    policy: Policy,
    data_options: dict[str, Any],
    done: DoneCallback,
    stop: threading.Event,
) -> None:
    """Each unit a Ray task with one CPU (and one GPU for cuda); records come back here.

    The task trains into temporary directories on its node and returns each run's three files,
    which are written here (result.json last). Runs are claimed here as for local runs; a task
    that fails is each of its runs' failure (or, with failures "raise", a WorkerError).
    """
    try:
        import ray
    except ImportError:
        raise UsageError("--backend ray needs Ray: pip install 'vanishing[ray]'") from None
    try:
        ray.init(address=policy.address, ignore_reinit_error=True, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UsageError(
            f"--backend ray: cannot connect to a Ray cluster at {policy.address!r} ({e})"
        ) from None
    remote = ray.remote(ray_task)
    futures: dict[Any, Claim] = {}
    try:
        for unit in units:
            lock = Claim(unit, policy)
            if not lock.members:
                continue
            configs = [run.config for run in lock.members]
            gpus = 1 if configs[0].device == "cuda" else 0
            try:
                future = remote.options(num_cpus=1, num_gpus=gpus).remote(configs, data_options)
            except BaseException:
                lock.release()
                raise
            futures[future] = lock
        while futures:
            if stop.is_set():
                raise KeyboardInterrupt
            ready, _ = ray.wait(list(futures), num_returns=1, timeout=0.5)
            if not ready:
                continue
            lock = futures.pop(ready[0])
            try:
                try:
                    files = ray.get(ready[0])
                except Exception as e:  # a task whose worker died
                    if policy.failures == "raise":
                        raise WorkerError(f"ray task failed: {error_line(e)}") from None
                    error = f"ray task failed: {type(e).__name__}"
                    files = [
                        {records.RESULT: records.dumps(failed_result(r.config, error, r.run_dir))}
                        for r in lock.members
                    ]
                for run, run_files in zip(lock.members, files, strict=True):
                    write_files(run.run_dir, run_files)
            finally:
                lock.release()
            for run in lock.members:
                done(run, finished_status(run) or "failed")
    finally:
        for future, lock in futures.items():
            ray.cancel(future, force=True)
            lock.release()


def ray_task(configs: Sequence[TrainConfig], data_options: dict[str, Any]) -> list[dict[str, str]]:
    """Runs on a Ray worker: train a unit into temporary directories; each run's files' text."""
    torch.set_num_threads(1)
    dataset = load_dataset(configs[0].dataset, **data_options)  # the worker's own cache or source
    with tempfile.TemporaryDirectory(prefix="vanishing-run-") as tmp:
        unit = [Run(config, Path(tmp) / f"run{i}") for i, config in enumerate(configs)]
        policy = Policy(failures="record")
        train_unit(unit, dataset, policy, Callbacks(None, None, threading.Event()))
        names = (records.CONFIG, records.METRICS, records.RESULT)
        return [
            {
                name: (run.run_dir / name).read_text()
                for name in names
                if (run.run_dir / name).is_file()
            }
            for run in unit
        ]


def write_files(run_dir: Path, files: dict[str, str]) -> None:
    """Write a run's returned files, result.json last and atomically."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        if name != records.RESULT:
            (run_dir / name).write_text(text)
    if records.RESULT in files:
        result = json.loads(files[records.RESULT])
        result["run_dir"] = str(run_dir)
        records.write_json(run_dir / records.RESULT, result)
