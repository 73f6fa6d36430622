"""What the page shows, computed from the records alone: `build_report` reads the runs, splits
them into points and runs the diagnosis and the figures; `render` turns the result into HTML and
Markdown."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vanishing.reporting.diagnosis import (
    Gap,
    attenuation_rows,
    condition_gaps,
    depth_findings,
    diagnose,
    gap_sentences,
    significance,
)
from vanishing.reporting.figures import FigureBlock, draw_figures
from vanishing.reporting.loading import load_runs
from vanishing.reporting.results import Point, RunRecords, make_points
from vanishing.reporting.summary import summary_row
from vanishing.reporting.verdict import THRESHOLDS, Thresholds


@dataclass(frozen=True)
class Report:
    """Everything the page shows, computed from the records."""

    sources: list[str]
    runs: list[RunRecords]
    points: list[Point]
    notes: list[str]
    rows: list[dict[str, Any]]  # per point, its `summary_row`
    diagnoses: list[list[str]]
    verdicts: list[str]
    attenuation: list[dict[str, Any]]
    figures: list[FigureBlock]
    gaps: list[Gap] = field(default_factory=list)  # sweeps: each pair of activations per condition
    stop_rules: list[str] = field(default_factory=list)  # sweeps over depth: the threshold
    stops: list[str] = field(default_factory=list)  # sweeps over depth: one line per activation

    @property
    def conditions(self) -> int:
        """How many conditions the points span; more than one is a sweep."""
        return len({g.condition for g in self.points})


def build_report(
    paths: Sequence[Path | str], thresholds: Thresholds = THRESHOLDS, figures: bool = True
) -> Report:
    """Read the records under `paths` and compute everything the page shows."""
    runs, notes = load_runs(paths)
    unfinished = [r for r in runs if r.result is None]
    if unfinished:
        notes.append(
            f"{len(unfinished)} run(s) have not finished (no result.json): listed under Runs, "
            "left out of the table, diagnosis and figures."
        )
    points = make_points(runs)
    rules, stops = depth_findings(points, thresholds)
    if len({g.condition for g in points}) > 1:  # a sweep: every pair at each condition
        gaps = condition_gaps(points, thresholds)
        verdicts = gap_sentences(gaps, thresholds)
    else:
        gaps, verdicts = [], significance(points, thresholds)
    return Report(
        sources=[str(p) for p in paths],
        runs=runs,
        points=points,
        notes=notes,
        rows=[summary_row(g) for g in points],
        diagnoses=[diagnose(g, thresholds) for g in points],
        verdicts=verdicts,
        attenuation=attenuation_rows(points),
        figures=draw_figures(points, thresholds) if figures and points else [],
        gaps=gaps,
        stop_rules=rules,
        stops=stops,
    )
