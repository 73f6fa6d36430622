"""Run independent jobs in forked child processes, a few at once, with progress.

A small MLP's matrix products are too small to keep two cores busy with one model, but two
models in two one-thread processes do better: on a 2-core machine a real `compare` (4 runs, 1
epoch) took 9.8 s with two workers against 12.5 s one run at a time (`bench/bench_speed.py`
measures 1.25-1.4x in model-epochs per second). `compare` uses this pool on the CPU.

A job runs in its child with a `send` function: what it sends (progress, per-epoch rows) reaches
the parent's `on_message` in order, and its return value comes back, or its exception: ours
(UsageError, DataError, WriteError) as themselves, anything else as a ChildError that holds the
child's traceback. `on_message(None)` is called
about every 0.2 s while waiting, so a callback that raises to stop (KeyboardInterrupt) is heard
even while no job reports. Whatever stops the pool, every child still running is killed first.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from vanishing.devices import resolve_device
from vanishing.errors import DataError, UsageError
from vanishing.records import WriteError

PR_SET_PDEATHSIG = 1  # prctl(2)
Send = Callable[[Any], None]
Job = Callable[[Send | None], Any]  # None: running in this process, no need to send
# Exceptions a child's job raises that reach the parent as themselves (the CLI turns them into
# one line); anything else arrives as a ChildError holding the child's traceback.
KNOWN_ERRORS = (UsageError, DataError, WriteError)


class ChildError(RuntimeError):
    """A job raised something unexpected in its child: the message holds the child's traceback."""


def die_with_parent(parent: int) -> None:
    """Have Linux SIGKILL us when the parent dies, even by SIGKILL: an orphan would go on writing
    into run directories that a resumed command is writing to."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's `finally` is all there is
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def become_worker(parent: int, threads: int) -> None:
    """What a forked training child does first (here and in `sweep`): default SIGTERM, Ctrl-C
    left to the parent (which stops its children), death with the parent, its thread count."""
    import torch

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)
    torch.set_num_threads(threads)


def _child(job: Job, connection: Connection, parent: int, threads: int) -> None:
    """The child's whole life: its threads, parent-driven stopping, one job, its outcome sent."""
    become_worker(parent, threads)
    try:
        result = job(lambda message: connection.send(("message", message)))
    except BaseException as e:  # everything goes back to the parent, which decides
        if isinstance(e, KNOWN_ERRORS):
            connection.send(("error", e))  # pickled whole: a WriteError keeps errno and strerror
        else:
            connection.send(("error", ChildError(traceback.format_exc().rstrip())))
    else:
        connection.send(("done", result))
    finally:
        connection.close()


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def workers_for(device: str, workers: int | None) -> int:
    """How many worker processes train runs on `device` (`auto` resolved): `workers`, by default
    one per core on the CPU. A GPU's runs train in this one process (several runs as a group): a
    forked child cannot use CUDA once the parent has asked whether there is any."""
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if resolve_device(device).type == "cpu":
        return workers or default_workers()
    if workers is not None and workers > 1:
        raise UsageError(
            f"--workers {workers}: on a GPU the runs train in one process (runs of one shape "
            "together, as a group); more workers need --device cpu"
        )
    return 1


def warm_up() -> None:
    """Import, before forking, what every training child would otherwise import for itself: a
    torch optimizer's first construction imports torch._dynamo, about 2 s of one core."""
    import torch._dynamo  # noqa: F401


def can_fork() -> bool:
    """Linux forks cheaply and safely here; elsewhere the pool runs jobs in this process."""
    return sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()


def run_jobs(
    jobs: Sequence[Job],
    workers: int,
    on_message: Callable[[Any], None],
    threads: int | None = None,
) -> list[Any]:
    """Each job's return value, in the order of `jobs`, running `workers` of them at once, each
    child with `threads` threads (default: the cores shared out among the children running).

    With one worker, one job, or no `fork` (jobs are closures: only a forked child inherits
    them), the jobs run one by one in this process and get None for `send`: they report through
    the callbacks they have (this process's) directly.
    """
    if workers <= 1 or len(jobs) <= 1 or not can_fork():
        return [job(None) for job in jobs]
    if threads is None:  # the cores shared out; at least one thread each
        threads = max(1, default_workers() // min(workers, len(jobs)))
    warm_up()
    context = multiprocessing.get_context("fork")
    results: list[Any] = [None] * len(jobs)
    queue = list(enumerate(jobs))
    running: dict[Connection, tuple[int, Any]] = {}  # receiving end -> (job index, process)
    try:
        while queue or running:
            while queue and len(running) < workers:
                index, job = queue.pop(0)
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(
                    target=_child, args=(job, sender, os.getpid(), threads), daemon=True
                )
                process.start()
                sender.close()  # the child's end: EOF reaches us when the child is gone
                running[receiver] = (index, process)
            on_message(None)  # a heartbeat: lets the callback stop us
            for receiver in wait(list(running), timeout=0.2):
                index, process = running[receiver]
                try:
                    kind, *payload = receiver.recv()
                except EOFError:  # died without an outcome (killed, out of memory)
                    process.join()
                    raise ChildError(
                        f"a worker process exited with code {process.exitcode} before its job "
                        "finished (killed, or out of memory: fewer --workers need less)"
                    ) from None
                if kind == "message":
                    on_message(payload[0])
                    continue
                del running[receiver]
                receiver.close()
                process.join()
                if kind == "error":
                    raise payload[0]
                results[index] = payload[0]
    finally:
        for receiver, (_, process) in running.items():
            if process.is_alive():
                os.kill(process.pid, signal.SIGKILL)  # it may not have set its handlers yet
            process.join()
            receiver.close()
    return results
