"""The report: one offline HTML page (and a Markdown twin) built from run records alone, and the
tables of numbers (a compare's summary, a sweep's CSVs) read from the same records.

It reads config.json, metrics.jsonl and result.json of finished runs and never trains, so any
page or table can be redrawn at any time; nothing here imports the training modules. Runs are
split into points by activation and condition: every key of config.json but the activation, the
seed and the device, read from the records, so a new setting of the config splits runs without a
change here. When the runs span several conditions, as a sweep's do, the page adds figures over
depth, the depth at which each activation stops learning and a t-test per pair of activations per
condition, and draws the per-layer figures for two representative conditions only.

The modules, in the order the data flows:
- `results`: the data model (RunRecords, Point, Condition, DepthSeries; conditions' order);
- `loading`: finding run directories and reading their records into Runs (a data-parallel
  run's rank directories attached to its run: `with_ranks`);
- `stats` (the package's, one level up) and `formats`: numbers over seeds, and how they read;
- `summary`: the compare summary table and summary.csv; a sweep's runs/points/pairs.csv;
- `verdict` (a package: thresholds, profile, rules, sentences, cures, judging, live): each
  point's verdict from every signal (the back-propagated signal, the activations' scale,
  gradient sizes, divergence, units) with its cure; `headline` gives one run's verdict in one
  line, `live_headline` a run's still training, by the same rules;
- `ranks`: a data-parallel run's per-rank table and what differs between its ranks;
- `diagnosis`: the verdicts' sentences, gap tests, stop rules, the slope-bound and cure tables;
- `plots` and `figures`: drawing, and which figure answers which question;
- `page`: `build_report`, everything the page shows; `render`: HTML and Markdown, from
  `templates/`, and `write_report`.
"""

from __future__ import annotations

import importlib
from typing import Any

# The names callers use as `report.NAME`, and the module each lives in. They are imported on
# first use: reading a summary table (`summary`) loads neither matplotlib nor jinja2.
EXPORTS = {
    "write_report": "render",
    "render_html": "render",
    "render_markdown": "render",
    "build_report": "page",
    "Report": "page",
    "Thresholds": "verdict",
    "THRESHOLDS": "verdict",
    "Verdict": "verdict",
    "judge": "verdict",
    "headline": "verdict",
    "diagnose": "diagnosis",
    "Gap": "diagnosis",
    "FigureBlock": "figures",
    "load_runs": "loading",
    "find_run_dirs": "loading",
    "read_run": "loading",
    "with_ranks": "loading",
    "rank_table": "ranks",
    "RunRecords": "results",
    "Point": "results",
    "DepthSeries": "results",
    "Condition": "results",
    "LEADING_KEYS": "results",
    "point_keys": "results",
    "condition_of": "results",
    "make_points": "results",
    "depth_series": "results",
    "representative_conditions": "results",
    "summary_row": "summary",
    "summary_rows": "summary",
    "summary_cells": "summary",
    "format_summary": "summary",
    "write_summary_csv": "summary",
    "tabulate": "summary",
}


def __getattr__(name: str) -> Any:
    """`report.NAME` for the names in EXPORTS, imported from their module on first use."""
    if name in EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *EXPORTS])
