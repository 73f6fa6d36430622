"""A pool of forked children: `workers` units at once, each in a child with `threads` threads.

A child dies with its parent, so a killed command leaves no orphan training; whatever stops the
pool, every child still running is killed first. Without `fork` (not Linux), with one worker or
one unit, units train in this process instead (`pooled`).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, cast

import torch

from vanishing import records
from vanishing.data.datasets import Dataset
from vanishing.devices import cores
from vanishing.errors import DataError, UsageError
from vanishing.executor.local import (
    Callbacks,
    DoneCallback,
    Locks,
    WorkerError,
    record_failures,
    train_unit,
)
from vanishing.executor.planning import Policy, Run
from vanishing.settings.config import TrainConfig

# Our own errors cross from a child as themselves (the CLI makes them one line); others do not.
KNOWN_ERRORS = (UsageError, DataError, records.WriteError)
PR_SET_PDEATHSIG = 1  # prctl(2)


def can_fork() -> bool:
    """Linux forks cheaply and safely here; elsewhere units train in this process."""
    return sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()


def pooled(units: Sequence[Sequence[Run]], policy: Policy) -> bool:
    """Whether the units train in forked children (else one after another in this process)."""
    return policy.workers > 1 and len(units) > 1 and can_fork()


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


class ChildProgress:
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
    progress = ChildProgress(lambda message: connection.send(("message", message)))
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
    """A unit training in a child process: the process, and the unit's runs (locked)."""

    process: Any  # multiprocessing's Process of the fork context
    members: list[Run]


def run_pool(
    units: Sequence[Sequence[Run]],
    dataset: Dataset,
    policy: Policy,
    callbacks: Callbacks,
    done: DoneCallback,
    stop: threading.Event,
    locks: Locks,
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
                members = locks.claim(queue.pop(0), policy)
                if not members:
                    continue
                receiver = None
                try:
                    receiver, sender = context.Pipe(duplex=False)
                    with sender:  # closed here once the child has its copy: EOF when it is gone
                        process = context.Process(
                            target=child_main,
                            args=(
                                members,
                                dataset,
                                policy,
                                sender,
                                os.getpid(),
                                threads,
                                # The child inherits every lock we hold: it closes all but its own.
                                locks.others(members),
                            ),
                            daemon=True,
                        )
                        process.start()
                except BaseException:
                    locks.release(members)
                    if receiver is not None:
                        receiver.close()
                    raise
                running[receiver] = Child(process, members)
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
                    locks.release(child.members)
                for run, status in zip(child.members, payload, strict=True):
                    done(run, status)
    finally:
        for child in running.values():
            if child.process.is_alive():
                child.process.kill()
        for receiver, child in running.items():
            child.process.join()
            receiver.close()
            locks.release(child.members)


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
    return record_failures(child.members, f"worker exited with code {code}")
