"""Run records exported to the trackers people look at: TensorBoard event files, an MLflow store,
offline W&B runs (`export_runs`). The tags of a row (`scalars`) are the same for every target;
each target's library is an optional extra, imported only when its export is written."""

from vanishing.reporting.export.runs import FORMATS, Exported, event_names, export_runs, find_runs
from vanishing.reporting.export.tags import (
    EPOCH_SCALARS,
    GATE_KEYS,
    NOT_LOGGED,
    PER_LAYER,
    first_over_last,
    number,
    per_layer,
    row_step,
    scalars,
    time_profiles,
    time_scalars,
    time_tags,
)
from vanishing.reporting.export.target import Run, Target

__all__ = [
    "EPOCH_SCALARS",
    "FORMATS",
    "GATE_KEYS",
    "NOT_LOGGED",
    "PER_LAYER",
    "Exported",
    "Run",
    "Target",
    "event_names",
    "export_runs",
    "find_runs",
    "first_over_last",
    "number",
    "per_layer",
    "row_step",
    "scalars",
    "time_profiles",
    "time_scalars",
    "time_tags",
]
