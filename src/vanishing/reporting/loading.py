"""Finding run directories and reading their records (`RunRecords`), with a note for each one that
cannot be used."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

from vanishing import records
from vanishing.errors import UsageError
from vanishing.model.activations import ACTIVATIONS
from vanishing.reporting.results import RunRecords
from vanishing.settings.config import completed
from vanishing.settings.naming import watched

# The fields every finished run writes (those without a default in RunResult).
REQUIRED_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(records.RunResult)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)


def find_run_dirs(path: Path) -> list[Path]:
    """`path` itself when it is a run directory, else every run directory below it."""
    if (path / records.CONFIG).is_file():
        return [path]
    found = []
    for root, dirs, files in os.walk(path):
        if records.CONFIG in files:
            found.append(Path(root))
            dirs.clear()  # a run directory holds no runs
        dirs.sort()
    return sorted(found)


def read_run(path: Path, failed: bool = False, metrics: bool = True) -> RunRecords | str:
    """The run's records, or a note saying why they cannot be used. With `failed`, a run that
    raised counts as finished too (its result.json holds its error, no measurements; the tables
    count it), and one that failed before it wrote config.json (a sweep records it with
    result.json alone) has its result's config. Without `metrics`, metrics.jsonl is not read
    (the tables need only config.json and result.json)."""
    try:
        result = records.read_json(path / records.RESULT) if records.is_complete(path) else None
        if failed and isinstance(result, dict) and not (path / records.CONFIG).exists():
            config = result.get("config")
        else:
            config = records.read_json(path / records.CONFIG)
    except (OSError, json.JSONDecodeError) as e:
        return f"{path}: unreadable records ({e}); skipped"
    filled: tuple[str, ...] = ()
    if isinstance(config, dict) and not watched(config):
        full = completed(config)  # an older run reads as the settings' defaults
        filled = tuple(key for key in full if key not in config)
        config = full
    if not isinstance(config, dict) or config.get("activation") not in ACTIVATIONS:
        name = config.get("activation") if isinstance(config, dict) else None
        if isinstance(config, dict) and watched(config):
            return (
                f"{path}: the watched model has no activation module vanishing measures "
                f"(activation {name!r} in config.json); skipped"
            )
        return f"{path}: unknown activation {name!r} in config.json; skipped"
    hidden = config.get("hidden")
    if not isinstance(hidden, list) or not all(isinstance(w, int) for w in hidden):
        return f"{path}: config.json has no list of hidden widths; skipped"
    raised = failed and isinstance(result, dict) and result.get("status") == "failed"
    if (
        result is not None
        and not raised
        and (not isinstance(result, dict) or not all(key in result for key in REQUIRED_FIELDS))
    ):
        return f"{path}: result.json lacks fields of a finished run; skipped"
    rows = records.read_metrics(path) if metrics else []
    return RunRecords(path, config, rows, result, filled)


def run_dirs_under(paths: Sequence[Path | str]) -> list[list[Path]]:
    """Per directory given, its run directories that no earlier one holds (each run once, in
    the order given). A missing directory, or none holding a run, is a UsageError."""
    dirs = [Path(given) for given in paths]
    for path in dirs:
        if not path.is_dir():
            raise UsageError(f"no such directory: {path}")
    seen: set[Path] = set()
    found = []
    for path in dirs:
        fresh = [d for d in find_run_dirs(path) if d.resolve() not in seen]
        seen.update(d.resolve() for d in fresh)
        found.append(fresh)
    if not any(found):
        shown = ", ".join(str(p) for p in paths)
        raise UsageError(f"no run directories (with config.json) under {shown}")
    return found


def load_runs(paths: Sequence[Path | str]) -> tuple[list[RunRecords], list[str]]:
    """Every run under the given directories (deduplicated, in the order given), and notes on
    what was skipped."""
    runs: list[RunRecords] = []
    notes: list[str] = []
    for run_dirs in run_dirs_under(paths):
        for run_dir in run_dirs:
            run = read_run(run_dir)
            if isinstance(run, RunRecords):
                runs.append(run)
            else:
                notes.append(run)
    return runs, notes
