"""What the live server reads of a run directory, checked before it is used: config.json and
result.json as regular files of a bounded size, in the shapes the page's list, labels and layer
names rely on, and the process that holds a run another process trains. A record that fails a
check makes its run unreadable (`Unreadable`, one line saying why), said once in the server's
log (`Skipped`), never an exception in the middle of a response."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vanishing import records
from vanishing.settings.config import kind_of, optional, settings
from vanishing.settings.naming import watched

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, no holder to name
    fcntl = None  # type: ignore[assignment]

LOG = logging.getLogger("vanishing.live")
MAX_RECORD = 64 * 2**20  # bytes of a config.json or result.json (a result's history is epochs)
STATUSES = ("ok", "diverged", "failed")  # what a result.json says (records, executor)
SCALARS = (str, int, float, bool, type(None))
KIND_WORDS = {
    int: "a whole number",
    float: "a number",
    str: "a name",
    bool: "true or false",
    tuple: "a list",
}
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # a symlinked record is never followed


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
    records are never links, and one could lead outside the served directories). Anything but a
    regular file of at most MAX_RECORD bytes holding JSON is Unreadable; a FIFO is not waited on."""
    path = run_dir / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW)
    except FileNotFoundError:
        return ABSENT
    except OSError as e:
        if path.is_symlink():
            return ABSENT
        raise Unreadable(f"{name}: cannot read ({e.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise Unreadable(f"{name} is not a file")
    with os.fdopen(fd, "rb") as f:
        if info.st_size > MAX_RECORD:
            raise Unreadable(f"{name} is larger than {MAX_RECORD} bytes")
        try:
            data = f.read(info.st_size + 1)  # read(n) allocates n bytes at once
        except OSError as e:
            raise Unreadable(f"{name}: cannot read ({e.strerror})") from None
    try:
        return json.loads(data)
    except UnicodeDecodeError:
        raise Unreadable(f"{name} is not UTF-8 text") from None
    except ValueError as e:
        raise Unreadable(f"{name} is not valid JSON ({e})") from None
    except RecursionError:
        raise Unreadable(f"{name} is nested too deeply to read") from None


def check_config(config: Any) -> dict[str, Any]:
    """A config.json's value as the list and the stream use it: an object whose activation is a
    name, whose hidden widths are whole numbers and, for a run of the trainer's, whose settings
    have their types (a string where a number belongs is refused). Else Unreadable."""
    if not isinstance(config, dict):
        raise Unreadable(f"{records.CONFIG} holds {json_kind(config)}, not an object")
    activation = config.get("activation")
    if activation is not None and not isinstance(activation, str):
        raise Unreadable(f"{records.CONFIG}: activation is {shorten(activation)}, not a name")
    hidden = config.get("hidden", [])
    if not isinstance(hidden, list) or not all(
        isinstance(width, int) and not isinstance(width, bool) and width >= 0 for width in hidden
    ):
        raise Unreadable(f"{records.CONFIG}: hidden is {shorten(hidden)}, not a list of widths")
    if watched(config):
        return config
    for setting in settings():
        value = config.get(setting.name)
        if setting.name in ("activation", "hidden") or setting.name not in config:
            continue
        if value is None and optional(setting):
            continue
        if not has_kind(value, kind_of(setting)):
            raise Unreadable(
                f"{records.CONFIG}: {setting.name} is {shorten(value)}, "
                f"not {KIND_WORDS[kind_of(setting)]}"
            )
    others = [k for k, v in config.items() if k != "hidden" and not isinstance(v, SCALARS)]
    if others:
        value = shorten(config[others[0]])
        raise Unreadable(f"{records.CONFIG}: {others[0]} is {value}, not a single value")
    return config


def has_kind(value: Any, kind: type) -> bool:
    """Whether a JSON value is of a setting's type (an int is a float; a bool is neither)."""
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def check_result(result: Any) -> dict[str, Any]:
    """A result.json's value as the list and the stream use it: an object whose status is one of
    STATUSES and whose config, where it has one, is an object. Else Unreadable."""
    if not isinstance(result, dict):
        raise Unreadable(f"{records.RESULT} holds {json_kind(result)}, not an object")
    status = result.get("status")
    if status not in STATUSES:
        raise Unreadable(
            f"{records.RESULT}: unknown status {shorten(status)} (expected {', '.join(STATUSES)})"
        )
    if "config" in result and not isinstance(result["config"], dict):
        value = shorten(result["config"])
        raise Unreadable(f"{records.RESULT}: its config is {value}, not an object")
    return result


def json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words: null, a list, a string, a number, true or false."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    kinds = {list: "a list", str: "a string", int: "a number", float: "a number"}
    return kinds.get(type(value), "an object")


def shorten(value: Any, limit: int = 60) -> str:
    """A value as a message quotes it, cut to `limit` characters."""
    text = repr(value) if not isinstance(value, (list, dict)) else safe_json(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def safe_json(value: Any) -> str:
    try:
        return json.dumps(value)
    except (ValueError, TypeError, RecursionError):
        return type(value).__name__


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
