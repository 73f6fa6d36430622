"""The results the report reads, as a small data model of its own: each run directory's records
(`RunRecords`), what the activations are compared on (`Condition`), the finished runs of one
activation at one condition (`Point`: a grid point), and the lines over depth that the depth
figures draw (`DepthSeries`). The conditions' order lives here too; their names (`naming.label`,
`naming.axes`) in settings/naming.py."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vanishing import stats
from vanishing.data import sequences
from vanishing.model.activations import ACTIVATIONS, Activation
from vanishing.settings import naming
from vanishing.settings.naming import (
    MODEL_KEYS,
    LayerNames,
    namer,
    rank_of,
    watched,
    world_size,
)

# A grid point is every config key of a run but these: its seed (the point's runs vary it), where
# it ran, and which of a data-parallel job's processes wrote records (`ranks`: one or all; the
# combined run is the same either way). Read from the records, so a setting added to the config
# is a key by itself.
RUN_KEYS = ("seed", "device", "ranks")
# The keys points.csv and pairs.csv have always begun with, in that order; only an order: the
# other config keys follow them, and split runs into points all the same.
LEADING_KEYS = (
    "dataset",
    "hidden",
    "activation",
    "init",
    "optimizer",
    "lr",
    "batch_size",
    "epochs",
)


REGRESSION, CLASSIFICATION = "regression", "classification"  # result.json's `task`
# The adding problem's baseline in expectation: always answering 1, the targets' mean, scores
# their variance, 2 / 12 (a sum of two U(0, 1) numbers). Records of a regression without a
# recorded baseline (a watched model's, a run killed before its first epoch) are set against it.
ADDING_BASELINE = 1 / 6


def task_of(config: dict[str, Any], result: dict[str, Any] | None = None) -> str:
    """A run's task: result.json's where it says, else its data set's (the adding problem is
    a regression); older records are classifications."""
    task = (result or {}).get("task")
    if task in (REGRESSION, CLASSIFICATION):
        return str(task)
    dataset = config.get("dataset")
    return sequences.task(dataset) if isinstance(dataset, str) else CLASSIFICATION


def numbers(values: Iterable[Any] | Any) -> np.ndarray:
    """A list of record numbers (None for non-finite) as a float array with nan; what a damaged
    or hand-edited record holds instead (a string, a table, a list of them) reads as nan, and
    anything but a list as no layers."""
    if not isinstance(values, (list, tuple, np.ndarray)):
        return np.zeros(0)
    return np.array(
        [
            v if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
            for v in values
        ],
        dtype=float,
    )


def underflowed(ratios: Sequence[float | None]) -> bool:
    """Every seed's layer-1 gradient at step 0 is exactly 0: it underflowed in float32, a ratio
    the geometric mean (over positive values) cannot average."""
    return bool(ratios) and all(r == 0 for r in ratios)


def hashable(value: Any) -> Any:
    """A config value as a dict key: scalars as they are, lists and tables as their JSON text."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    return json.dumps(value, sort_keys=True, default=str)  # odd records: still one value each


def point_keys(configs: Iterable[dict[str, Any]]) -> list[str]:
    """The keys of a grid point: every key of the configs but RUN_KEYS, LEADING_KEYS first, then
    the others in the order config.json has them (first seen)."""
    keys = dict.fromkeys(key for config in configs for key in config if key not in RUN_KEYS)
    return [k for k in LEADING_KEYS if k in keys] + [k for k in keys if k not in LEADING_KEYS]


@dataclass(frozen=True)
class Condition:
    """What the activations are compared on: a run's config without its activation, seed and
    device, as (key, value) pairs sorted by key, the values hashable (hidden a tuple of widths)."""

    pairs: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str) -> Any:
        """The value of one config key; None where the records lack it."""
        return dict(self.pairs).get(key)

    @property
    def hidden(self) -> tuple[int, ...]:
        return self.get("hidden") or ()

    @property
    def depth(self) -> int:
        """The number of hidden layers."""
        return len(self.hidden)


@dataclass(frozen=True)
class RunRecords:
    """One run directory's records; `result` is None while the run has not finished. A
    data-parallel run's (`vanishing.watch` under torch.distributed, ranks="all") holds its ranks'
    own runs, D/rank0 .. D/rank{W-1} (`loading.with_ranks`): never runs of their own."""

    path: Path
    config: dict[str, Any]  # an older run's with the settings it predates filled in
    metrics: list[dict[str, Any]]
    result: dict[str, Any] | None
    filled: tuple[str, ...] = ()  # the config keys its records predate (`config.completed`)
    ranks: list[RunRecords] = field(default_factory=list)  # by rank; empty for any other run

    @property
    def recorded(self) -> dict[str, Any]:
        """The config as its records hold it: without the keys filled in."""
        return {k: v for k, v in self.config.items() if k not in self.filled}

    @property
    def status(self) -> str:
        return "unfinished" if self.result is None else str(self.result.get("status"))

    @property
    def finished(self) -> dict[str, Any]:
        """result.json of a run that has finished (points hold no other)."""
        if self.result is None:
            raise ValueError(f"{self.path} has not finished: no result.json")
        return self.result

    def rows(self, kind: str) -> list[dict[str, Any]]:
        """The metrics rows of one kind ("probe" or "epoch")."""
        return [row for row in self.metrics if row.get("kind") == kind]

    @property
    def world_size(self) -> int:
        """How many processes measured the run: config.json's world_size, 1 without one."""
        return world_size(self.config)

    @property
    def rank(self) -> int | None:
        """Which rank of a data-parallel job wrote the run (D/rank{r}); None for a whole job's."""
        return rank_of(self.config)

    @property
    def names(self) -> LayerNames:
        """How sentences name this run's layers."""
        probes = self.rows("probe")
        return LayerNames.of(self.config, probes[0].get("grad_norms") if probes else None)


@dataclass(frozen=True)
class Point:
    """The finished runs of one activation at one condition, over seeds: one grid point (a row of
    points.csv and of the summary)."""

    activation: Activation
    runs: tuple[RunRecords, ...]
    label: str
    condition: Condition = Condition()  # the runs' config without activation, seed and device
    color: str = "C0"  # the activation's colour, the same in every figure

    @property
    def ok(self) -> tuple[RunRecords, ...]:
        return tuple(r for r in self.runs if r.status == "ok")

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(self.runs[0].config["hidden"])  # a list of ints: `loading` checks

    @property
    def depth(self) -> int:
        """The number of hidden layers."""
        return len(self.hidden)

    @property
    def names(self) -> LayerNames:
        """How sentences name the layers (the runs of a point share one model)."""
        return self.runs[0].names

    @property
    def watched(self) -> bool:
        """A user's own model measured by `vanishing.watch`."""
        return watched(self.runs[0].config)

    @property
    def condition_label(self) -> str:
        """The label without the activation: 'depth 5, init kaiming', '' when one condition."""
        name = naming.title(self.runs[0].config)
        return self.label.removeprefix(name).removeprefix(", ")

    @property
    def accuracies(self) -> list[float]:
        return stats.finite(r.finished["test_accuracy"] for r in self.ok)

    @property
    def accuracy(self) -> stats.Summary:
        """Test accuracy over seeds: mean, std and confidence interval."""
        return stats.summarize(self.accuracies)

    @property
    def task(self) -> str:
        """ "classification" or "regression" (`task_of`): the runs of a point share a data set."""
        return task_of(self.runs[0].config, self.runs[0].result)

    @property
    def regression(self) -> bool:
        return self.task == REGRESSION

    @property
    def score_key(self) -> str:
        """What the point is scored by: a classification's test accuracy (higher is better), a
        regression's test loss, its mean squared error (lower is better)."""
        return "test_loss" if self.regression else "test_accuracy"

    @property
    def scores(self) -> list[float]:
        """The score (`score_key`) of each run that finished without diverging."""
        return stats.finite(r.finished.get(self.score_key) for r in self.ok)

    @property
    def seed_scores(self) -> list[tuple[Any, float]]:
        """(seed, score) of the runs that finished without diverging."""
        return [
            (r.config.get("seed"), found[0])
            for r in self.ok
            if (found := stats.finite([r.finished.get(self.score_key)]))
        ]

    @property
    def score(self) -> stats.Summary:
        """The score over seeds: mean, std and confidence interval."""
        return stats.summarize(self.scores)

    def better(self, a: float, b: float) -> bool:
        """Whether score `a` is better than `b`: higher accuracy, lower loss."""
        return a < b if self.regression else a > b

    @property
    def baseline(self) -> float:
        """A regression's baseline: the test loss of always answering 1 (result.json's
        `baseline_loss`, the mean over runs; ADDING_BASELINE where none is recorded)."""
        values = stats.finite((r.result or {}).get("baseline_loss") for r in self.runs)
        return stats.mean(values) if values else ADDING_BASELINE

    def unit_share(self, key: str) -> stats.Summary:
        """Over seeds, the percent of all hidden units that are dead or of (sample, unit) pairs
        that are saturated (`key`), from result.json's per-layer fractions."""
        return stats.summarize(
            stats.percent_of_units(r.finished.get(key), self.hidden) for r in self.ok
        )

    @property
    def health_key(self) -> str | None:
        """Which failure to watch: dead units for rectifiers, saturation for the others."""
        family = self.activation.family
        if family == "rectifier":
            return "dead_fraction"
        return None if family == "linear" else "saturated_fraction"

    @property
    def init_ratios(self) -> list[float | None]:
        """Each run's layer-1 / output gradient norm at step 0 (None where not finite)."""
        return [r.finished.get("vanishing_ratio_init") for r in self.runs]

    @property
    def vanishing_ratio_init(self) -> float:
        """Geometric mean over seeds of layer-1 / output gradient norm at step 0."""
        return stats.geometric_mean(self.init_ratios)

    @property
    def ratio_underflow(self) -> bool:
        """The layer-1 gradient at step 0 underflowed to 0 at every seed (`underflowed`)."""
        return underflowed(self.init_ratios)

    def epoch_series(self, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(epochs, mean, std over seeds) of one history field; std nan with one seed."""
        by_epoch: dict[int, list[float | None]] = {}
        for run in self.ok:
            for row in run.finished.get("history", []):
                by_epoch.setdefault(row["epoch"], []).append(row.get(key))
        epochs = sorted(by_epoch)
        summaries = [stats.summarize(by_epoch[e]) for e in epochs]
        mean = np.array([s.mean for s in summaries], dtype=float)
        std = np.array([s.std for s in summaries], dtype=float)
        return np.array(epochs, dtype=float), mean, std

    def probe_series(self, key: str, geometric: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values of shape (steps, layers)) of a per-layer probe field, mean over seeds."""
        return self._series("probe", key, geometric)

    def epoch_layers(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values (epochs, layers)) of a per-layer epoch-end field, mean over seeds."""
        return self._series("epoch", key, False)

    def _series(self, kind: str, key: str, geometric: bool) -> tuple[np.ndarray, np.ndarray]:
        by_step: dict[int, list[np.ndarray]] = {}
        for run in self.ok or self.runs:  # all diverged: still show what was measured
            for row in run.rows(kind):
                if row.get(key) is not None:
                    by_step.setdefault(row["step"], []).append(numbers(row[key]))
        steps = sorted(s for s, v in by_step.items() if len({len(x) for x in v}) == 1)
        if not steps:
            return np.zeros(0), np.zeros((0, 0))
        values = [stats.mean_over_runs(np.stack(by_step[s]), geometric) for s in steps]
        if len({len(v) for v in values}) != 1:
            return np.zeros(0), np.zeros((0, 0))
        return np.array(steps, dtype=float), np.stack(values)

    def result_layers(
        self, key: str, runs: Sequence[RunRecords], geometric: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, min, max over runs) of a per-layer result.json field."""
        return layer_spread([numbers(r.finished.get(key) or []) for r in runs], geometric)

    def probe_layers(
        self, key: str, last: bool = False, geometric: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, min, max over runs) of a per-layer probe field at each run's first probe that
        holds it (every run: a diverged one took that step too) or, with `last`, its last (the
        runs that finished without diverging); nan where no run holds it."""
        lists = []
        for run in self.ok if last else self.runs:
            rows = [row for row in run.rows("probe") if row.get(key) is not None]
            if rows:
                lists.append(numbers(rows[-1 if last else 0][key]))
        return layer_spread(lists, geometric)


def layer_spread(
    lists: Sequence[np.ndarray], geometric: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, min, max over runs) per layer of the runs' non-empty lists; nan (one layer) when
    there are none or their lengths differ."""
    lists = [x for x in lists if x.size]
    if not lists or len({len(x) for x in lists}) != 1:
        return np.full(1, math.nan), np.full(1, math.nan), np.full(1, math.nan)
    stack = np.stack(lists)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a layer never measured: nan
        return stats.mean_over_runs(stack, geometric), np.nanmin(stack, 0), np.nanmax(stack, 0)


def condition_of(config: dict[str, Any]) -> Condition:
    """The run's condition: every config key but the activation and RUN_KEYS. Sorted by key, so
    that the same values make the same condition however config.json orders them."""
    skipped = {"activation", *RUN_KEYS, *(MODEL_KEYS if watched(config) else ())}
    return Condition(
        tuple(
            (key, tuple(value) if key == "hidden" else hashable(value))  # `loading`: ints
            for key, value in sorted(config.items())
            if key not in skipped
        )
    )


def value_order(value: Any) -> tuple[int, Any, str]:
    """Sort key of one value: numbers by size before text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))


def condition_order(condition: Condition) -> tuple[Any, ...]:
    """Sort key of a condition: shallowest first, then LEADING_KEYS' values in that order, then
    the other keys' by name (numbers before text)."""
    values = dict(condition.pairs)
    hidden = values.pop("hidden", ())
    leading = [
        value_order(values.pop(k, None)) for k in LEADING_KEYS if k not in ("hidden", "activation")
    ]
    rest = [(key, value_order(value)) for key, value in sorted(values.items())]
    return (len(hidden), hidden, *leading, *rest)


def axes_of(condition: Condition) -> dict[str, Any]:
    """A condition as readable axes (`naming.axes`): depth and width for equal widths, else the
    widths joined; then every other key."""
    return naming.axes(dict(condition.pairs))


def model_setup(config: dict[str, Any]) -> str:
    """A watched model's setup in one line, for the page's header: 'Net (47,770 parameters;
    9 weighted layers, 8 activation layers: sigmoid), adam lr 0.001, measured every 25 steps
    on the training batch of the step.'; a data-parallel job's says over how many processes
    (and a rank directory's, which rank)."""
    kinds = config.get("activation_kinds") or []
    parameters = config.get("parameters")
    counted = f"{parameters:,} parameters; " if isinstance(parameters, int) else ""
    shape = (
        f"{counted}{len(config.get('layers') or [])} weighted layers, {len(kinds)} activation "
        f"layers: {', '.join(dict.fromkeys(map(str, kinds))) or 'none'}"
    )
    optimizer = config.get("optimizer")
    lr = config.get("lr")
    trained = f", {optimizer}" + (f" lr {lr:g}" if isinstance(lr, (int, float)) else "")
    span = config.get("lr_range")
    if isinstance(span, list) and len(span) == 2:  # a schedule moved it
        trained = f", {optimizer} lr {span[0]:g} to {span[1]:g} (a schedule)"
    tied = config.get("tied")
    shared = (
        "; " + ", ".join(f"{k}'s weight tied to {', '.join(v)}" for k, v in tied.items())
        if isinstance(tied, dict) and tied
        else ""
    )
    shape += shared
    size = config.get("probe_size")
    batch = f"a fixed probe batch of {size}" if size else "the training batch of the step"
    processes, rank = world_size(config), rank_of(config)
    parallel = ""
    if rank is not None:
        parallel = f", rank {rank} of a job data-parallel over {processes} processes"
        batch = f"{batch}, this rank's own" if size is None else batch
    elif processes > 1:
        parallel = f", data-parallel over {processes} processes"
        batch = f"{batch}, every rank's (the global batch)" if size is None else batch
    if parallel:  # older records of this release have no "parallel": DDP's
        parallel += (
            " (FSDP2, sharded)"
            if config.get("parallel") == "fsdp2"
            else " (DistributedDataParallel)"
        )
    return (
        f"{config.get('model')} ({shape}){trained if optimizer else ''}, watched by "
        f"vanishing.watch{parallel}: measured every {config.get('every')} steps on {batch}."
    )


def seed_order(run: RunRecords) -> tuple[int, Any]:
    """Sort key of a run's seed: numbers by size, a watched model's null seed after them."""
    seed = run.config.get("seed", 0)
    return (0, seed) if isinstance(seed, (int, float)) else (1, str(seed))


def make_points(runs: Sequence[RunRecords]) -> list[Point]:
    """Finished runs grouped by activation and condition, in registry order, shallowest first;
    labels name the condition only where conditions differ."""
    keyed: dict[tuple[str, Condition], list[RunRecords]] = {}
    for run in runs:
        if run.result is not None:
            key = (run.config["activation"], condition_of(run.config))
            keyed.setdefault(key, []).append(run)
    order = list(ACTIVATIONS)
    keys = sorted(keyed, key=lambda k: (order.index(k[0]), condition_order(k[1])))
    names = list(dict.fromkeys(name for name, _ in keys))
    palette = {name: f"C{i % 10}" for i, name in enumerate(names)}
    # Each point as a config of its activation and condition: labelled as the live page labels
    # a run, by what sets it apart from the other points.
    configs = [{"activation": name, **dict(condition.pairs)} for name, condition in keys]
    points = []
    for (name, condition), config in zip(keys, configs, strict=True):
        point_runs = sorted(keyed[(name, condition)], key=lambda r: (seed_order(r), r.path))
        label = naming.label(config, configs)
        points.append(Point(ACTIVATIONS[name], tuple(point_runs), label, condition, palette[name]))
    return points


def by_condition(points: Sequence[Point]) -> dict[Condition, list[Point]]:
    """The points of each condition, conditions shallowest first, activations in registry order."""
    conditions: dict[Condition, list[Point]] = {}
    for point in sorted(points, key=lambda g: condition_order(g.condition)):  # stable sort
        conditions.setdefault(point.condition, []).append(point)
    return conditions


def representative_conditions(conditions: Sequence[Condition]) -> list[Condition]:
    """The conditions the per-layer figures are drawn for: the shallowest, and the deepest with
    the same other axes (else the first deepest); without depths, the first and the last."""
    ordered = sorted(conditions, key=condition_order)
    if len(ordered) <= 1:
        return ordered
    first = ordered[0]

    def others(condition: Condition) -> dict[str, Any]:
        return {k: v for k, v in axes_of(condition).items() if k != "depth"}

    deepest = [s for s in ordered if s.depth == ordered[-1].depth]
    last = next((s for s in deepest if others(s) == others(first)), deepest[0])
    return [first, last if last != first else ordered[-1]]


@dataclass(frozen=True)
class DepthSeries:
    """One line of the depth figures: an activation at one condition of the other axes."""

    label: str
    activation: Activation
    color: str
    style: int  # which condition of the other axes: line style and marker
    points: tuple[Point, ...]  # shallowest first

    @property
    def dataset(self) -> Any:
        return self.points[0].condition.get("dataset")

    @property
    def health_key(self) -> str | None:
        return self.points[0].health_key

    @property
    def depths(self) -> np.ndarray:
        return np.array([g.depth for g in self.points], dtype=float)

    @property
    def regression(self) -> bool:
        return self.points[0].regression

    def accuracy(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std over seeds) of the score at each depth: test accuracy, or a regression's
        test loss (`Point.score`)."""
        summaries = [g.score for g in self.points]
        return np.array([s.mean for s in summaries]), np.array([s.std for s in summaries])

    def ratio(self) -> np.ndarray:
        """Layer-1 / output gradient ratio at initialisation (geometric mean) at each depth; 0
        where it underflowed at every seed."""
        return np.array([0.0 if g.ratio_underflow else g.vanishing_ratio_init for g in self.points])

    def units(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std over seeds) of the percent of dead or saturated units at each depth."""
        if self.health_key is None:
            nan = np.full(len(self.points), math.nan)
            return nan, nan
        summaries = [g.unit_share(self.health_key) for g in self.points]
        return np.array([s.mean for s in summaries]), np.array([s.std for s in summaries])


def depth_series(points: Sequence[Point]) -> list[DepthSeries]:
    """The points as lines over depth: one per activation and condition of the other axes."""
    keyed: dict[tuple[str, str], list[Point]] = {}
    others: dict[str, dict[str, Any]] = {}
    for point in points:  # registry order, then shallowest first
        other = {k: v for k, v in axes_of(point.condition).items() if k not in ("depth", "widths")}
        text = json.dumps(other, sort_keys=True, default=str)
        others.setdefault(text, other)
        keyed.setdefault((point.activation.name, text), []).append(point)
    style = {text: i for i, text in enumerate(others)}

    def said(axes: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in axes.items() if k != "arch"}  # the title names the network

    describe = namer([said(other) for other in others.values()])
    series = []
    for (_, text), members in keyed.items():
        words = describe(said(others[text]))
        first = members[0]
        label = naming.title(first.runs[0].config) + (f" ({words})" if words else "")
        members = sorted(members, key=lambda g: condition_order(g.condition))
        series.append(
            DepthSeries(label, first.activation, first.color, style[text], tuple(members))
        )
    return series
