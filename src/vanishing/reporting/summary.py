"""The tables of numbers read from records: a compare's summary (the printed table and
summary.csv) and a sweep's runs.csv, points.csv and pairs.csv.

Every table splits runs into points as the report does (`results.make_points`: activation and
condition, an older run's config completed with the defaults of the settings it predates) and
judges a gap between two activations with the report's test (`diagnosis.condition_gaps`), so a
table's row, a row of points.csv and a report's point are the same runs, and pairs.csv and the
page agree."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from vanishing import records, stats
from vanishing.model.activations import ACTIVATIONS
from vanishing.reporting.diagnosis import condition_gaps
from vanishing.reporting.formats import NOT_APPLICABLE, UNDERFLOW, fixed, scientific, text_table
from vanishing.reporting.loading import read_run
from vanishing.reporting.results import (
    REGRESSION,
    Point,
    RunRecords,
    make_points,
    point_keys,
    task_of,
)
from vanishing.reporting.verdict import THRESHOLDS, Thresholds, at_chance
from vanishing.settings.config import in_field_order

# summary.csv's columns: one row per point (an activation at one condition), over its seeds; a
# "setting" column (the condition's label) after the activation when the runs span several.
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
# A regression (the adding problem) is scored by its test loss, the mean squared error, against
# the baseline of always answering 1, where a classification is by its accuracy.
REGRESSION_HEADER = ("activation", "test MSE", "baseline (always 1)", *TABLE_HEADER[3:])
MIXED_HEADER = ("activation", "test acc (%) / MSE", *TABLE_HEADER[2:])
# summary.csv's columns of a regression, after the loss's, where any row is one.
REGRESSION_FIELDS = ("baseline_loss", "beat_baseline")


def in_run_order(points: Sequence[Point], runs: Sequence[RunRecords]) -> list[Point]:
    """The points in the order their first runs come in `runs` (the order a compare ran them,
    a sweep's grid order), not the report's."""
    index: dict[Path, int] = {}
    for i, run in enumerate(runs):
        index.setdefault(run.path, i)
    return sorted(points, key=lambda point: min(index[run.path] for run in point.runs))


def summary_row(point: Point) -> dict[str, Any]:
    """One point's row: the SUMMARY_FIELDS, its `label` and `setting` (its condition's label), and
    `ratio_underflow` for the table (not a column of summary.csv)."""
    ok = [run.finished for run in point.ok]
    losses = stats.summarize(r.get("test_loss") for r in ok)
    regression = point.regression
    return {
        "activation": point.activation.name,
        "label": point.label,
        "setting": point.condition_label,
        "runs": len(point.runs),
        "diverged": len(point.runs) - len(ok),
        # A regression has no accuracy: an empty cell, not nan.
        "test_accuracy_mean": None if regression else point.accuracy.mean,
        "test_accuracy_std": None if regression else point.accuracy.std,
        "test_loss_mean": losses.mean,
        "test_loss_std": losses.std,
        "regression": regression,
        "baseline_loss": point.baseline if regression else None,
        "beat_baseline": (not at_chance(point)) if regression and point.scores else None,
        "seconds_per_epoch": stats.summarize(
            r["train_seconds"] / len(r["history"])
            for r in ok
            if r.get("history") and r.get("train_seconds") is not None
        ).mean,
        # Ratios span orders of magnitude: their geometric mean.
        "vanishing_ratio_init": point.vanishing_ratio_init,
        "dead_percent": point.unit_share("dead_fraction").mean,
        "saturated_percent": point.unit_share("saturated_fraction").mean,
        "ratio_underflow": point.ratio_underflow,
    }


def summary_rows(runs: Sequence[RunRecords]) -> list[dict[str, Any]]:
    """One row per point of finished runs (`make_points`), in the order the runs come."""
    return [summary_row(point) for point in in_run_order(make_points(runs), runs)]


def summary_header(rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The table's header: TABLE_HEADER; a regression's test MSE and baseline where every row
    is one (REGRESSION_HEADER), both scores in one column where they mix (MIXED_HEADER)."""
    tasks = {bool(row.get("regression")) for row in rows}
    if tasks == {True}:
        return REGRESSION_HEADER
    return MIXED_HEADER if tasks == {True, False} else TABLE_HEADER


def summary_cells(row: dict[str, Any], label: str | None = None, mixed: bool = False) -> list[str]:
    """One summary row as the cells of its `summary_header`; `label` names it (default: the
    row's, the report's label of its point); `mixed`: the table mixes classifications and
    regressions (a regression's MSE in the accuracy column)."""
    activation = ACTIVATIONS[row["activation"]]
    rectifier = activation.family == "rectifier"
    several = row["runs"] - row["diverged"] > 1
    regression = bool(row.get("regression"))
    if regression:
        score = fixed(row["test_loss_mean"], 4)
        if several:
            score += f" ± {fixed(row.get('test_loss_std'), 4)}"
    else:
        score = fixed(pct(row["test_accuracy_mean"]), 2)
        if several:
            score += f" ± {fixed(pct(row['test_accuracy_std']), 2)}"
    if row["diverged"]:
        score += f" ({row['diverged']} diverged)"
    baseline = baseline_cell(row) if regression else ""
    if regression and mixed:
        score = f"MSE {score}, baseline {baseline}"
    ratio = row["vanishing_ratio_init"]
    underflow = row.get("ratio_underflow") and not math.isfinite(ratio)
    return [
        label or row.get("label") or activation.label,
        score,
        baseline if regression and not mixed else fixed(row["test_loss_mean"], 4),
        fixed(row["seconds_per_epoch"], 1),
        UNDERFLOW if underflow else scientific(ratio),
        # Dead units are the rectifiers' failure, saturation the others'.
        fixed(row["dead_percent"], 1) if rectifier else NOT_APPLICABLE,
        NOT_APPLICABLE if rectifier else fixed(row["saturated_percent"], 1),
    ]


def pct(fraction: float | None) -> float | None:
    """A fraction in percent; None stays None."""
    return None if fraction is None else 100 * fraction


def baseline_cell(row: dict[str, Any]) -> str:
    """A regression's baseline and whether its mean test loss beat it: '0.167 (beaten)'."""
    beaten = row.get("beat_baseline")
    verdict = "" if beaten is None else " (beaten)" if beaten else " (not beaten)"
    return f"{fixed(row.get('baseline_loss'), 3)}{verdict}"


def is_mixed(rows: Sequence[dict[str, Any]]) -> bool:
    """The rows mix classifications and regressions."""
    return len({bool(row.get("regression")) for row in rows}) > 1


def format_summary(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as an aligned text table, as `vanishing compare` prints it."""
    mixed = is_mixed(rows)
    return text_table(summary_header(rows), [summary_cells(row, mixed=mixed) for row in rows])


def write_summary_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """`summary.csv`: one row per point, the table's numbers unrounded; the point's condition
    (the `setting` column) after its activation where the rows span several; a regression's
    baseline, and whether it beat it, after the loss where any row is one."""
    fields = list(SUMMARY_FIELDS)
    if any(row.get("regression") for row in rows):
        at = fields.index("test_loss_mean") + 1
        fields[at:at] = REGRESSION_FIELDS
    if any(row.get("setting") for row in rows):
        fields.insert(1, "setting")
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    records.write_bytes(path, text.getvalue().encode())  # atomically: never a torn table


def config_keys(runs: Iterable[RunRecords]) -> list[str]:
    """The config keys the runs' records hold, in the order a new config.json has them
    (TrainConfig's, then others first seen); the keys an older run predates are among them only
    where a newer run holds them."""
    seen = {key: None for run in runs for key in run.recorded}
    return list(in_field_order(seen))


def result_row(run: RunRecords, keys: Sequence[str]) -> dict[str, Any]:
    """One tidy row of runs.csv: the config's `keys` (an older run's completed with the
    defaults of the settings it predates), then the result's scalar fields."""
    config, result = run.config, run.finished
    hidden = config["hidden"]
    widths = hidden or [1]
    row = {
        **{k: config.get(k) for k in keys if k != "hidden"},
        "hidden": "-".join(map(str, hidden)),
        "depth": len(hidden),
        "width": hidden[0] if len(set(hidden)) == 1 else None,
    }
    row.update(
        status=result["status"],
        test_accuracy=result.get("test_accuracy"),
        test_loss=result.get("test_loss"),
        # a regression's: its test loss set against always answering 1 (older records: none)
        **({"baseline_loss": result.get("baseline_loss")} if is_regression(run) else {}),
        epochs_completed=len(result.get("history", [])),
        vanishing_ratio_init=result.get("vanishing_ratio_init"),
        dead_percent=none_if_nan(stats.percent_of_units(result.get("dead_fraction"), widths)),
        saturated_percent=none_if_nan(
            stats.percent_of_units(result.get("saturated_fraction"), widths)
        ),
        train_seconds=result.get("train_seconds"),
        eval_seconds=result.get("eval_seconds"),
        error=result.get("error"),
        run_dir=run.path.name,
    )
    return row


def is_regression(run: RunRecords) -> bool:
    """The run is a regression (`results.task_of`)."""
    return task_of(run.config, run.result) == REGRESSION


def none_if_nan(value: float) -> float | None:
    """None (an empty CSV cell, as the records' null) for nan."""
    return None if math.isnan(value) else value


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """A CSV with the union of the rows' keys as columns, in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    records.write_bytes(path, text.getvalue().encode())  # atomically: never a torn table


def point_row(run_rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """One grid point (a report's point: its runs' runs.csv rows): the values of `keys`
    (`point_keys`), then n, mean, std and 95 % CI of accuracy and loss, and the means of the
    other numbers, over the runs that finished without diverging."""
    ok = [r for r in run_rows if r["status"] == "ok"]
    row = {k: run_rows[0].get(k) for k in keys}
    row.update(depth=run_rows[0]["depth"], runs=len(run_rows), ok=len(ok))
    metrics = ["test_accuracy", "test_loss", "vanishing_ratio_init"]
    metrics += ["dead_percent", "saturated_percent"]
    if "baseline_loss" in run_rows[0]:  # a regression: beside the loss, its baseline
        metrics.insert(2, "baseline_loss")
    for metric in metrics:
        summary = stats.summarize(r.get(metric) for r in ok)
        row[f"{metric}_mean"] = summary.mean
        if metric in ("test_accuracy", "test_loss"):
            row[f"{metric}_std"] = summary.std
            row[f"{metric}_ci_low"] = summary.ci_low
            row[f"{metric}_ci_high"] = summary.ci_high
    return row


def pair_rows(
    points: Sequence[Point],
    rows: dict[Path, dict[str, Any]],
    keys: Sequence[str],
    thresholds: Thresholds = THRESHOLDS,
) -> list[dict[str, Any]]:
    """Per condition (the values of `keys` but the activation), each pair of activations as the
    report judges it (`diagnosis.condition_gaps`), `a` the one whose runs come first: the seeds
    each side finished ('3', or '3 and 2'), a's mean accuracy (a regression's test loss) minus
    b's, the t statistic and
    p-value, and the test (paired on the same seeds, Welch otherwise; with one seed a side
    'vs chance' or 'vs spread'; '' when nothing could judge it)."""
    order = {id(point): i for i, point in enumerate(points)}
    shown = [k for k in keys if k != "activation"]
    pairs = []
    for gap in condition_gaps(points, thresholds):
        a, b, sign = gap.better, gap.worse, 1
        if order[id(b)] < order[id(a)]:
            a, b, sign = b, a, -1
        first = rows[a.runs[0].path]
        a_seeds, b_seeds = len(a.scores), len(b.scores)
        pairs.append(
            {
                **{k: first.get(k) for k in shown},
                "a": a.activation.name,
                "b": b.activation.name,
                "seeds": f"{a_seeds}" if a_seeds == b_seeds else f"{a_seeds} and {b_seeds}",
                # a's mean score (accuracy, a regression's loss) minus b's
                "mean_difference": a.score.mean - b.score.mean,
                "t": sign * gap.t,
                "p": gap.p,
                "significant": gap.significant,
                "test": gap.test_name if gap.test or gap.basis else "",
            }
        )
    return pairs


def tabulate(
    out: Path, run_dirs: Sequence[Path], thresholds: Thresholds = THRESHOLDS
) -> list[dict[str, Any]]:
    """Write runs.csv, points.csv and pairs.csv in `out` for the finished runs among
    `run_dirs` (in that order, failed ones too); the runs.csv rows. A grid point is a point
    of the report (`make_points`): every config key but the seed and the device."""
    runs: list[RunRecords] = []
    for run_dir in dict.fromkeys(Path(d) for d in run_dirs):
        if records.is_complete(run_dir):
            run = read_run(run_dir, failed=True, metrics=False)
            if isinstance(run, RunRecords):
                runs.append(run)
    keys = config_keys(runs)
    rows = {run.path: result_row(run, keys) for run in runs}
    points = in_run_order(make_points(runs), runs)
    columns = point_keys(run.recorded for run in runs)
    write_csv(Path(out) / "runs.csv", list(rows.values()))
    write_csv(
        Path(out) / "points.csv",
        [point_row([rows[run.path] for run in point.runs], columns) for point in points],
    )
    write_csv(Path(out) / "pairs.csv", pair_rows(points, rows, columns, thresholds))
    return list(rows.values())
