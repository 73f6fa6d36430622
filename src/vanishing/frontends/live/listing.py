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
    test_accuracy: float | None


def modified(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


class Listing:
    """The list of the served directories, each run read again only when its records change."""

    def __init__(self, roots: Sequence[Path], status_of: Callable[[Path], str]) -> None:
        self.roots, self.status_of = list(roots), status_of
        self.cache: dict[Path, tuple[tuple[int | None, int | None], RunInfo | None]] = {}

    def info(self, run_dir: Path) -> RunInfo | None:
        """The run's RunInfo, None when its config.json cannot be read."""
        key = (modified(run_dir / records.CONFIG), modified(run_dir / records.RESULT))
        cached = self.cache.get(run_dir)
        if cached is not None and cached[0] == key:
            return cached[1]
        info = None
        if any(record_file(run_dir, name) is None for name in (records.CONFIG, records.RESULT)):
            self.cache[run_dir] = (key, None)  # a linked record is not listed
            return None
        try:
            config = records.read_json(run_dir / records.CONFIG)
            result = records.read_json(run_dir / records.RESULT) if key[1] is not None else None
        except (OSError, ValueError):
            config = result = None
        if isinstance(config, dict):
            result = result if isinstance(result, dict) else {}
            accuracy = result.get("test_accuracy")
            info = RunInfo(
                completed(config),
                result.get("status"),
                accuracy if isinstance(accuracy, (int, float)) else None,
            )
        self.cache[run_dir] = (key, info)
        return info

    def items(self) -> list[dict[str, Any]]:
        """Per served directory: each compare or sweep (a directory holding several runs; the
        live --out directory holds separate runs, not a compare), then every run."""
        items = []
        for index, root in enumerate(self.roots):
            runs = []
            for run_dir in find_run_dirs(root):
                info = self.info(run_dir)
                if info is not None:
                    runs.append((run_dir, info))
            parents: dict[Path, list[tuple[Path, RunInfo]]] = {}
            for run_dir, info in runs:
                if run_dir != root and not (index == 0 and run_dir.parent == root):
                    parents.setdefault(run_dir.parent, []).append((run_dir, info))
            held = {parent: members for parent, members in parents.items() if len(members) > 1}
            for parent, members in held.items():
                statuses = [info.status or self.status_of(run_dir) for run_dir, info in members]
                accuracies = stats.finite(i.test_accuracy for _, i in members if i.status == "ok")
                items.append(
                    {
                        "kind": "sweep" if (parent / SWEEP_MARK).is_file() else "compare",
                        "path": run_path(self.roots, index, parent),
                        "runs": [run_path(self.roots, index, run_dir) for run_dir, _ in members],
                        "label": f"{parent.name} ({len(members)} runs)",
                        "status": parent_status(statuses),
                        "test_accuracy": stats.mean(accuracies) if accuracies else None,
                    }
                )
            configs = [info.config for _, info in runs]  # named by what sets them apart
            for run_dir, info in runs:
                path = run_path(self.roots, index, run_dir)
                items.append(
                    {
                        "kind": "run",
                        "path": path,
                        "runs": [path],
                        "label": label(info.config, configs),
                        "status": info.status or self.status_of(run_dir),
                        "test_accuracy": info.test_accuracy,
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
