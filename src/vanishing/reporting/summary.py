"""The tables of numbers read from records: a compare's summary (the printed table and
summary.csv) and a sweep's runs.csv, points.csv and pairs.csv."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vanishing import records, stats
from vanishing.model.activations import ACTIVATIONS
from vanishing.reporting.formats import NOT_APPLICABLE, UNDERFLOW, fixed, scientific, text_table
from vanishing.reporting.results import RunRecords, hashable, point_keys, underflowed

# summary.csv's columns: one row per activation, over its seeds.
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
TABLE_HEADER = (
    "activation",
    "test acc (%)",
    "test loss",
    "s/epoch",
    "grad ratio L1/Lout at init",
    "dead %",
    "saturated %",
)


def summary_rows(runs: Sequence[RunRecords]) -> list[dict[str, Any]]:
    """One row per activation over its finished runs, in the order the activations come: the
    SUMMARY_FIELDS, and `ratio_underflow` for the table (not a column of summary.csv)."""
    by_activation: dict[str, list[RunRecords]] = {}
    for run in runs:
        if run.result is not None:
            by_activation.setdefault(run.config["activation"], []).append(run)
    rows = []
    for activation, finished in by_activation.items():
        results = [run.finished for run in finished]
        ok = [r for r in results if r.get("status") == "ok"]
        widths = finished[0].config["hidden"]
        accuracy = stats.summarize(r.get("test_accuracy") for r in ok)
        ratios = [r.get("vanishing_ratio_init") for r in results]
        rows.append(
            {
                "activation": activation,
                "runs": len(results),
                "diverged": len(results) - len(ok),
                "test_accuracy_mean": accuracy.mean,
                "test_accuracy_std": accuracy.std,
                "test_loss_mean": stats.summarize(r.get("test_loss") for r in ok).mean,
                "seconds_per_epoch": stats.summarize(
                    r["train_seconds"] / len(r["history"])
                    for r in ok
                    if r.get("history") and r.get("train_seconds") is not None
                ).mean,
                # Ratios span orders of magnitude: their geometric mean.
                "vanishing_ratio_init": stats.geometric_mean(ratios),
                "dead_percent": stats.summarize(
                    stats.percent_of_units(r.get("dead_fraction"), widths) for r in ok
                ).mean,
                "saturated_percent": stats.summarize(
                    stats.percent_of_units(r.get("saturated_fraction"), widths) for r in ok
                ).mean,
                "ratio_underflow": underflowed(ratios),
            }
        )
    return rows


def summary_cells(row: dict[str, Any], label: str | None = None) -> list[str]:
    """One summary row as the cells of TABLE_HEADER; `label` names it (default: the
    activation's label)."""
    activation = ACTIVATIONS[row["activation"]]
    rectifier = activation.family == "rectifier"
    accuracy = fixed(100 * row["test_accuracy_mean"], 2)
    if row["runs"] - row["diverged"] > 1:
        accuracy += f" ± {fixed(100 * row['test_accuracy_std'], 2)}"
    if row["diverged"]:
        accuracy += f" ({row['diverged']} diverged)"
    ratio = row["vanishing_ratio_init"]
    underflow = row.get("ratio_underflow") and not math.isfinite(ratio)
    return [
        activation.label if label is None else label,
        accuracy,
        fixed(row["test_loss_mean"], 4),
        fixed(row["seconds_per_epoch"], 1),
        UNDERFLOW if underflow else scientific(ratio),
        # Dead units are the rectifiers' failure, saturation the others'.
        fixed(row["dead_percent"], 1) if rectifier else NOT_APPLICABLE,
        NOT_APPLICABLE if rectifier else fixed(row["saturated_percent"], 1),
    ]


def format_summary(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as an aligned text table, as `vanishing compare` prints it."""
    return text_table(TABLE_HEADER, [summary_cells(row) for row in rows])


def write_summary_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """`summary.csv`: one row per activation, the table's numbers unrounded."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def result_row(run_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
    """One tidy row of runs.csv from a run's result.json: every config field, then the
    result's scalar fields."""
    config = result["config"]
    hidden = config["hidden"]
    widths = hidden or [1]
    row = {
        **{k: v for k, v in config.items() if k != "hidden"},
        "hidden": "-".join(map(str, hidden)),
        "depth": len(hidden),
        "width": hidden[0] if len(set(hidden)) == 1 else None,
    }
    row.update(
        status=result["status"],
        test_accuracy=result.get("test_accuracy"),
        test_loss=result.get("test_loss"),
        epochs_completed=len(result.get("history", [])),
        vanishing_ratio_init=result.get("vanishing_ratio_init"),
        dead_percent=none_if_nan(stats.percent_of_units(result.get("dead_fraction"), widths)),
        saturated_percent=none_if_nan(
            stats.percent_of_units(result.get("saturated_fraction"), widths)
        ),
        train_seconds=result.get("train_seconds"),
        eval_seconds=result.get("eval_seconds"),
        error=result.get("error"),
        run_dir=run_dir.name,
    )
    return row


def none_if_nan(value: float) -> float | None:
    """None (an empty CSV cell, as the records' null) for nan."""
    return None if math.isnan(value) else value


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """A CSV with the union of the rows' keys as columns, in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def grouped(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[list[dict[str, Any]]]:
    """The rows with the same values of `keys`, in first-seen order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(hashable(row.get(k)) for k in keys), []).append(row)
    return list(groups.values())


def aggregate(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Per grid point (the values of `keys`, `point_keys`): n, mean, std and 95 % CI of accuracy
    and loss."""
    points = []
    for group in grouped(rows, keys):
        ok = [r for r in group if r["status"] == "ok"]
        point = {k: group[0].get(k) for k in keys}
        point.update(depth=group[0]["depth"], runs=len(group), ok=len(ok))
        for metric in (
            "test_accuracy",
            "test_loss",
            "vanishing_ratio_init",
            "dead_percent",
            "saturated_percent",
        ):
            summary = stats.summarize(r[metric] for r in ok)
            point[f"{metric}_mean"] = summary.mean
            if metric in ("test_accuracy", "test_loss"):
                point[f"{metric}_std"] = summary.std
                point[f"{metric}_ci_low"] = summary.ci_low
                point[f"{metric}_ci_high"] = summary.ci_high
        points.append(point)
    return points


def paired_comparisons(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Per setting (the values of `keys`, a grid point's without the activation), each pair of
    activations: a paired t-test of accuracy over shared seeds."""
    scored = [r for r in rows if r["status"] == "ok" and r["test_accuracy"] is not None]
    tests = []
    for group in grouped(scored, keys):
        setting = {k: group[0].get(k) for k in keys}
        by_activation: dict[str, dict[Any, float]] = {}
        for row in group:
            by_activation.setdefault(row["activation"], {})[row["seed"]] = row["test_accuracy"]
        names = list(by_activation)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                seeds = sorted(set(by_activation[a]) & set(by_activation[b]))
                if not seeds:
                    continue
                test = stats.paired_test(
                    [by_activation[a][s] for s in seeds], [by_activation[b][s] for s in seeds]
                )
                tests.append(
                    {
                        **setting,
                        "a": a,
                        "b": b,
                        "seeds": len(seeds),
                        "mean_difference": test.mean_difference,
                        "t": test.t,
                        "p": test.p,
                        "significant": bool(test.significant),
                    }
                )
    return tests


def tabulate(out: Path, run_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """Write runs.csv, points.csv and pairs.csv in `out` for the finished runs among
    `run_dirs` (in that order); the runs.csv rows. A grid point is every config key but the
    seed and the device (`point_keys`), a setting that without the activation."""
    results = [
        (Path(d), records.read_json(Path(d) / records.RESULT))
        for d in run_dirs
        if records.is_complete(d)
    ]
    rows = [result_row(run_dir, result) for run_dir, result in results]
    keys = point_keys(result["config"] for _, result in results)
    write_csv(Path(out) / "runs.csv", rows)
    write_csv(Path(out) / "points.csv", aggregate(rows, keys))
    write_csv(
        Path(out) / "pairs.csv", paired_comparisons(rows, [k for k in keys if k != "activation"])
    )
    return rows
