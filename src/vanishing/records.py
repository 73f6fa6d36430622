"""Run records on disk: written by training, read by everything else.

A run directory holds `config.json` (written first), `metrics.jsonl` (append-only, one row per
probe and per epoch) and `result.json` (written last, atomically: a run without it did not
finish). Non-finite floats (a diverged loss, a ratio over zero) are written as null, so every
file is strict JSON that any reader, a browser included, can parse.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

CONFIG, METRICS, RESULT = "config.json", "metrics.jsonl", "result.json"


def finite(value: Any) -> Any:
    """The value with every non-finite float replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def dumps(value: Any, indent: int | None = None) -> str:
    """Strict JSON text of a record."""
    return json.dumps(finite(value), indent=indent, allow_nan=False)


def write_json(path: Path, value: Any) -> None:
    """Write a JSON file atomically: to a temporary name in the same directory, then rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(dumps(value, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class MetricsWriter:
    """Appends rows to `metrics.jsonl`, one line each, flushed so a crash loses at most one row."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "w")  # noqa: SIM115 - closed by close()

    def write(self, row: dict[str, Any]) -> None:
        self.file.write(dumps(row) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_json(path: Path) -> Any:
    """Read one JSON record."""
    with open(path) as f:
        return json.load(f)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run's `metrics.jsonl`; a torn last line (a killed run) is skipped."""
    rows = []
    path = Path(run_dir) / METRICS
    if not path.exists():
        return rows
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def is_complete(run_dir: Path) -> bool:
    """A run is complete when its result.json exists."""
    return (Path(run_dir) / RESULT).is_file()
