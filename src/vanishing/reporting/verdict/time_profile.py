"""What the records say through time, before any rule reads it: per recurrent layer the gradient
that reaches each step of the sequence, ||dLoss/dh_t|| for t = 1..T, its factor from the last
step back to the first, the gates' means and saturation and the recurrent weight's norm, at the
first probe (initialisation) and at the last (`TimeLayer`, `TimeProfile`, `time_profile`).

Time is read apart from depth: a stacked network's layers are compared by `profile` (the signal
from layer to layer), each layer's steps here. Records without a time profile (an MLP, older
records) have none: `time_profile` is None and nothing through time is said.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vanishing import stats
from vanishing.model.recurrent import RECURRENT
from vanishing.reporting.results import Point, RunRecords, numbers
from vanishing.reporting.verdict.profile import combine, setting_value

TIME_KEY = "time_signal_norms"  # a probe row's ||dLoss/dh_t||, layers x T
# result.json's, for records whose probe rows cannot be read
RESULT_KEYS = {"init": ("time_signal_norms_init", "gates_init"),
               "final": ("time_signal_norms_final", "gates_final")}  # fmt: skip
# The gate that keeps the memory, per cell: an LSTM's forget gate keeps that share of the cell
# per step (c_t = f c_{t-1} + i g), a GRU's update gate that share of h_{t-1}.
KEEPING = {"lstm": "forget", "gru": "update"}


def layer_lists(value: Any) -> list[np.ndarray]:
    """A record's list per recurrent layer of per-step numbers, each as `numbers` reads it (nan
    where a value is missing or damaged); [] for anything but a list."""
    return [numbers(item) for item in value] if isinstance(value, list) else []


def layer_dicts(value: Any, count: int) -> list[dict[str, float]]:
    """A record's dict per recurrent layer (gate name -> a number), `count` of them: what is
    not a dict of numbers reads as {}."""
    items = value if isinstance(value, list) else []
    found = []
    for index in range(count):
        item = items[index] if index < len(items) else None
        found.append(
            {
                str(k): float(v)
                for k, v in (item.items() if isinstance(item, dict) else ())
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
        )
    return found


def cell_of(gates: dict[str, float], config: dict[str, Any], recorded: bool) -> str:
    """A layer's cell: "lstm" or "gru" by its gates' names, "rnn" for a layer recorded without
    gates; a training run's --arch where its records say nothing."""
    if "forget" in gates:
        return "lstm"
    if "update" in gates:
        return "gru"
    arch = setting_value(config, "arch")
    if arch in RECURRENT:
        return str(arch)
    return "rnn" if recorded else ""


def step_factor(norms: np.ndarray) -> float:
    """Step 1's norm over step T's: nan for fewer than two steps or a missing or zero divisor;
    0 where step 1's underflowed."""
    if norms.size < 2:
        return math.nan
    first, last = norms[0], norms[-1]
    if not (math.isfinite(first) and math.isfinite(last)) or last <= 0:
        return math.nan
    return float(first / last)


def geometric_steps(lists: Sequence[np.ndarray]) -> np.ndarray:
    """Per step, the geometric mean over runs of the norms: 0 where any run's is 0 (the
    gradient did not reach that step in that run: one seed's zero is not hidden by the
    others'), nan where none was measured. Runs whose lengths differ from the first run's (a
    watched model's sequences of another length) are left out."""
    lists = [x for x in lists if x.size == lists[0].size] if lists else []
    if not lists:
        return np.zeros(0)
    stack = np.stack(lists)
    mean = stats.mean_over_runs(stack, geometric=True)
    zero = np.any(stack == 0, axis=0)
    mean[zero] = 0.0
    return mean


def factor_over_runs(factors: Sequence[float]) -> float:
    """The runs' factor from step T back to step 1: their geometric mean, 0 where any run's
    is 0 (one seed's gradient that never reaches step 1 is not averaged away)."""
    return 0.0 if any(factor == 0 for factor in factors) else combine(factors)


# Above this share of step T's gradient, a step next to steps of exactly 0 was not reached by
# an underflowing gradient (that falls towards float32's 1e-38 step by step) but cut off.
CUT = 1e-20


@dataclass(frozen=True)
class TimeLayer:
    """One recurrent layer through time, at one probe (geometric means over seeds)."""

    name: str  # "lstm 1", a watched model's "encoder.lstm.l0"
    norms: np.ndarray  # ||dLoss/dh_t|| for t = 1..T
    factor: float  # step 1's over step T's; 0: step 1's underflowed; nan: not measured
    cell: str  # "rnn", "lstm", "gru"; "" when the records do not say
    gates: dict[str, float] = field(default_factory=dict)  # gate -> mean activation
    saturated: dict[str, float] = field(default_factory=dict)  # gate -> share under .05, over .95
    recurrent_norm: float = math.nan  # the largest singular value of W_hh
    nonfinite: bool = False  # a step's norm was not a finite number (written as null)

    @property
    def steps(self) -> int:
        """T, the sequence's length."""
        return int(self.norms.size)

    @property
    def reached(self) -> int:
        """The first step (from 1) whose norm is above 0: far back in a long sequence the
        gradient underflows to exactly 0 in float32; 0 when no step's is above 0."""
        positive = np.flatnonzero(self.norms > 0)
        return int(positive[0]) + 1 if positive.size else 0

    @property
    def reached_factor(self) -> float:
        """The first step reached's norm over step T's (`reached`)."""
        step = self.reached
        return step_factor(self.norms[step - 1 :]) if step else math.nan

    @property
    def cut(self) -> bool:
        """Whether the steps before `reached` get exactly 0 without the gradient fading into
        float32's underflow on its way there: the first step reached still gets over CUT of
        step T's. Units at rest pass nothing back (a ReLU at 0: an IRNN reading the blank top
        rows of an MNIST image); a vanishing gradient falls through 1e-38 step by step."""
        return self.factor == 0 and self.reached > 1 and self.reached_factor > CUT

    @property
    def growth(self) -> float:
        """The largest step's norm over step T's: how much the gradient grows on its way back
        at its peak (the first step's share misses a peak the steps before cut off)."""
        last = self.norms[-1] if self.norms.size else math.nan
        if not last > 0 or not np.isfinite(self.norms).all():
            return math.nan
        return float(self.norms.max() / last)

    @property
    def peak(self) -> int:
        """The step (from 1) whose norm is the largest."""
        return int(np.argmax(self.norms)) + 1 if self.norms.size else 0

    @property
    def judged_factor(self) -> float:
        """The factor a verdict reads: step 1's over step T's, or where the early steps were
        cut off (`cut`), the factor per step over the steps reached, over all T steps."""
        if self.cut and math.isfinite(self.per_step):
            return self.per_step ** (self.steps - 1)
        return self.factor

    @property
    def per_step(self) -> float:
        """The geometric factor per step: over the whole sequence, or where step 1's norm is
        0, over the steps the gradient reaches; nan when not measured."""
        if self.factor > 0 and self.steps > 1:
            return self.factor ** (1 / (self.steps - 1))
        reached = self.reached
        if reached and reached < self.steps and self.reached_factor > 0:
            return self.reached_factor ** (1 / (self.steps - reached))
        return math.nan

    def theory(self, bound: float) -> np.ndarray | None:
        """The slope bound through time, (bound * ||W_hh||)^(T - t) for t = 1..T, scaled to
        the measured norm at step T: what a plain RNN's steps let through at most (`bound`,
        its activation's largest slope); None for a gated cell (no such simple line) or where
        W_hh's norm or step T's norm was not recorded."""
        last = self.norms[-1] if self.norms.size else math.nan
        if self.cell != "rnn" or not self.recurrent_norm >= 0 or not last > 0:
            return None
        with np.errstate(under="ignore", over="ignore"):
            return last * (bound * self.recurrent_norm) ** np.arange(self.steps - 1, -1, -1.0)

    @property
    def keeping(self) -> tuple[str, float] | None:
        """(the gate that keeps the memory, its mean): an LSTM's forget gate, a GRU's update
        gate; None for a plain RNN or where not recorded."""
        gate = KEEPING.get(self.cell)
        return (gate, self.gates[gate]) if gate and gate in self.gates else None


@dataclass(frozen=True)
class TimeProfile:
    """Every recurrent layer through time at one probe: the first (`final` False: at
    initialisation when its step is 0) or the last (after training)."""

    layers: tuple[TimeLayer, ...]
    step: Any  # the training step of the probe; None where only result.json says
    final: bool
    total: int | None = None  # the steps the run trained (the last probe's: where known)

    @property
    def when(self) -> str:
        """'at initialisation', 'after training (last probe)' or 'at step 100'; a last probe
        taken well before the end of training says so: 'at the last probe (step 500 of
        600)', since what training did after it is not measured."""
        if self.final:
            step, total = self.step, self.total
            if isinstance(step, int) and isinstance(total, int) and step < 0.95 * (total - 1):
                return f"at the last probe (step {step} of {total})"
            return "after training (last probe)"
        return "at initialisation" if self.step in (0, None) else f"at step {self.step}"

    @property
    def moment(self) -> str:
        """`when` without its parenthesis: 'after training', 'at initialisation'."""
        return self.when.split(" (")[0]

    @property
    def measured(self) -> list[TimeLayer]:
        """The layers whose factor was measured (0 included: an underflow)."""
        return [layer for layer in self.layers if layer.factor >= 0]

    @classmethod
    def of_rows(
        cls,
        rows: Sequence[dict[str, Any]],
        config: dict[str, Any],
        final: bool,
        fallback: Sequence[dict[str, Any]] = (),
    ) -> TimeProfile | None:
        """The profile of one probe row per run (geometric means over them; a run still
        training has one row): `fallback` is result.json's keys where a run's rows hold none,
        already named as a probe row names them. None when no run holds a time profile."""
        rows = [row for row in [*rows, *fallback] if layer_lists(row.get(TIME_KEY))]
        if not rows:
            return None
        lists = [layer_lists(row[TIME_KEY]) for row in rows]
        count = len(lists[0])
        rows = [row for row, found in zip(rows, lists, strict=True) if len(found) == count]
        lists = [found for found in lists if len(found) == count]
        names = next(
            (
                [str(n) for n in row["time_layers"]]
                for row in rows
                if isinstance(row.get("time_layers"), list) and len(row["time_layers"]) == count
            ),
            [],
        )
        layers = []
        for index in range(count):
            norms = [found[index] for found in lists]
            gates = mean_dicts([layer_dicts(row.get("gates"), count)[index] for row in rows])
            saturated = [layer_dicts(row.get("gates_saturated"), count)[index] for row in rows]
            spectral = stats.finite(
                numbers(row.get("recurrent_norms"))[index]
                if index < numbers(row.get("recurrent_norms")).size
                else None
                for row in rows
            )
            nonfinite = any(
                isinstance(layer := row[TIME_KEY][index], list) and None in layer for row in rows
            )
            recorded = any(isinstance(row.get("gates"), list) for row in rows)
            arch = setting_value(config, "arch")
            layers.append(
                TimeLayer(
                    names[index] if names else default_name(arch, index, count),
                    geometric_steps(norms),
                    factor_over_runs([step_factor(x) for x in norms]),
                    cell_of(gates, config, recorded),
                    gates,
                    mean_dicts(saturated),
                    stats.mean(spectral),
                    nonfinite,
                )
            )
        step = rows[0].get("step")
        return cls(tuple(layers), step, final)


def default_name(arch: Any, index: int, count: int) -> str:
    """A layer's name where the records give none: "lstm 1" for a training run, else
    "recurrent layer 1"."""
    return f"{arch} {index + 1}" if arch in RECURRENT else f"recurrent layer {index + 1}"


def mean_dicts(items: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per key, the mean of the finite values over the dicts, in the first dicts' key order."""
    keys = dict.fromkeys(key for item in items for key in item)
    means = {key: stats.mean(stats.finite(item.get(key) for item in items)) for key in keys}
    return {key: value for key, value in means.items() if math.isfinite(value)}


def time_rows(run: RunRecords) -> list[dict[str, Any]]:
    """The run's probe rows that hold a time profile, in order."""
    return [row for row in run.rows("probe") if layer_lists(row.get(TIME_KEY))]


def result_row(run: RunRecords, moment: str) -> dict[str, Any]:
    """result.json's time profile at "init" or "final" as a probe row names it (no step)."""
    norms_key, gates_key = RESULT_KEYS[moment]
    result = run.result or {}
    return {
        TIME_KEY: result.get(norms_key),
        "gates": result.get(gates_key),
        "time_layers": result.get("time_layers"),
    }


def time_profile(point: Point, final: bool = False) -> TimeProfile | None:
    """The point's layers through time at the first probe (every run: a diverged one took that
    step too) or, with `final`, at the last probe after it (the runs that finished without
    diverging); result.json's for runs whose rows hold none. None where no run has a time
    profile then (an MLP, older records, no probe after the first)."""
    config = point.runs[0].config
    rows, fallback = [], []
    for run in point.ok if final else point.runs:
        found = time_rows(run)
        if final and len(found) > 1:
            rows.append(found[-1])
        elif not final and found:
            rows.append(found[0])
        elif not found:
            fallback.append(result_row(run, "final" if final else "init"))
    if (
        final
        and not rows
        and not any(layer_lists((r.result or {}).get("time_signal_norms_final")) for r in point.ok)
    ):
        return None
    if final and not rows:
        # Only result.json: its final profile is after training only if it differs from init
        fallback = [
            result_row(r, "final")
            for r in point.ok
            if (r.result or {}).get("time_signal_norms_final")
            != (r.result or {}).get("time_signal_norms_init")
        ]
    found_profile = TimeProfile.of_rows(rows, config, final, fallback)
    totals = [
        steps for run in point.ok if isinstance(steps := (run.result or {}).get("steps"), int)
    ]
    if found_profile is None or not final or not totals:
        return found_profile
    return dataclasses.replace(found_profile, total=max(totals))


def time_series(point: Point, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """(training steps, ||dLoss/dh_t|| of shape (probes, T)) of one recurrent layer over
    training, geometric mean over the runs that finished (all of them where every run
    diverged); empty where not recorded or its length changes (a watched model's sequences)."""
    by_step: dict[Any, list[dict[str, Any]]] = {}
    for run in point.ok or point.runs:
        for row in time_rows(run):
            by_step.setdefault(row.get("step"), []).append(row)
    steps, values = [], []
    for step, rows in by_step.items():
        found = TimeProfile.of_rows(rows, point.runs[0].config, final=False)
        if found is not None and layer < len(found.layers) and isinstance(step, int):
            steps.append(step)
            values.append(found.layers[layer].norms)
    if not values or len({v.size for v in values}) != 1:
        return np.zeros(0), np.zeros((0, 0))
    order = np.argsort(steps)
    return np.array(steps, dtype=float)[order], np.stack(values)[order]


def has_time(point: Point) -> bool:
    """Whether any run of the point recorded a time profile."""
    return time_profile(point) is not None
