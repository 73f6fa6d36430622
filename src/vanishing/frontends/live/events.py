"""The live event stream: each followed run's layer names, its metrics.jsonl rows from the start,
then as training appends them, with a verdict after every probe (and a data-parallel run's
per-rank table) and the run's status, as Server-Sent Events. Files are read off the event
loop, a bounded chunk per poll; a run that cannot be read gets an `unreadable` event and its
stream ends, never an exception mid-response."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from vanishing import records
from vanishing.executor import error_line
from vanishing.frontends.live.reading import (
    NOFOLLOW,
    Skipped,
    Status,
    Unreadable,
    read_config,
)
from vanishing.frontends.live.safety import record_file
from vanishing.reporting.loading import with_ranks
from vanishing.reporting.ranks import rank_table, ranks_note
from vanishing.reporting.results import RunRecords
from vanishing.reporting.verdict import live_headline
from vanishing.settings.naming import LayerNames, rank_of, world_size

POLL_SECONDS = 0.1  # how often a run's metrics.jsonl is looked at: well under the 1 s budget
FINAL = ("ok", "diverged", "failed", "stopped", "unfinished")  # nothing more will come
CHUNK = 4 * 2**20  # bytes of metrics.jsonl one poll reads: other requests wait on none of it
MAX_LINE = records.MAX_ROW_BYTES  # a longer line is not a record (`records.parse_row`)

StatusOf = Callable[[Path], Status]


def sse(event: str, data: dict[str, Any]) -> str:
    """One Server-Sent Event; the data is strict JSON (non-finite numbers as null)."""
    return f"event: {event}\ndata: {records.dumps(data)}\n\n"


class RunFollower:
    """Follows one run directory's records for the stream: its layer names once, then the whole
    lines of its metrics.jsonl not yet sent, read from where the last poll stopped, at most
    CHUNK bytes a poll; a file cut back (the run started afresh) is read again from its start.
    A line longer than MAX_LINE is skipped unread, as is a line that is not a JSON object."""

    def __init__(
        self, run: str, run_dir: Path, status_of: StatusOf, skipped: Skipped | None = None
    ) -> None:
        self.run, self.run_dir, self.status_of = run, run_dir, status_of
        self.skipped = skipped or Skipped()
        self.offset = 0  # where the first line not yet read starts
        self.scanned = 0  # bytes after `offset` known to hold no newline (a line being written)
        self.skipping = False  # inside a line longer than MAX_LINE: dropped up to its newline
        self.behind = False  # the last poll left bytes unread (more than CHUNK came)
        self.rows: list[dict[str, Any]] = []
        self.config: dict[str, Any] | None = None
        self.status: Status | None = None
        self.named = False  # the layers event is sent
        self.ended = False
        self.unreadable = False  # said so: polled no more

    def poll(self) -> list[str]:
        """The events since the last poll; a run that cannot be read (a damaged record, or any
        failure reading it) ends with one `unreadable` event, its reason said once in the log."""
        try:
            return self.read()
        except Exception as e:  # this run's failure, never the stream's
            reason = str(e) if isinstance(e, Unreadable) else error_line(e)
            self.skipped.say(self.run, reason)
            self.ended = self.unreadable = True
            self.behind = False
            return [sse("unreadable", {"run": self.run, "error": reason})]

    def read(self) -> list[str]:
        """The status is read before the rows: a run whose result.json (written last) was there
        has all its rows read by this poll."""
        status = self.status_of(self.run_dir)
        events = self.read_rows()
        if status != self.status:
            self.status = status
            events.append(sse("status", status.event(self.run)))
        self.ended = status.status in FINAL and not self.behind
        return events

    def metrics_size(self) -> int:
        """metrics.jsonl's size, 0 while there is none (or it is a link); not a regular file:
        Unreadable."""
        path = record_file(self.run_dir, records.METRICS)
        try:
            info = os.stat(path) if path is not None else None
        except FileNotFoundError:
            return 0
        if info is None:
            return 0
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable(f"{records.METRICS} is not a file")
        return info.st_size

    def read_rows(self) -> list[str]:
        size = self.metrics_size()
        events = []
        if size < self.offset + self.scanned:  # cut back: started afresh, or resumed
            self.offset = self.scanned = 0
            self.skipping, self.rows, self.config, self.named = False, [], None, False
            events.append(sse("reset", {"run": self.run}))
        data = self.read_lines(size)
        if not data:
            return events
        probed = False
        if not self.named and self.read_config():  # the names come before the rows
            weighted, hidden = LayerNames.listed(self.read_config())
            events.append(sse("layers", {"run": self.run, "weighted": weighted, "hidden": hidden}))
            self.named = True
        for line in data.splitlines():
            row = records.parse_row(line)
            if row is None:  # not a record: skipped, as records.read_metrics skips it
                continue
            try:
                event = sse("row", {"run": self.run, "row": row})
            except (ValueError, TypeError, RecursionError):
                continue
            self.rows.append(row)
            events.append(event)
            probed = probed or row.get("kind") == "probe"
        if probed and not self.behind:  # one verdict per poll, on every row so far
            events += self.verdict()
        return events

    def read_lines(self, size: int) -> bytes:
        """The whole lines that came since the last poll, reading at most CHUNK new bytes
        (besides a line begun before, at most MAX_LINE): b'' when none is whole yet."""
        end = self.offset + self.scanned
        if size <= end:
            self.behind = False
            return b""
        fd = os.open(self.run_dir / records.METRICS, os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise Unreadable(f"{records.METRICS} is not a file")
            f.seek(end)
            chunk = f.read(min(CHUNK, size - end))
            self.behind = end + len(chunk) < size
            newline = chunk.rfind(b"\n")
            if newline < 0:  # the writer appends whole lines: wait for the rest
                self.scanned += len(chunk)
                if self.scanned > MAX_LINE and not self.skipping:
                    self.skipped.say(
                        self.run,
                        f"{records.METRICS}: a line of more than {MAX_LINE} bytes at byte "
                        f"{self.offset} is not a record, skipped",
                    )
                    self.skipping = True
                if self.skipping:  # nothing of it is kept
                    self.offset, self.scanned = self.offset + self.scanned, 0
                return b""
            stop = end + newline + 1
            if self.scanned and not self.skipping:  # a line begun in an earlier poll
                f.seek(self.offset)
                data = f.read(stop - self.offset)
            else:
                data = chunk[: newline + 1]
        if self.skipping:  # the rest of the long line
            data = data[data.index(b"\n") + 1 :]
            self.skipping = False
        self.offset, self.scanned = stop, 0
        return data

    def verdict(self) -> list[str]:
        """The verdict event on every row so far; none (said once in the log) where the rows
        hold something the verdict cannot read."""
        try:
            headline = live_headline(self.rows, self.read_config())
        except Exception as e:
            self.skipped.say(self.run, f"no verdict: {error_line(e)}")
            return []
        return [sse("verdict", {"run": self.run, "headline": headline}), *self.ranks()]

    def ranks(self) -> list[str]:
        """A data-parallel run's per-rank table (`reporting.ranks`: the report's), its ranks'
        records read again at each verdict; none for any other run, nor (said once in the log)
        where they cannot be read."""
        config = self.read_config()
        if world_size(config) == 1 or rank_of(config) is not None:
            return []
        try:
            run, notes = with_ranks(
                RunRecords(self.run_dir, config, self.rows, None), expected=False
            )
            table = rank_table(run)
        except Exception as e:
            self.skipped.say(self.run, f"no per-rank table: {error_line(e)}")
            return []
        for note in notes:  # a damaged rank: left out of the table
            self.skipped.say(self.run, note)
        if table is None:
            return []
        data = {"run": self.run, "header": table.header, "rows": table.rows}
        return [sse("ranks", data | {"note": ranks_note(run)})]

    def read_config(self) -> dict[str, Any]:
        """The run's config.json, checked (`reading.check_config`); {} while it has none."""
        if self.config is None:
            self.config = read_config(self.run_dir)
        return self.config or {}


def poll_all(followers: Sequence[RunFollower]) -> list[str]:
    """Every follower's events, those of a run said to be unreadable no more (in a thread)."""
    events = []
    for follower in followers:
        if not follower.unreadable:
            events += follower.poll()
    return events


async def stream(
    followed: Sequence[tuple[str, Path]],
    status_of: StatusOf,
    closing: threading.Event,
    skipped: Skipped | None = None,
) -> AsyncIterator[str]:
    """Every followed run's events until each has ended (finished, its job stopped, or it
    cannot be read), then `end`; the server closing ends the stream early, with an `end` that
    says so. The files are read in a worker thread: other requests are served meanwhile."""
    skipped = skipped or Skipped()
    followers = [RunFollower(run, run_dir, status_of, skipped) for run, run_dir in followed]
    yield ": vanishing live\n\n"  # a comment: the response starts at once
    while not closing.is_set():
        for event in await run_in_threadpool(poll_all, followers):
            yield event
        if all(follower.ended for follower in followers):
            yield sse("end", {"runs": [run for run, _ in followed]})
            return
        behind = any(follower.behind for follower in followers)
        await asyncio.sleep(0 if behind else POLL_SECONDS)  # a long file: read on at once
    # The server is closing: say so, so that the page stops listening (its runs stay resumable).
    yield sse("end", {"runs": [run for run, _ in followed], "server": "stopped"})
