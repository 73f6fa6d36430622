"""Training in this process: the run locks, one unit's training, and the failures it records.

A run directory has one writer at a time: every run trains under its lock (`Locks`, on
`records.lock_run`: an flock on run_dir/.lock that the kernel drops when its holder dies, so a
lock is never stale), taken here, in the parent, and inherited by a forked child. With
`policy.claim` (sweeps, the live page) executors sharing a directory split its runs: a run another
holds, or has just finished, is left to it. Without (compare, train), every run is ours: one
another process holds is refused before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vanishing import records
from vanishing.data.datasets import Dataset
from vanishing.errors import UsageError
from vanishing.executor.planning import Policy, Run, finished_status, is_pending, plan
from vanishing.settings.config import TrainConfig
from vanishing.training.group import train_group
from vanishing.training.loop import train, versions

EpochCallback = Callable[[TrainConfig, dict[str, Any]], None]
StepsCallback = Callable[[int], None]
DoneCallback = Callable[[Run, str], None]
# What to do about a run directory another process is writing (`records.hold_run`).
HELD_ADVICE = "wait for it to finish, or give another --out"


class WorkerError(RuntimeError):
    """A worker died, or raised something that is not the user's fault (its traceback inside)."""


class Listener(Protocol):
    """What training reports to: `Callbacks` in this process, `pool.ChildProgress` in a child."""

    def epoch(self, config: TrainConfig, row: dict[str, Any]) -> None: ...

    def steps(self, count: int) -> None: ...


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


class Locks:
    """The run locks this process holds, by run directory; all released when the block ends."""

    def __init__(self) -> None:
        self.fds: dict[Path, int] = {}

    def begin(self, units: Sequence[Sequence[Run]], policy: Policy) -> None:
        """Before any unit trains: without `policy.claim` every run is ours, so each is held now
        (one another process holds is refused before anything is written); with it, each unit's
        runs are claimed as it starts (`claim`)."""
        if not policy.claim:
            self.hold(run for unit in units for run in unit)

    def hold(self, runs: Iterable[Run]) -> None:
        """Lock every run, or refuse (UsageError, one line naming the directory and its holder:
        `records.hold_run`) when another process holds one of them."""
        for run in runs:
            if run.run_dir not in self.fds:
                self.fds[run.run_dir] = records.hold_run(run.run_dir, HELD_ADVICE)

    def claim(self, unit: Sequence[Run], policy: Policy) -> list[Run]:
        """The unit's runs this process may train now, locked: with `policy.claim`, those no other
        process holds that are still pending; without, all of them (`hold`)."""
        if not policy.claim:
            self.hold(unit)
            return list(unit)
        members = []
        for run in unit:
            fd = records.lock_run(run.run_dir)
            if fd is None:
                continue
            if is_pending(run, policy):  # again, under the lock: another may have finished it
                self.fds[run.run_dir] = fd
                members.append(run)
            else:
                os.close(fd)
        return members

    def others(self, runs: Sequence[Run]) -> list[int]:
        """The locks held for runs other than `runs` (a forked child closes them: not its own)."""
        mine = {run.run_dir for run in runs}
        return [fd for run_dir, fd in self.fds.items() if run_dir not in mine]

    def release(self, runs: Iterable[Run]) -> None:
        for run in runs:
            fd = self.fds.pop(run.run_dir, None)
            if fd is not None:
                os.close(fd)

    def __enter__(self) -> Locks:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}


def run_here(
    units: Sequence[Sequence[Run]],
    dataset: Dataset,
    policy: Policy,
    callbacks: Callbacks,
    done: DoneCallback,
    locks: Locks,
) -> None:
    """Train the units one after another in this process, each under its runs' locks."""
    for unit in units:
        members = locks.claim(unit, policy)
        try:
            if members:
                statuses = train_unit(members, dataset, policy, callbacks)
                for run, status in zip(members, statuses, strict=True):
                    done(run, status)
        finally:
            locks.release(members)


def train_unit(
    unit: Sequence[Run], dataset: Dataset, policy: Policy, callbacks: Listener
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
            records.remove(run.run_dir / records.RESULT)
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
    """The last line of an exception as Python prints it, e.g. `RuntimeError: boom`; the user's
    mistake and a record that could not be written as the CLI says them, the message alone
    (`cannot write PATH: REASON`)."""
    if isinstance(error, records.WriteError):
        return str(error.strerror)
    if isinstance(error, UsageError):
        return str(error)
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
