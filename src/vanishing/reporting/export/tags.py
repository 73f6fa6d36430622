"""The tags of a record row: (tag, value) for every number a metrics row holds, as each export
target names them (`scalars`), and the step a row is drawn at (`row_step`).

    loss/train, loss/test, accuracy/test      epoch rows (step: the row's step); a regression
    loss/baseline                             run (the adding problem): test loss the mean
                                              squared error, no accuracy, and its baseline
    loss/probe, vanishing_ratio               probe rows
    grad_norm/LAYER, weight_norm/LAYER,       probe rows, per weighted layer (config "layers",
    update_ratio/LAYER                        else layer1..layerN and output)
    signal_norm/LAYER, saturated_fraction/    probe rows, per activation layer (config
    LAYER, dead_fraction/LAYER                "layer_labels", else layer1..layerN)
    dead_fraction_epoch/LAYER                 epoch rows: dead units over the training set
    logged/KEY                                any other number of an epoch row (a watch run's log)
    time/RNN/first_over_last, time/RNN/per_   probe rows of a recurrent run (or a watched
    step, recurrent_norm/RNN, gate/RNN/GATE,  nn.RNN/LSTM/GRU), per recurrent layer (the row's
    gate_saturated/RNN/GATE                   "time_layers", else recurrent1..N): ||dL/dh_t||
                                              at t = 1 over t = T, its T-1-th root (the factor
                                              per step), ||W_hh||'s spectral norm, each gate's
                                              mean and saturated share

A tag's prefix before "/" is its group: TensorBoard's and W&B's sections, one MLflow chart per
tag. Reads records only; imports no export library.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from vanishing.settings.naming import LayerNames, clean_tag, unique_tags

# Per-layer lists of a probe row: (record key, tag prefix, names: weighted or activation layers).
PER_LAYER = (
    ("grad_norms", "grad_norm", "weighted"),
    ("weight_norms", "weight_norm", "weighted"),
    ("update_ratio", "update_ratio", "weighted"),
    ("signal_norms", "signal_norm", "activation"),
    ("saturated_fraction", "saturated_fraction", "activation"),
    ("dead_fraction", "dead_fraction", "activation"),
)
EPOCH_SCALARS = {
    "train_loss": "loss/train",
    "test_loss": "loss/test",
    "test_accuracy": "accuracy/test",
    "baseline_loss": "loss/baseline",  # a regression's: the test loss of always answering 1
}
# Epoch-row keys that are not measurements of the model (where and how long), left out.
NOT_LOGGED = {"kind", "epoch", "step"}
# Per-recurrent-layer dicts of a probe row: (record key, tag prefix); one tag per gate.
GATE_KEYS = (("gates", "gate"), ("gates_saturated", "gate_saturated"))


def number(value: Any) -> float | None:
    """A record's value as a finite float, None for null (non-finite), a bool or a non-number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def row_step(row: dict[str, Any]) -> int | None:
    """The step a row is drawn at: its own, else (a row logged without one) its epoch."""
    for key in ("step", "epoch"):
        value = row.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def per_layer(
    config: dict[str, Any], values: Any, prefix: str, kind: str
) -> Iterator[tuple[str, float]]:
    """(prefix/LAYER, value) for each finite value of a per-layer list."""
    if not isinstance(values, list):
        return
    for name, value in zip(LayerNames.of(config).tags(kind, len(values)), values, strict=True):
        if (v := number(value)) is not None:
            yield f"{prefix}/{name}", v


def scalars(config: dict[str, Any], row: dict[str, Any]) -> list[tuple[str, float]]:
    """(tag, value) of every scalar one metrics row holds; nulls (non-finite values) left out."""
    found: list[tuple[str, float]] = []
    if row.get("kind") == "probe":
        for key, tag in (("loss", "loss/probe"), ("vanishing_ratio", "vanishing_ratio")):
            if (v := number(row.get(key))) is not None:
                found.append((tag, v))
        for key, prefix, kind in PER_LAYER:
            found.extend(per_layer(config, row.get(key), prefix, kind))
        found.extend(time_scalars(row))
    elif row.get("kind") == "epoch":
        for key, value in row.items():
            if key in EPOCH_SCALARS:
                tag = EPOCH_SCALARS[key]
            elif key in NOT_LOGGED or key.endswith("_seconds") or key == "dead_fraction":
                continue
            else:
                tag = f"logged/{clean_tag(key)}"
            if (v := number(value)) is not None:
                found.append((tag, v))
        found.extend(
            per_layer(config, row.get("dead_fraction"), "dead_fraction_epoch", "activation")
        )
    return found


def time_tags(row: dict[str, Any], count: int) -> list[str]:
    """Tag components for `count` recurrent layers of a probe row: its `time_layers` (as
    `unique_tags` makes them) where it names that many, else recurrent1 .. recurrentN."""
    names = row.get("time_layers")
    if isinstance(names, list) and len(names) == count and all(isinstance(n, str) for n in names):
        return unique_tags(names)
    return [f"recurrent{i}" for i in range(1, count + 1)]


def time_profiles(row: dict[str, Any]) -> list[list[float | None]]:
    """A probe row's ||dL/dh_t|| per recurrent layer, t = 1 .. T (None: not finite); [] for a
    row without a time profile (an MLP's, an older record's)."""
    norms = row.get("time_signal_norms")
    if row.get("kind") != "probe" or not isinstance(norms, list):
        return []
    return [[number(v) for v in steps] if isinstance(steps, list) else [] for steps in norms]


def first_over_last(steps: Sequence[float | None]) -> float | None:
    """||dL/dh_1|| / ||dL/dh_T||: how much of the gradient reaching the last step reaches the
    first; None where either is missing or the quotient is not finite."""
    if len(steps) < 2 or steps[0] is None or steps[-1] is None or steps[-1] <= 0:
        return None
    ratio = steps[0] / steps[-1]
    return ratio if math.isfinite(ratio) else None


def time_scalars(row: dict[str, Any]) -> list[tuple[str, float]]:
    """(tag, value) per recurrent layer of a probe row: the first step's gradient over the
    last's and its T-1-th root (the factor per step), the recurrent weight's spectral norm, each
    gate's mean activation and saturated share."""
    found: list[tuple[str, float]] = []
    profiles = time_profiles(row)
    for name, steps in zip(time_tags(row, len(profiles)), profiles, strict=True):
        ratio = first_over_last(steps)
        if ratio is not None:
            found.append((f"time/{name}/first_over_last", ratio))
            found.append((f"time/{name}/per_step", ratio ** (1 / (len(steps) - 1))))
    norms = row.get("recurrent_norms")
    if isinstance(norms, list):
        for name, norm in zip(time_tags(row, len(norms)), norms, strict=True):
            if (v := number(norm)) is not None:
                found.append((f"recurrent_norm/{name}", v))
    for key, prefix in GATE_KEYS:
        layers = row.get(key)
        if not isinstance(layers, list):
            continue
        for name, gates in zip(time_tags(row, len(layers)), layers, strict=True):
            for gate, value in gates.items() if isinstance(gates, dict) else ():
                if (v := number(value)) is not None:
                    found.append((f"{prefix}/{name}/{clean_tag(str(gate))}", v))
    return found
