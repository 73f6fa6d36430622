"""Sweeps: expand a grid of settings into runs, run the missing ones, tabulate all of them.

A sweep directory holds one run directory per grid point and seed, named from its config (readable
parts plus a stable hash), so the same config is never run twice and an interrupted sweep resumes
by skipping every run whose `result.json` exists and continuing unfinished runs from their last
checkpoint (by default: a sweep is meant to be resumed). A run that raises is recorded with status
"failed" and its error; one that diverges with "diverged"; neither stops the sweep.

Pending runs of one shape train together in units (`group.train_group`, which writes the same
records), of up to `compare.group_size` runs for the device: one on the CPU, so there every run
trains alone. Each run is claimed with a lock (`run_dir/.lock`, an flock that the kernel drops when
its holder dies, so a dead sweep's lock is never stale), so that sweeps sharing a directory split
its runs.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from vanishing import pool, records, stats
from vanishing.compare import MAX_GROUP, checkpoint_epoch, group_size, weighted_percent
from vanishing.config import TrainConfig
from vanishing.data import Dataset, load_dataset
from vanishing.errors import UsageError, choices_error
from vanishing.group import plan_groups, train_group
from vanishing.model import DEFAULT_WIDTH, SEED_HIDDEN
from vanishing.train import train, versions

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locks, one sweep per directory
    fcntl = None  # type: ignore[assignment]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Settings shared by every run of a sweep, passed to TrainConfig as they are.
SHARED = (
    "epochs",
    "dataset",
    "batch_size",
    "momentum",
    "negative_slope",
    "prelu_mode",
    "probe_every",
    "probe_size",
    "device",
)


@dataclass(frozen=True)
class SweepSpec:
    """A grid: every combination of the list fields, each trained with the shared settings."""

    activations: tuple[str, ...] = ("sigmoid", "relu")
    depths: tuple[int, ...] = ()  # empty: the networks have the `hidden` widths
    widths: tuple[int, ...] = (DEFAULT_WIDTH,)  # with depths: units per hidden layer
    hidden: tuple[int, ...] = SEED_HIDDEN
    inits: tuple[str, ...] = ("default",)
    optimizers: tuple[str, ...] = ("adam",)
    lrs: tuple[float, ...] = (1e-3,)
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = TrainConfig.epochs
    dataset: str = TrainConfig.dataset
    batch_size: int = TrainConfig.batch_size
    momentum: float = TrainConfig.momentum
    negative_slope: float = TrainConfig.negative_slope
    prelu_mode: str = TrainConfig.prelu_mode
    probe_every: int = TrainConfig.probe_every
    probe_size: int = TrainConfig.probe_size
    device: str = TrainConfig.device
    description: str = ""  # what the sweep shows and where it comes from (presets)

    def __post_init__(self) -> None:
        for name in ("depths", "widths"):
            bad = [v for v in getattr(self, name) if not isinstance(v, int) or v < 1]
            if bad:
                raise UsageError(f"{name} must be integers >= 1, got {bad[0]!r}")
        for name in ("activations", "inits", "optimizers", "lrs", "seeds", "widths"):
            if not getattr(self, name):
                raise UsageError(f"{name}: give at least one value")


LIST_FIELDS = ("activations", "depths", "widths", "hidden", "inits", "optimizers", "lrs", "seeds")


def shapes(spec: SweepSpec) -> list[tuple[int, ...]]:
    """The hidden widths of every network shape in the grid."""
    if not spec.depths:
        return [tuple(spec.hidden)]
    return [(width,) * depth for depth in spec.depths for width in spec.widths]


def expand(spec: SweepSpec) -> list[TrainConfig]:
    """Every run of the grid, validated (a bad value raises UsageError before anything runs)."""
    configs = []
    for hidden in shapes(spec):
        for activation in spec.activations:
            for init in spec.inits:
                for optimizer in spec.optimizers:
                    for lr in spec.lrs:
                        for seed in spec.seeds:
                            configs.append(
                                TrainConfig(
                                    activation=activation,
                                    hidden=hidden,
                                    init=init,
                                    optimizer=optimizer,
                                    lr=lr,
                                    seed=seed,
                                    **{name: getattr(spec, name) for name in SHARED},
                                )
                            )
    return configs


def spec_from_dict(values: dict[str, Any], source: str = "sweep") -> SweepSpec:
    """A SweepSpec from TOML-like values; unknown keys and wrong types are UsageErrors."""
    known = [f.name for f in dataclasses.fields(SweepSpec)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        names = ", ".join(map(repr, unknown))  # quoted: a key may hold any character
        raise UsageError(f"{source}: unknown key(s) {names}; valid keys: {', '.join(known)}")
    clean: dict[str, Any] = {}
    for name, value in values.items():
        default = getattr(SweepSpec(), name)
        if name in LIST_FIELDS:
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            kind = (
                float
                if name == "lrs"
                else (str if name in ("activations", "inits", "optimizers") else int)
            )
            clean[name] = tuple(check_type(f"{source}: {name}", item, kind) for item in items)
        else:
            kind = type(default)
            clean[name] = check_type(f"{source}: {name}", value, kind)
    spec = SweepSpec(**clean)  # no list may be empty, so neither can the grid
    expand(spec)  # validates every value against the registries
    return spec


def check_type(where: str, value: Any, kind: type) -> Any:
    """The value as `kind`, or a UsageError saying what was expected."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise UsageError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def read_toml(path: Path | str) -> dict[str, Any]:
    """The table of a TOML file, or a UsageError naming the file and the problem."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"{path}: file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not valid TOML ({e})") from None


def preset_names() -> list[str]:
    """The presets shipped with the package."""
    folder = resources.files("vanishing") / "presets"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> SweepSpec:
    """A named preset (`vanishing sweep --preset NAME`)."""
    names = preset_names()
    if name not in names:
        raise choices_error("preset", name, names)
    text = (resources.files("vanishing") / "presets" / f"{name}.toml").read_text()
    return spec_from_dict(tomllib.loads(text), f"preset {name}")


def run_name(config: TrainConfig) -> str:
    """Readable parts plus a hash of every field that changes the result (not the device)."""
    values = {k: v for k, v in config.to_dict().items() if k != "device"}
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]
    hidden = config.hidden
    shape = (
        f"d{len(hidden)}w{hidden[0]}" if len(set(hidden)) == 1 else "h" + "-".join(map(str, hidden))
    )
    return (
        f"{config.activation}-{shape}-{config.init}-{config.optimizer}-lr{config.lr:g}"
        f"-s{config.seed}-{digest}"
    )


def run_status(run_dir: Path) -> str | None:
    """The recorded status of a finished run, None if it has not finished."""
    if not records.is_complete(run_dir):
        return None
    try:
        return records.read_json(run_dir / records.RESULT).get("status")
    except (OSError, json.JSONDecodeError):
        return None


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


Member = tuple[TrainConfig, Path]  # a run: its config and its directory


def stop_check(stop: threading.Event | None) -> Callable[[int], None]:
    """An `on_steps` callback that abandons training (KeyboardInterrupt) once `stop` is set."""

    def check(steps: int) -> None:
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt

    return check


def record_failure(config: TrainConfig, run_dir: Path, error: str) -> None:
    """Write a failed run's result.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    records.write_json(run_dir / records.RESULT, failed_result(config, error, run_dir))


def error_line(error: Exception) -> str:
    """The last line of an exception as Python prints it, e.g. `RuntimeError: boom`."""
    return traceback.format_exception_only(type(error), error)[-1].strip()


def run_one(
    config: TrainConfig,
    run_dir: Path,
    dataset: Dataset,
    stop: threading.Event | None = None,
    resume: bool = True,
) -> str:
    """Train one run into `run_dir`, recording any exception as a failed run; returns the status.

    With `resume` an unfinished run continues from its checkpoint. When `stop` is set the run is
    abandoned (KeyboardInterrupt) and left without result.json. A record that cannot be written
    (a full disk) is raised: the sweep cannot go on.
    """
    try:
        return train(
            config, dataset=dataset, run_dir=run_dir, on_steps=stop_check(stop), resume=resume
        ).status
    except records.WriteError:
        raise
    except Exception as e:  # recorded, never raised: one bad run must not stop a sweep
        record_failure(config, run_dir, error_line(e))
        return "failed"


def run_group(
    members: Sequence[Member],
    dataset: Dataset,
    stop: threading.Event | None = None,
    resume: bool = False,
) -> list[str]:
    """Train runs of one shape together (`train_group`); their statuses, in order. With `resume`
    they continue from their checkpoints, which must all be of one epoch (`run_unit` sees to it).

    An exception is recorded as the failure of every member without a result.json (all of them:
    `train_group` writes results only at the end); `stop` and a WriteError act as in `run_one`.
    """
    for _, run_dir in members:  # a retried run's old result must not pass for this attempt's
        (run_dir / records.RESULT).unlink(missing_ok=True)
    try:
        results = train_group(
            [config for config, _ in members],
            dataset=dataset,
            run_dirs=[run_dir for _, run_dir in members],
            on_steps=stop_check(stop),
            resume=resume,
        )
        return [result.status for result in results]
    except records.WriteError:
        raise
    except Exception as e:  # recorded, never raised, as in `run_one`
        error = error_line(e)
        statuses = []
        for config, run_dir in members:
            status = run_status(run_dir)
            if status is None:
                record_failure(config, run_dir, error)
                status = "failed"
            statuses.append(status)
        return statuses


def run_unit(
    members: Sequence[Member],
    dataset: Dataset,
    stop: threading.Event | None = None,
    resume: bool = True,
) -> list[str]:
    """Train a unit of runs (`plan_units`); their statuses, in order.

    A unit of one is `run_one`. A larger one trains as groups: with `resume`, of the runs whose
    checkpoints are of one epoch (or that have none), each group continuing from there; a run
    whose checkpoint cannot be read trains alone, where `run_one` records why it failed.
    """
    if len(members) == 1:  # nothing to plan: its checkpoint is read once, by `train`
        ((config, run_dir),) = members
        return [run_one(config, run_dir, dataset, stop, resume)]
    jobs, planned, epochs = [], [], []
    for member in members:
        try:
            epochs.append(checkpoint_epoch(*member) if resume else None)
            planned.append(member)
        except UsageError:  # unreadable, or another config's
            jobs.append([member])
    if planned:
        groups = plan_groups([config for config, _ in planned], len(planned), epochs)
        jobs += [[planned[i] for i in group] for group in groups]
    statuses: dict[Path, str] = {}
    for job in jobs:
        if len(job) == 1:
            (config, run_dir), *_ = job
            statuses[run_dir] = run_one(config, run_dir, dataset, stop, resume)
        else:
            for (_, run_dir), status in zip(
                job, run_group(job, dataset, stop, resume), strict=True
            ):
                statuses[run_dir] = status
    return [statuses[run_dir] for _, run_dir in members]


def pending_runs(
    configs: Sequence[TrainConfig], out: Path, retry_failed: bool
) -> list[tuple[TrainConfig, Path]]:
    """The runs still to do: not finished, or (with retry_failed) failed or diverged."""
    todo = []
    for config in configs:
        run_dir = out / run_name(config)
        status = run_status(run_dir)
        if status is None or (retry_failed and status in ("failed", "diverged")):
            todo.append((config, run_dir))
    return todo


def lock_run(run_dir: Path) -> int | None:
    """Take the run's lock (an flock on run_dir/.lock, which holds our pid): its file descriptor,
    or None when another process holds it. Closing the descriptor, or dying, releases it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / records.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def claim(run_dir: Path, retry_failed: bool) -> int | None:
    """Lock a run that is still to do; None if another sweep holds it or has just finished it."""
    fd = lock_run(run_dir)
    if fd is None:
        return None
    status = run_status(run_dir)  # again, under the lock: another sweep may have finished it
    if status is None or (retry_failed and status in ("failed", "diverged")):
        return fd
    os.close(fd)
    return None


Claimed = tuple[TrainConfig, Path, int]  # a run, and the descriptor of its lock


def claim_unit(unit: Sequence[Member], retry_failed: bool) -> list[Claimed]:
    """Lock every run of a unit that is still to do (`claim`); the others are left out."""
    claimed: list[Claimed] = []
    try:
        for config, run_dir in unit:
            fd = claim(run_dir, retry_failed)
            if fd is not None:
                claimed.append((config, run_dir, fd))
    except BaseException:
        release(claimed)
        raise
    return claimed


def release(claimed: Sequence[Claimed]) -> None:
    """Drop the locks of claimed runs."""
    for *_, fd in claimed:
        os.close(fd)


def plan_units(todo: Sequence[Member], size: int) -> list[list[Member]]:
    """The pending runs in units of at most `size` that can train together (`plan_groups`)."""
    return [[todo[i] for i in members] for members in plan_groups([c for c, _ in todo], size)]


Done = Callable[[TrainConfig, Path, str], None]


def run_local(
    units: Sequence[Sequence[Member]],
    workers: int,
    dataset: Dataset,
    on_done: Done,
    stop: threading.Event,
    retry_failed: bool = False,
    resume: bool = True,
) -> None:
    """Run units (`run_unit`) in this process (one worker) or in child processes, one thread
    each, `workers` units at once.

    A child is forked per unit (cheap: it shares the parent's imports and data set, copy on
    write); a run whose child dies without its result is recorded as failed. When `stop` is set
    (the CLI sets it on Ctrl-C or SIGTERM) every child is killed and KeyboardInterrupt raised;
    their runs stay unfinished (no result.json) and train again on resume (from their checkpoints
    where they have one). Every run of a unit is claimed first (`claim`); one that another sweep
    holds or has finished is left to it.
    """
    if workers <= 1:
        for unit in units:
            claimed = claim_unit(unit, retry_failed)
            if not claimed:
                continue
            members = [(config, run_dir) for config, run_dir, _ in claimed]
            try:
                statuses = run_unit(members, dataset, stop, resume)
            finally:
                release(claimed)
            for (config, run_dir), status in zip(members, statuses, strict=True):
                on_done(config, run_dir, status)
        return
    import multiprocessing as mp
    from multiprocessing.connection import wait

    pool.warm_up()  # once here, not once per forked run
    context = mp.get_context("fork" if sys.platform == "linux" else "spawn")
    queue = list(units)
    running: dict[Any, tuple[Any, list[Claimed]]] = {}
    try:
        while queue or running:
            while queue and len(running) < workers:
                claimed = claim_unit(queue.pop(0), retry_failed)
                if not claimed:
                    continue
                # The child inherits every lock we hold: it closes all but its own.
                others = [fd for _, held in running.values() for *_, fd in held]
                members = [(config, run_dir) for config, run_dir, _ in claimed]
                process = context.Process(
                    target=child_main, args=(members, dataset, resume, others, os.getpid())
                )
                try:
                    process.start()
                except BaseException:
                    release(claimed)
                    raise
                running[process.sentinel] = (process, claimed)
            if stop.is_set():
                raise KeyboardInterrupt
            for sentinel in wait(list(running), timeout=0.2):
                process, claimed = running.pop(sentinel)
                process.join()
                statuses = []
                try:
                    for config, run_dir, _ in claimed:
                        status = run_status(run_dir)
                        if status is None:  # killed before it could write its result
                            error = f"worker exited with code {process.exitcode}"
                            record_failure(config, run_dir, error)
                            status = "failed"
                        statuses.append(status)
                finally:
                    release(claimed)
                for (config, run_dir, _), status in zip(claimed, statuses, strict=True):
                    on_done(config, run_dir, status)
    finally:
        # SIGKILL, not SIGTERM: a child may not have set up its own handlers yet.
        for process, _ in running.values():
            process.kill()
        for process, claimed in running.values():
            process.join()
            release(claimed)


def child_main(
    members: Sequence[Member],
    dataset: Dataset,
    resume: bool = True,
    inherited_locks: Sequence[int] = (),
    parent: int | None = None,
) -> None:
    """A worker process for one unit: one thread (the pool uses the cores), and the same start as
    `pool`'s children: it dies with the parent, so no orphan keeps training and holding locks."""
    pool.become_worker(parent or os.getppid(), threads=1)
    for fd in inherited_locks:  # other runs' locks, copied by fork: theirs to release
        os.close(fd)
    run_unit(members, dataset, resume=resume)


def run_ray(
    units: Sequence[Sequence[Member]],
    address: str | None,
    data_options: dict[str, Any],
    on_done: Done,
    stop: threading.Event,
    retry_failed: bool = False,
) -> None:
    """Each unit a Ray task with one CPU (and one GPU for cuda); records come back to `out`.

    The task trains into temporary directories on its node and returns each run's three files,
    which are written here (result.json last), so no shared file system is needed. Runs are
    claimed here as for local runs, but a Ray run does not resume from a checkpoint (it has none
    there): an interrupted one starts afresh.
    """
    try:
        import ray
    except ImportError:
        raise UsageError("--backend ray needs Ray: pip install 'vanishing[ray]'") from None
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UsageError(
            f"--backend ray: cannot connect to a Ray cluster at {address!r} ({e})"
        ) from None
    remote = ray.remote(ray_task)
    futures: dict[Any, list[Claimed]] = {}
    try:
        for unit in units:
            claimed = claim_unit(unit, retry_failed)
            if not claimed:
                continue
            configs = [config for config, _, _ in claimed]
            gpus = 1 if configs[0].device == "cuda" else 0
            try:
                future = remote.options(num_cpus=1, num_gpus=gpus).remote(configs, data_options)
            except BaseException:
                release(claimed)
                raise
            futures[future] = claimed
        while futures:
            if stop.is_set():
                raise KeyboardInterrupt
            ready, _ = ray.wait(list(futures), num_returns=1, timeout=0.5)
            if not ready:
                continue
            claimed = futures.pop(ready[0])
            try:
                files = ray.get(ready[0])
            except Exception as e:  # a task whose worker died
                error = f"ray task failed: {type(e).__name__}"
                files = [
                    {records.RESULT: records.dumps(failed_result(config, error, run_dir))}
                    for config, run_dir, _ in claimed
                ]
            try:
                for (_, run_dir, _), run_files in zip(claimed, files, strict=True):
                    write_files(run_dir, run_files)
            finally:
                release(claimed)
            for config, run_dir, _ in claimed:
                on_done(config, run_dir, run_status(run_dir) or "failed")
    finally:
        for future, claimed in futures.items():
            ray.cancel(future, force=True)
            release(claimed)


def ray_task(configs: Sequence[TrainConfig], data_options: dict[str, Any]) -> list[dict[str, str]]:
    """Runs on a Ray worker: train a unit into temporary directories; each run's files' text."""
    import tempfile

    import torch

    torch.set_num_threads(1)
    dataset = load_dataset(configs[0].dataset, **data_options)  # the worker's own cache or source
    with tempfile.TemporaryDirectory(prefix="vanishing-run-") as tmp:
        members = [(config, Path(tmp) / f"run{i}") for i, config in enumerate(configs)]
        run_unit(members, dataset, resume=False)
        names = (records.CONFIG, records.METRICS, records.RESULT)
        return [
            {name: (run_dir / name).read_text() for name in names if (run_dir / name).is_file()}
            for _, run_dir in members
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


def result_row(run_dir: Path) -> dict[str, Any]:
    """One tidy row: every config field, then the result's scalar fields."""
    result = records.read_json(run_dir / records.RESULT)
    config = result["config"]
    hidden = config["hidden"]
    widths = hidden or [1]
    row = {
        **{k: v for k, v in config.items() if k != "hidden"},
        "hidden": "-".join(map(str, hidden)),
        "depth": len(hidden),
        "width": hidden[0] if len(set(hidden)) == 1 else None,
    }
    dead = result.get("dead_fraction") or []
    saturated = result.get("saturated_fraction") or []
    row.update(
        status=result["status"],
        test_accuracy=result.get("test_accuracy"),
        test_loss=result.get("test_loss"),
        epochs_completed=len(result.get("history", [])),
        vanishing_ratio_init=result.get("vanishing_ratio_init"),
        dead_percent=percent_of_units(dead, widths),
        saturated_percent=percent_of_units(saturated, widths),
        train_seconds=result.get("train_seconds"),
        eval_seconds=result.get("eval_seconds"),
        error=result.get("error"),
        run_dir=run_dir.name,
    )
    return row


def percent_of_units(fractions: Sequence[float | None], widths: Sequence[int]) -> float | None:
    """Per-layer fractions -> percent of all hidden units; None for a failed run's missing list."""
    if not fractions or len(fractions) != len(widths) or None in fractions:
        return None
    return weighted_percent(fractions, widths)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """A CSV with the union of the rows' keys as columns, in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


POINT_KEYS = ("dataset", "hidden", "activation", "init", "optimizer", "lr", "batch_size", "epochs")


def aggregate(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per grid point (all but the seed): n, mean, std and 95 % CI of accuracy and loss."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in POINT_KEYS), []).append(row)
    points = []
    for key, group in groups.items():
        ok = [r for r in group if r["status"] == "ok"]
        point = dict(zip(POINT_KEYS, key, strict=True))
        point.update(depth=group[0]["depth"], runs=len(group), ok=len(ok))
        for metric in (
            "test_accuracy",
            "test_loss",
            "vanishing_ratio_init",
            "dead_percent",
            "saturated_percent",
        ):
            summary = stats.summarize([r[metric] for r in ok if r[metric] is not None])
            point[f"{metric}_mean"] = summary.mean
            if metric in ("test_accuracy", "test_loss"):
                point[f"{metric}_std"] = summary.std
                point[f"{metric}_ci_low"] = summary.ci_low
                point[f"{metric}_ci_high"] = summary.ci_high
        points.append(point)
    return points


def paired_comparisons(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setting, each pair of activations: a paired t-test of accuracy over shared seeds."""
    keys = [k for k in POINT_KEYS if k != "activation"]
    by_setting: dict[tuple, dict[str, dict[int, float]]] = {}
    for row in rows:
        if row["status"] != "ok" or row["test_accuracy"] is None:
            continue
        setting = by_setting.setdefault(tuple(row[k] for k in keys), {})
        setting.setdefault(row["activation"], {})[row["seed"]] = row["test_accuracy"]
    tests = []
    for setting, by_activation in by_setting.items():
        names = list(by_activation)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                seeds = sorted(set(by_activation[a]) & set(by_activation[b]))
                if not seeds:
                    continue
                test = stats.paired_test(
                    [by_activation[a][s] for s in seeds], [by_activation[b][s] for s in seeds]
                )
                tests.append(
                    {
                        **dict(zip(keys, setting, strict=True)),
                        "a": a,
                        "b": b,
                        "seeds": len(seeds),
                        "mean_difference": test.mean_difference,
                        "t": test.t,
                        "p": test.p,
                        "significant": bool(test.significant),
                    }
                )
    return tests


def tabulate(out: Path, configs: Sequence[TrainConfig]) -> list[dict[str, Any]]:
    """Write runs.csv, points.csv and pairs.csv for the finished runs of the grid."""
    rows = [
        result_row(out / run_name(c)) for c in configs if records.is_complete(out / run_name(c))
    ]
    write_csv(out / "runs.csv", rows)
    write_csv(out / "points.csv", aggregate(rows))
    write_csv(out / "pairs.csv", paired_comparisons(rows))
    return rows


def unit_size(device: str, group: bool | int, backend: str) -> int:
    """The most runs one unit trains together, as `compare.compare` chooses its groups."""
    if group is not True:
        return max(1, int(group))
    if backend == "ray":  # the device is the workers', not this machine's: `auto` counts as one
        return MAX_GROUP.get(device, 1)
    return group_size(device)


BACKENDS = ("local", "ray")


def check_workers(spec: SweepSpec, workers: int | None, backend: str) -> int | None:
    """--workers, checked: for the local backend the count to run (`pool.workers_for`: one per
    core on the CPU, 1 on a GPU); Ray places its tasks itself."""
    if backend == "local":
        return pool.workers_for(spec.device, workers)
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    return workers


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep call did: every run of the grid, and how many ran now."""

    configs: list[TrainConfig]
    ran: int
    skipped: int
    rows: list[dict[str, Any]]


def run_sweep(
    spec: SweepSpec,
    out: Path,
    *,
    workers: int | None = None,
    backend: str = "local",
    address: str | None = None,
    retry_failed: bool = False,
    resume: bool = True,
    data_options: dict[str, Any] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_done: Done | None = None,
    dataset: Dataset | None = None,
    stop: threading.Event | None = None,
    group: bool | int = True,
) -> SweepOutcome:
    """Run every unfinished run of the grid, then write runs.csv, points.csv and pairs.csv.

    Runs of one shape train together in units (`plan_units`, `run_unit`) of up to `group_size`
    runs for the device (1 on the CPU), or of up to `group` when it is a number; False trains
    them one at a time. Local runs share `dataset` (loaded here when not given); Ray tasks load
    their own. Setting `stop` (e.g. from a signal handler) ends the sweep with KeyboardInterrupt,
    resumable. With `resume` (the default) unfinished local runs continue from their checkpoints
    (in groups of runs checkpointed at one epoch); without, they start afresh. `ran` counts the
    runs this call finished; runs that a concurrent sweep on the same directory claimed are left
    to it.
    """
    stop = stop or threading.Event()
    if backend not in BACKENDS:
        raise choices_error("backend", backend, BACKENDS)
    workers = check_workers(spec, workers, backend)  # before anything is written
    configs = expand(spec)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records.write_json(out / "sweep.json", dataclasses.asdict(spec))
    todo = pending_runs(configs, out, retry_failed)
    if on_start is not None:
        on_start(len(configs), len(configs) - len(todo))
    data_options = data_options or {}
    ran = []

    def done(config: TrainConfig, run_dir: Path, status: str) -> None:
        ran.append(run_dir)
        if on_done is not None:
            on_done(config, run_dir, status)

    if todo and backend == "ray":
        units = plan_units(todo, unit_size(spec.device, group, backend))
        run_ray(units, address, data_options, done, stop, retry_failed)
    elif todo:
        units = plan_units(todo, unit_size(spec.device, group, backend))
        if dataset is None:
            dataset = load_dataset(spec.dataset, **data_options)  # once: workers share it
        run_local(units, workers, dataset, done, stop, retry_failed, resume)
    rows = tabulate(out, configs)
    return SweepOutcome(configs, len(ran), len(configs) - len(todo), rows)
