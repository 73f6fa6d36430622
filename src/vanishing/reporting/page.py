"""What the page shows, computed from the records alone: `build_report` reads the runs, groups
them and runs the diagnosis and the figures; `render` turns the result into HTML and Markdown."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vanishing.reporting.diagnosis import (
    Gap,
    attenuation_rows,
    depth_findings,
    diagnose,
    gap_sentences,
    setting_gaps,
    significance,
)
from vanishing.reporting.figures import FigureBlock, draw_figures
from vanishing.reporting.loading import load_runs
from vanishing.reporting.results import Group, RunRecords, make_groups
from vanishing.reporting.summary import summary_row
from vanishing.reporting.verdict import THRESHOLDS, Thresholds


@dataclass(frozen=True)
class Report:
    """Everything the page shows, computed from the records."""

    sources: list[str]
    runs: list[RunRecords]
    groups: list[Group]
    notes: list[str]
    rows: list[dict[str, Any]]  # per group, its `summary_row`
    diagnoses: list[list[str]]
    verdicts: list[str]
    attenuation: list[dict[str, Any]]
    figures: list[FigureBlock]
    gaps: list[Gap] = field(default_factory=list)  # sweeps: each pair of activations per setting
    stop_rules: list[str] = field(default_factory=list)  # sweeps over depth: the threshold
    stops: list[str] = field(default_factory=list)  # sweeps over depth: one line per activation

    @property
    def settings(self) -> int:
        """How many settings the groups span; more than one is a sweep."""
        return len({g.setting for g in self.groups})


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
    groups = make_groups(runs)
    rules, stops = depth_findings(groups, thresholds)
    if len({g.setting for g in groups}) > 1:  # a sweep: every pair at each setting
        gaps = setting_gaps(groups, thresholds)
        verdicts = gap_sentences(gaps, thresholds)
    else:
        gaps, verdicts = [], significance(groups, thresholds)
    return Report(
        sources=[str(p) for p in paths],
        runs=runs,
        groups=groups,
        notes=notes,
        rows=[summary_row(g) for g in groups],
        diagnoses=[diagnose(g, thresholds) for g in groups],
        verdicts=verdicts,
        attenuation=attenuation_rows(groups),
        figures=draw_figures(groups, thresholds) if figures and groups else [],
        gaps=gaps,
        stop_rules=rules,
        stops=stops,
    )
