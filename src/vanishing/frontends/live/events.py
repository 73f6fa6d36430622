"""The live event stream: each followed run's layer names, its metrics.jsonl rows from the start,
then as training appends them, with a verdict after every probe and the run's status, as
Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from vanishing import records
from vanishing.frontends.live.safety import record_file
from vanishing.reporting.verdict import live_headline
from vanishing.settings.naming import LayerNames

POLL_SECONDS = 0.1  # how often a run's metrics.jsonl is looked at: well under the 1 s budget
FINAL = ("ok", "diverged", "failed", "stopped", "unfinished")  # nothing more will come

StatusOf = Callable[[Path], str]


def sse(event: str, data: dict[str, Any]) -> str:
    """One Server-Sent Event; the data is strict JSON (non-finite numbers as null)."""
    return f"event: {event}\ndata: {records.dumps(data)}\n\n"


def result_status(run_dir: Path) -> str | None:
    """The status in the run's result.json, None while it has none (or it is being replaced)."""
    path = record_file(run_dir, records.RESULT)
    try:
        result = records.read_json(path) if path is not None else None
    except (OSError, ValueError):
        return None
    status = result.get("status") if isinstance(result, dict) else None
    return str(status) if status is not None else None


class RunFollower:
    """Follows one run directory's records for the stream: its layer names once, then the whole
    lines of its metrics.jsonl not yet sent, read from where the last poll stopped; a file cut
    back (the run started afresh) is read again from its start."""

    def __init__(self, run: str, run_dir: Path, status_of: StatusOf) -> None:
        self.run, self.run_dir, self.status_of = run, run_dir, status_of
        self.offset = 0
        self.rows: list[dict[str, Any]] = []
        self.config: dict[str, Any] | None = None
        self.status: str | None = None
        self.named = False  # the layers event is sent
        self.ended = False

    def poll(self) -> list[str]:
        """The events since the last poll. The status is read before the rows: a run whose
        result.json (written last) was there has all its rows read by this poll."""
        status = self.status_of(self.run_dir)
        events = self.read_rows()
        if status != self.status:
            self.status = status
            events.append(sse("status", {"run": self.run, "status": status}))
        self.ended = status in FINAL
        return events

    def read_rows(self) -> list[str]:
        path = record_file(self.run_dir, records.METRICS)
        try:
            size = path.stat().st_size if path is not None else 0
        except FileNotFoundError:
            size = 0
        events = []
        if size < self.offset:  # cut back: a run started afresh, or resumed from a checkpoint
            self.offset, self.rows, self.config, self.named = 0, [], None, False
            events.append(sse("reset", {"run": self.run}))
        if size == self.offset or path is None:
            return events
        with open(path, "rb") as f:
            f.seek(self.offset)
            data = f.read(size - self.offset)
        whole = data[: data.rfind(b"\n") + 1]  # the writer appends whole lines: wait for the rest
        self.offset += len(whole)
        probed = False
        if whole and not self.named and self.read_config():  # the names come before the rows
            weighted, hidden = LayerNames.listed(self.read_config())
            events.append(sse("layers", {"run": self.run, "weighted": weighted, "hidden": hidden}))
            self.named = True
        for line in whole.splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # not a record: skipped, as records.read_metrics would stop
                continue
            self.rows.append(row)
            events.append(sse("row", {"run": self.run, "row": row}))
            probed = probed or row.get("kind") == "probe"
        if probed:  # one verdict per poll, on every row so far: a long replay costs one
            headline = live_headline(self.rows, self.read_config())
            events.append(sse("verdict", {"run": self.run, "headline": headline}))
        return events

    def read_config(self) -> dict[str, Any]:
        if self.config is None:
            path = record_file(self.run_dir, records.CONFIG)
            try:
                config = records.read_json(path) if path is not None else {}
            except (OSError, ValueError):
                return {}
            self.config = config if isinstance(config, dict) else {}
        return self.config


async def stream(
    followed: Sequence[tuple[str, Path]], status_of: StatusOf, closing: threading.Event
) -> AsyncIterator[str]:
    """Every followed run's events until each has ended (finished, or its job stopped), then
    `end`; the server closing ends the stream early, with an `end` that says so."""
    followers = [RunFollower(run, run_dir, status_of) for run, run_dir in followed]
    yield ": vanishing live\n\n"  # a comment: the response starts at once
    while not closing.is_set():
        for follower in followers:
            for event in follower.poll():
                yield event
        if all(follower.ended for follower in followers):
            yield sse("end", {"runs": [run for run, _ in followed]})
            return
        await asyncio.sleep(POLL_SECONDS)
    # The server is closing: say so, so that the page stops listening (its runs stay resumable).
    yield sse("end", {"runs": [run for run, _ in followed], "server": "stopped"})
