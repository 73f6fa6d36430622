"""What the live server reads of a run directory, checked before it is used: config.json and
result.json as regular files of a bounded size, in the shapes the page's list, labels and layer
names rely on, and the process that holds a run another process trains. A record that fails a
check makes its run unreadable (`Unreadable`, one line saying why), said once in the server's
log (`Skipped`), never an exception in the middle of a response."""

from __future__ import annotations

import logging
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vanishing import records
from vanishing.records import NOFOLLOW  # a symlinked record is never followed
from vanishing.reporting.loading import checked_result, config_problem

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, no holder to name
    fcntl = None  # type: ignore[assignment]

LOG = logging.getLogger("vanishing.live")


@dataclass(frozen=True)
class Status:
    """A run's status as the page shows it (running, ok, diverged, failed, stopped or
    unfinished) and a note on it: which other process trains it."""

    status: str
    note: str | None = None

    def event(self, run: str) -> dict[str, Any]:
        """The status event's data (the note only where there is one)."""
        data = {"run": run, "status": self.status}
        return data | {"note": self.note} if self.note else data


ABSENT = object()  # `read_record`'s answer for a record that is not there


class Unreadable(Exception):
    """A run directory whose records cannot be used; the message says which and why."""


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """The run's config.json, checked (`check_config`); None while it has none."""
    config = read_record(run_dir, records.CONFIG)
    return None if config is ABSENT else check_config(config)


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The run's result.json, checked (`check_result`); None while it has none."""
    result = read_record(run_dir, records.RESULT)
    return None if result is ABSENT else check_result(result)


def check_metrics(run_dir: Path) -> None:
    """Unreadable when the run's metrics.jsonl is there but not a regular file."""
    try:
        mode = os.lstat(run_dir / records.METRICS).st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):  # a link is not read
        raise Unreadable(f"{records.METRICS} is not a file")


def read_record(run_dir: Path, name: str) -> Any:
    """The JSON value of the run's record `name`, ABSENT when there is none (or it is a symlink:
    records are never links, and one could lead outside the served directories). What
    `records.read_json` refuses (not a regular file, too large, not JSON; a FIFO is not waited
    on) is Unreadable."""
    path = run_dir / name
    try:
        return records.read_json(path, follow=False)
    except FileNotFoundError:
        return ABSENT
    except OSError as e:
        if path.is_symlink():
            return ABSENT
        raise Unreadable(f"{name}: cannot read ({e.strerror})") from None
    except ValueError as e:
        raise Unreadable(f"{name}: {e}") from None


def check_config(config: Any) -> dict[str, Any]:
    """A config.json's value as the list and the stream use it, checked as the report checks it
    (`loading.config_problem`; a watched model without an activation module is listed, its
    gradients streamed). Else Unreadable."""
    problem = config_problem(config, measured=False)
    if problem is not None or not isinstance(config, dict):
        raise Unreadable(problem)
    return config


def check_result(result: Any) -> dict[str, Any]:
    """A result.json's value as the list and the stream use it, checked as the report checks it
    (`loading.checked_result`). Else Unreadable."""
    checked = checked_result(result, failed=True, complete=False)
    if isinstance(checked, str):
        raise Unreadable(checked)
    return checked


class Skipped:
    """The server's log of the runs it cannot read: each run and reason said once, however
    often the list is read or a stream polls."""

    def __init__(self) -> None:
        self.said: set[tuple[str, str]] = set()
        self.lock = threading.Lock()

    def say(self, run: str, reason: str) -> None:
        with self.lock:
            if (run, reason) in self.said:
                return
            self.said.add((run, reason))
        LOG.warning("skipped %s: %s", run, reason)


def held_by(run_dir: Path) -> int | None:
    """The pid of another process that holds the run's lock (`records.lock_run`: it trains the
    run), None when none does. Looked at without taking the lock from its holder: only when the
    pid the lock file names is alive and not ours is the lock tried, shared and let go at once."""
    if fcntl is None:
        return None
    try:  # as records.lock_holder reads it, but never waiting on a FIFO
        fd = os.open(run_dir / records.LOCK, os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        words = os.read(fd, 64).split()
        pid = int(words[0]) if words and words[0].isdigit() else 0
        if not 0 < pid < 2**31 or pid == os.getpid() or not alive(pid):
            return None
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return pid  # held: the holder trains it
    except OSError:
        return None
    finally:
        os.close(fd)  # lets go of a shared lock taken
    return None


def alive(pid: int) -> bool:
    """Whether a process `pid` exists (one of another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
