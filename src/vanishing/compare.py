"""The main job: train the same MLP with several activations and seeds, then summarise."""

from __future__ import annotations

import csv
import dataclasses
import math
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vanishing import records
from vanishing.activations import get_activation
from vanishing.config import TrainConfig
from vanishing.data import Dataset
from vanishing.errors import UsageError
from vanishing.records import RunResult
from vanishing.runs import Policy, Run, execute, group_size

SUMMARY_FIELDS = (
    "activation",
    "runs",
    "diverged",
    "test_accuracy_mean",
    "test_accuracy_std",
    "test_loss_mean",
    "seconds_per_epoch",
    "vanishing_ratio_init",
    "dead_percent",
    "saturated_percent",
)


def run_name(config: TrainConfig) -> str:
    """The run directory's name within a comparison."""
    return f"{config.activation}-seed{config.seed}"


def ensure_writable(out: Path) -> Path:
    """Create the output directory, or fail with a clear message before any training starts.

    The test file has a name of its own (two commands may start on one directory at once)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UsageError(f"cannot write to output directory {out}: {e.strerror or e}") from None
    return out


def compare(
    base: TrainConfig,
    activations: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    dataset: Dataset,
    on_epoch: Callable[[TrainConfig, dict[str, Any]], None] | None = None,
    on_steps: Callable[[int], None] | None = None,
    group: bool | int = True,
    resume: bool = False,
    workers: int = 1,
    stop: threading.Event | None = None,
) -> list[RunResult]:
    """Train `base` once per activation and seed; each run gets its own directory under `out`.

    The runs go through the executor (`runs.execute`): runs of one shape train together in
    groups of up to `runs.group_size` for the device (1 on the CPU), or of up to `group` when it
    is a number (False: one at a time), `workers` units at once, each in a forked process. With
    `resume`, finished runs are read back and unfinished ones continue from their checkpoints;
    without, every run starts afresh. The first run that fails stops the comparison. An unknown
    activation is refused by `TrainConfig` before anything trains.
    """
    configs = [dataclasses.replace(base, activation=a, seed=s) for a in activations for s in seeds]
    runs = [Run(config, Path(out) / run_name(config)) for config in configs]
    policy = Policy(
        workers=workers,
        group=group_size(base.device, group),
        resume=resume,
        keep_finished=resume,
    )
    execute(runs, policy, dataset=dataset, on_epoch=on_epoch, on_steps=on_steps, stop=stop)
    return [records.load_result(run.config, run.run_dir) for run in runs]  # type: ignore[misc]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value; nan for none)."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def weighted_percent(fractions: Sequence[float], widths: Sequence[int]) -> float:
    """Per-layer fractions of units -> percent of all hidden units."""
    if not fractions:
        return math.nan
    return 100 * sum(f * w for f, w in zip(fractions, widths, strict=True)) / sum(widths)


def summarize(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """One row per activation, over its seeds, in the order the activations ran."""
    groups: dict[str, list[RunResult]] = {}
    for result in results:
        groups.setdefault(result.config["activation"], []).append(result)
    rows = []
    for activation, runs in groups.items():
        ok = [r for r in runs if r.status == "ok"]
        accuracy, accuracy_std = mean_std([r.test_accuracy for r in ok])
        widths = runs[0].config["hidden"]
        ratios = [r.vanishing_ratio_init for r in runs if r.vanishing_ratio_init > 0]
        rows.append(
            {
                "activation": activation,
                "runs": len(runs),
                "diverged": len(runs) - len(ok),
                "test_accuracy_mean": accuracy,
                "test_accuracy_std": accuracy_std,
                "test_loss_mean": mean_std([r.test_loss for r in ok])[0],
                "seconds_per_epoch": mean_std(
                    [r.train_seconds / len(r.history) for r in ok if r.history]
                )[0],
                # Ratios span orders of magnitude: their geometric mean.
                "vanishing_ratio_init": (
                    math.exp(sum(math.log(v) for v in ratios) / len(ratios)) if ratios else math.nan
                ),
                "dead_percent": mean_std([weighted_percent(r.dead_fraction, widths) for r in ok])[
                    0
                ],
                "saturated_percent": mean_std(
                    [weighted_percent(r.saturated_fraction, widths) for r in ok]
                )[0],
            }
        )
    return rows


TABLE_HEADER = (
    "activation",
    "test acc (%)",
    "test loss",
    "s/epoch",
    "grad ratio L1/Lout at init",
    "dead %",
    "saturated %",
)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as an aligned text table."""
    header = TABLE_HEADER
    lines = []
    for row in rows:
        rectifier = get_activation(row["activation"]).family == "rectifier"
        accuracy = f"{100 * row['test_accuracy_mean']:.2f}"
        if row["runs"] - row["diverged"] > 1:
            accuracy += f" ± {100 * row['test_accuracy_std']:.2f}"
        if row["diverged"]:
            accuracy += f" ({row['diverged']} diverged)"
        lines.append(
            (
                get_activation(row["activation"]).label,
                accuracy,
                f"{row['test_loss_mean']:.4f}",
                f"{row['seconds_per_epoch']:.1f}",
                f"{row['vanishing_ratio_init']:.2e}",
                # Dead units are the rectifiers' failure, saturation the others'.
                f"{row['dead_percent']:.1f}" if rectifier else "-",
                "-" if rectifier else f"{row['saturated_percent']:.1f}",
            )
        )
    widths = [max(map(len, column)) for column in zip(header, *lines, strict=True)]
    out = []
    for i, line in enumerate([header, *lines]):
        cells = [cell.rjust(w) for cell, w in zip(line, widths, strict=True)]
        cells[0] = line[0].ljust(widths[0])  # names left, numbers right
        out.append("  ".join(cells))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_summary_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """`summary.csv`: one row per activation, the table's numbers unrounded."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
