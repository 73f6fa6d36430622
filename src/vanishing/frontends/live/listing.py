"""What the page's list shows: every run directory under the served directories, and the compares
and sweeps they form, read from config.json and result.json (cached by modification time, so
the list stays fast while runs train)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vanishing import records, stats
from vanishing.executor import error_line
from vanishing.frontends.live.reading import (
    Skipped,
    Status,
    Unreadable,
    check_metrics,
    read_config,
    read_result,
)
from vanishing.frontends.live.safety import record_file, run_path
from vanishing.reporting.loading import find_run_dirs
from vanishing.settings.config import completed
from vanishing.settings.naming import label

SWEEP_MARK = "sweep.json"  # what `vanishing sweep` writes into its directory


@dataclass(frozen=True)
class RunInfo:
    """What the list needs of one run directory."""

    config: dict[str, Any]
    status: str | None  # result.json's; None while the run has not finished
    test_accuracy: float | None  # None for a regression run (and an unfinished one)
    test_loss: float | None  # a regression's: the mean squared error on the test set
    baseline_loss: float | None  # a regression's: that of always answering 1


def modified(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


class Listing:
    """The list of the served directories, each run read again only when its records change;
    a run that cannot be read is left out, its reason said once in the server's log."""

    def __init__(
        self,
        roots: Sequence[Path],
        status_of: Callable[[Path], Status],
        skipped: Skipped | None = None,
    ) -> None:
        self.roots, self.status_of, self.skipped = list(roots), status_of, skipped or Skipped()
        self.cache: dict[Path, tuple[tuple[int | None, int | None], RunInfo | str | None]] = {}

    def info(self, run_dir: Path) -> RunInfo | str | None:
        """The run's RunInfo; None when it has no config.json (or a linked record), else the
        reason it cannot be read."""
        key = (modified(run_dir / records.CONFIG), modified(run_dir / records.RESULT))
        cached = self.cache.get(run_dir)
        if cached is not None and cached[0] == key:
            return cached[1]
        info: RunInfo | str | None
        if any(record_file(run_dir, name) is None for name in (records.CONFIG, records.RESULT)):
            info = None  # a linked record is not listed
        else:
            try:
                info = read_info(run_dir)
            except Unreadable as e:
                info = str(e)
        self.cache[run_dir] = (key, info)
        return info

    def status(self, run_dir: Path, info: RunInfo) -> Status:
        """The run's status: its result's, else the server's (`LiveState.status_of`); a result
        that came and cannot be read since `info` was read: unfinished, until the list reads
        it again."""
        if info.status:
            return Status(info.status)
        try:
            return self.status_of(run_dir)
        except Exception:
            return Status("unfinished")

    def items(self) -> list[dict[str, Any]]:
        """Per served directory: each compare or sweep (a directory holding several runs; the
        live --out directory holds separate runs, not a compare), then every run."""
        items = []
        for index, root in enumerate(self.roots):
            runs = []
            for run_dir in find_run_dirs(root):
                try:
                    info = self.info(run_dir)
                    if isinstance(info, RunInfo):
                        label(info.config, [info.config])  # names it, alone at least
                except Exception as e:  # a shape no check foresaw: this run only
                    info = error_line(e)
                if isinstance(info, str):
                    self.skipped.say(run_path(self.roots, index, run_dir), info)
                elif info is not None:
                    runs.append((run_dir, info))
            parents: dict[Path, list[tuple[Path, RunInfo]]] = {}
            for run_dir, info in runs:
                if run_dir != root and not (index == 0 and run_dir.parent == root):
                    parents.setdefault(run_dir.parent, []).append((run_dir, info))
            held = {parent: members for parent, members in parents.items() if len(members) > 1}
            for parent, members in held.items():
                statuses = [self.status(run_dir, info).status for run_dir, info in members]
                done = [info for _, info in members if info.status == "ok"]
                accuracies = stats.finite(info.test_accuracy for info in done)
                losses = stats.finite(info.test_loss for info in done)
                baselines = stats.finite(info.baseline_loss for info in done)
                items.append(
                    {
                        "kind": "sweep" if (parent / SWEEP_MARK).is_file() else "compare",
                        "path": run_path(self.roots, index, parent),
                        "runs": [run_path(self.roots, index, run_dir) for run_dir, _ in members],
                        "label": f"{parent.name} ({len(members)} runs)",
                        "status": parent_status(statuses),
                        "test_accuracy": stats.mean(accuracies) if accuracies else None,
                        "test_loss": stats.mean(losses) if losses else None,
                        "baseline_loss": stats.mean(baselines) if baselines else None,
                    }
                )
            configs = [info.config for _, info in runs]  # named by what sets them apart
            for run_dir, info in runs:
                path = run_path(self.roots, index, run_dir)
                status = self.status(run_dir, info)
                items.append(
                    {
                        "kind": "run",
                        "path": path,
                        "runs": [path],
                        "label": labelled(info.config, configs),
                        "status": status.status,
                        "note": status.note,
                        "test_accuracy": info.test_accuracy,
                        "test_loss": info.test_loss,
                        "baseline_loss": info.baseline_loss,
                        "parent": run_path(self.roots, index, run_dir.parent)
                        if run_dir.parent in held
                        else None,
                    }
                )
        return items


def parent_status(statuses: Sequence[str]) -> str:
    """A compare's or sweep's status: running while any run trains, else its runs' one status,
    else 'mixed'."""
    if "running" in statuses:
        return "running"
    return statuses[0] if len(set(statuses)) == 1 else "mixed"


def read_info(run_dir: Path) -> RunInfo:
    """What the list needs of a run, from its config.json and result.json, checked
    (`reading.check_config`, `reading.check_result`); Unreadable says why not."""
    config = read_config(run_dir)
    if config is None:
        raise Unreadable(f"{records.CONFIG} went away")
    result = read_result(run_dir) or {}
    check_metrics(run_dir)
    accuracy, loss, baseline = (
        value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        for value in (result.get(key) for key in ("test_accuracy", "test_loss", "baseline_loss"))
    )
    return RunInfo(completed(config), result.get("status"), accuracy, loss, baseline)


def labelled(config: dict[str, Any], configs: Sequence[dict[str, Any]]) -> str:
    """The run's label among the listed runs; alone, should they not compare."""
    try:
        return label(config, configs)
    except Exception:  # a shape no check foresaw: named as if listed alone
        return label(config)
