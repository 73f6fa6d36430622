"""What the records say about a point's layers, before any rule reads it: per hidden layer the
back-propagated signal and the activations' scale at step 0 (`Profile`, `profile`), the factors
across them, a probe row's largest gradient norm and a config value as older records mean it.

Why the signal and not the weight-gradient ratio alone: a weight gradient is the signal times the
layer's input, so a signal that vanishes towards the input and activations that shrink with depth
cancel in it (a deep ReLU net with Xavier init looks even while its signal falls 20,000-fold), and
activations that grow (a residual stream) make the output layer's weight gradient large while the
signal reaching layer 1 does not shrink at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vanishing import stats
from vanishing.reporting.results import Point, RunRecords, numbers
from vanishing.settings.config import completed
from vanishing.settings.naming import NUMBERED, LayerNames


def setting_value(config: dict[str, Any], key: str) -> Any:
    """A config value, with what its absence means for records older than the key."""
    return completed(config).get(key)


def per_layer(factor: float, steps: int) -> float:
    """The geometric factor per layer over `steps` layers."""
    return factor ** (1 / steps) if factor > 0 and steps > 0 else math.nan


def combine(factors: Sequence[float]) -> float:
    """Over seeds: the geometric mean of the finite factors; 0 when every one is 0 (underflow);
    nan when none was measured."""
    values = stats.finite(factors)
    if values and all(v == 0 for v in values):
        return 0.0
    return stats.geometric_mean(values)


def largest(norms: Sequence[Any]) -> tuple[float, int]:
    """(the largest finite norm, its layer counted from 1); (nan, 0) when none."""
    values = numbers(norms)
    if not np.isfinite(values).any():
        return math.nan, 0
    index = int(np.nanargmax(values))
    return float(values[index]), index + 1


def first_probe(run: RunRecords) -> dict[str, Any]:
    """The step-0 probe row (at initialisation), or {} when none was recorded."""
    rows = run.rows("probe")
    return rows[0] if rows and rows[0].get("step") == 0 else {}


def layer_values(run: RunRecords, key: str, fallback: str = "") -> np.ndarray:
    """A per-layer field of the step-0 probe (else result.json's `fallback`), nan where missing."""
    values = first_probe(run).get(key)
    if values is None and fallback and run.result is not None:
        values = run.result.get(fallback)
    return numbers(values or [])


def signal_of(row: dict[str, Any]) -> np.ndarray:
    """A probe row's back-propagated signal per hidden layer, nan where missing: each layer's
    norm of dLoss/da over the batch, sqrt(batch) times the signal per sample. Layers of every
    shape compare by it: a
    conv's map and an fc layer, a sequence's every position and a pooler's one, since the weight
    gradient sums its signal over the positions, and the norm per sample is what an init scaled
    to fan_in keeps through a dense layer, a strided conv or a max pool alike. Dividing by the
    positions instead read PyTorch's MNIST example (4.7-fold from fc1 to conv1) as 120-fold."""
    return numbers(row.get("signal_norms") or [])


def run_signal(run: RunRecords) -> np.ndarray:
    """The run's signal per hidden layer at step 0 (`signal_of`), result.json's for records
    without a step-0 probe."""
    return layer_values(run, "signal_norms", "signal_norms_init")


def run_factor(values: np.ndarray, reverse: bool) -> float:
    """values[0] / values[-1] (or the reverse): nan for one layer or a missing or zero divisor."""
    if values.size < 2:
        return math.nan
    top, bottom = (values[-1], values[0]) if reverse else (values[0], values[-1])
    if not (math.isfinite(top) and math.isfinite(bottom)) or bottom <= 0:
        return math.nan
    return float(top / bottom)


def compared(config: dict[str, Any], layers: int) -> int:
    """How many of the `layers` hidden layers, from the input side, the factors span: all,
    but a watched model's head, the layers after its last sequence layer (a pooler or a
    classifier that sees one position per sample where the layers before it see every position
    of a sequence: a layer beside the path the signal takes back, not on it), is left out when
    two sequence layers or more come before it. Records without `sequence_layers`: all."""
    sequences = config.get("sequence_layers")
    names = config.get("activation_layers")
    if not isinstance(sequences, list) or not isinstance(names, list) or len(names) != layers:
        return layers
    last = max((i + 1 for i, name in enumerate(names) if name in sequences), default=0)
    return last if last >= 2 else layers


def signal_factor(row: dict[str, Any], config: dict[str, Any]) -> float:
    """One probe row's signal factor, layer 1 over the last hidden layer compared
    (`signal_of`, `compared`)."""
    signal = signal_of(row)
    return run_factor(signal[: compared(config, signal.size)], reverse=False)


def last_signal_factor(point: Point) -> float:
    """The signal factor at the last probe, over the finished runs that probed after step 0."""
    config = point.runs[0].config
    return combine(
        [signal_factor(rows[-1], config) for r in point.ok if len(rows := r.rows("probe")) > 1]
    )


def mean_profile(lists: Sequence[np.ndarray]) -> np.ndarray:
    """Per layer, the geometric mean over runs of the runs whose lists agree in length."""
    lists = [x for x in lists if x.size]
    if not lists or len({x.size for x in lists}) != 1:
        return np.zeros(0)
    return stats.mean_over_runs(np.stack(lists), geometric=True)


@dataclass(frozen=True)
class Profile:
    """A point's layers at initialisation (step 0), over every run (diverged ones too: step 0
    comes before any step): per hidden layer the back-propagated signal and the activations'
    std (geometric means over seeds), and the factors across them."""

    signal: np.ndarray  # ||dLoss/dh|| per hidden layer, input side first
    scale: np.ndarray  # std of each hidden layer's output
    signal_factor: float  # layer 1 over the last hidden layer: < 1 shrinks towards the input
    scale_factor: float  # the last hidden layer over layer 1: < 1 shrinks with depth
    layers: int  # hidden layers
    names: LayerNames = NUMBERED  # how sentences name the layers
    # How much each layer's output depends on the input: per unit, its std across samples
    # (`probes.spread`); empty for records older than it. The whole tensor's std (`scale`) also
    # counts the spread biases put between units, which does not depend on the input.
    spread: np.ndarray = field(default_factory=lambda: np.zeros(0))
    spread_factor: float = math.nan  # the last hidden layer over layer 1
    logits_spread: float = math.nan  # the logits' spread across samples (geometric mean)

    @property
    def collapse_factor(self) -> float:
        """What says whether the forward pass collapses: the spread's factor where measured,
        else the std's (older records)."""
        return self.spread_factor if math.isfinite(self.spread_factor) else self.scale_factor

    @property
    def by_spread(self) -> bool:
        return math.isfinite(self.spread_factor)

    span: int = 0  # the hidden layers the factors span from layer 1 (`compared`); 0: all

    @property
    def last(self) -> int:
        """The last hidden layer the factors compare (layer 1 is the first)."""
        return self.span or self.layers

    @classmethod
    def of_probe(
        cls, row: dict[str, Any], layers: int, config: dict[str, Any] | None = None
    ) -> Profile:
        """One probe row's Profile (a run still training: no seeds to average); `config` names
        the layers and says whether the run is a watched model's."""
        config = config or {}
        signal = signal_of(row)
        scale = numbers(row.get("activation_std") or [])
        last = compared(config, layers)
        spread = numbers(row.get("activation_spread") or [])
        logits = row.get("logits_spread")
        return cls(
            signal,
            scale,
            run_factor(signal[:last], reverse=False),
            run_factor(scale[:last], reverse=True),
            layers,
            LayerNames.of(config),
            spread,
            run_factor(spread[:last], reverse=True),
            float(logits) if isinstance(logits, (int, float)) else math.nan,
            last if last < layers else 0,
        )

    @property
    def signal_per_layer(self) -> float:
        return per_layer(self.signal_factor, self.last - 1)

    @property
    def scale_per_layer(self) -> float:
        return per_layer(self.scale_factor, self.last - 1)


def profile(point: Point) -> Profile:
    """The point's Profile, from each run's step-0 probe (result.json's signal_norms_init for
    records without one)."""
    signals = [run_signal(r) for r in point.runs]
    scales = [layer_values(r, "activation_std") for r in point.runs]
    last = compared(point.runs[0].config, point.depth)
    spreads = [layer_values(r, "activation_spread") for r in point.runs]
    logits = [
        float(v)
        for r in point.runs
        if isinstance(v := first_probe(r).get("logits_spread"), (int, float))
    ]
    return Profile(
        signal=mean_profile(signals),
        scale=mean_profile(scales),
        signal_factor=combine([run_factor(s[:last], reverse=False) for s in signals]),
        scale_factor=combine([run_factor(s[:last], reverse=True) for s in scales]),
        layers=point.depth,
        names=point.names,
        spread=mean_profile(spreads),
        spread_factor=combine([run_factor(s[:last], reverse=True) for s in spreads]),
        logits_spread=combine(logits),
        span=last if last < point.depth else 0,
    )
