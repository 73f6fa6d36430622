"""The report: one offline HTML page (and a Markdown twin) built from run records alone.

It reads config.json, metrics.jsonl and result.json of finished runs, never trains, so it can be
redrawn at any time. Computing (groups, summary rows, diagnosis, significance) lives here; drawing
lives in `plots`. Runs are grouped by activation and setting (the sweep's grid point without the
seed); when the runs span several settings, as a sweep's do, the page adds figures over depth, the
depth at which each activation stops learning and a t-test per pair of activations per setting,
and draws the per-layer figures for two representative settings only.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from vanishing import compare, plots, probes, records, stats
from vanishing.activations import ACTIVATIONS, SATURATION_FRACTION, Activation
from vanishing.data import DATASETS
from vanishing.errors import UsageError
from vanishing.plots import number
from vanishing.records import RunResult
from vanishing.sweep import POINT_KEYS


@dataclass(frozen=True)
class Thresholds:
    """Every threshold the diagnosis uses, in one place."""

    # Layer 1 gets under 1 % of the output layer's gradient: under SGD its steps are 100x
    # smaller, two orders of magnitude, the textbook vanishing gradient.
    vanishing_ratio: float = 1e-2
    # Under 10 %: attenuated; visible, but Adam's per-weight step scaling largely hides it.
    attenuated_ratio: float = 0.1
    # Over 10x: the first layer gets ten times the output layer's gradient: exploding.
    exploding_ratio: float = 10.0
    # A layer with 5 % or more of its units dead (zero on every training image) is worth naming.
    dead_fraction: float = 0.05
    # 20 % or more saturated (sample, unit) pairs: a fifth of the signal passes a slope < 10 % max.
    saturated_fraction: float = 0.2
    # The t-tests on test accuracy (paired on shared seeds, else Welch's): the usual 5 % level.
    p_value: float = stats.ALPHA
    # An activation has stopped learning at a depth where its mean test accuracy is less than
    # half way from chance (1 / classes) to the best group's mean on the same data set: below
    # 53.5 % on MNIST when the best reaches 97 %. Relative, so it holds on harder data sets too.
    stop_fraction: float = 0.5


THRESHOLDS = Thresholds()
SATURATED = f"{100 * SATURATION_FRACTION:g} %"  # the probes' saturation rule, as the page says it
# A setting: what a sweep's grid point fixes besides the activation (its seeds vary within it).
SETTING_KEYS = tuple(key for key in POINT_KEYS if key != "activation")
HIDDEN = SETTING_KEYS.index("hidden")
CHANCE_CLASSES = 10  # the chance level's class count for a data set missing from the registry

RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(RunResult))
# The fields every finished run writes (those without a default in RunResult).
REQUIRED_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(RunResult)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)
# result.json fields that training writes as null when non-finite; read back as nan.
SCALAR_FIELDS = (
    "test_accuracy",
    "test_loss",
    "vanishing_ratio_init",
    "train_seconds",
    "eval_seconds",
    "probe_seconds",
)


def numbers(values: Any) -> np.ndarray:
    """A list of record numbers (None for non-finite) as a float array with nan."""
    return np.array([math.nan if v is None else v for v in values], dtype=float)


def average(stack: np.ndarray, geometric: bool = False) -> np.ndarray:
    """Mean over axis 0 ignoring nan; geometric for norms and ratios that span decades."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-nan column is simply nan
        if geometric:
            return np.exp(np.nanmean(np.log(np.where(stack > 0, stack, np.nan)), axis=0))
        return np.nanmean(stack, axis=0)


@dataclass(frozen=True)
class Run:
    """One run directory's records; `result` is None while the run has not finished."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    result: dict[str, Any] | None

    @property
    def status(self) -> str:
        return "unfinished" if self.result is None else str(self.result.get("status"))

    def rows(self, kind: str) -> list[dict[str, Any]]:
        """The metrics rows of one kind ("probe" or "epoch")."""
        return [row for row in self.metrics if row.get("kind") == kind]


@dataclass(frozen=True)
class Group:
    """The finished runs of one activation at one setting, over seeds."""

    activation: Activation
    runs: tuple[Run, ...]
    label: str
    setting: tuple[Any, ...] = ()  # the runs' values of SETTING_KEYS, hidden as a tuple
    color: str = "C0"  # the activation's colour, the same in every figure

    @property
    def ok(self) -> tuple[Run, ...]:
        return tuple(r for r in self.runs if r.status == "ok")

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(self.runs[0].config["hidden"])

    @property
    def depth(self) -> int:
        """The number of hidden layers."""
        return len(self.hidden)

    @property
    def setting_label(self) -> str:
        """The label without the activation: 'depth 5, init kaiming', '' when one setting."""
        return self.label.removeprefix(self.activation.label).removeprefix(", ")

    @property
    def accuracies(self) -> list[float]:
        return [r.result["test_accuracy"] for r in self.ok if r.result["test_accuracy"] is not None]

    @property
    def seed_accuracies(self) -> list[tuple[Any, float]]:
        """(seed, test accuracy) of the runs that finished without diverging."""
        return [
            (r.config.get("seed"), r.result["test_accuracy"])
            for r in self.ok
            if r.result["test_accuracy"] is not None
        ]

    @property
    def accuracy(self) -> stats.Summary:
        """Test accuracy over seeds: mean, std and confidence interval."""
        return stats.summarize(self.accuracies)

    def unit_share(self, key: str) -> stats.Summary:
        """Over seeds, the share of all hidden units that are dead or (sample, unit) pairs that
        are saturated (`key`), from result.json's per-layer fractions weighted by layer width."""
        widths = np.array(self.hidden, dtype=float)
        shares = []
        for run in self.ok:
            values = numbers(run.result.get(key) or [])
            if values.shape == widths.shape and np.isfinite(values).all():
                shares.append(float(values @ widths / widths.sum()))
        return stats.summarize(shares)

    @property
    def health_key(self) -> str | None:
        """Which failure to watch: dead units for rectifiers, saturation for the others."""
        family = self.activation.family
        if family == "rectifier":
            return "dead_fraction"
        return None if family == "linear" else "saturated_fraction"

    @property
    def vanishing_ratio_init(self) -> float:
        """Geometric mean over seeds of layer-1 / output gradient norm at step 0."""
        ratios = numbers(r.result.get("vanishing_ratio_init") for r in self.runs)
        return float(average(ratios, geometric=True)) if ratios.size else math.nan

    @property
    def ratio_underflow(self) -> bool:
        """Every seed's layer-1 gradient at step 0 is exactly 0: it underflowed in float32, a
        ratio the geometric mean (over positive values) cannot average."""
        ratios = numbers(r.result.get("vanishing_ratio_init") for r in self.runs)
        return bool(ratios.size) and bool((ratios == 0).all())

    def epoch_series(self, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(epochs, mean, std over seeds) of one history field."""
        by_epoch: dict[int, list[float]] = {}
        for run in self.ok:
            for row in run.result.get("history", []):
                value = row.get(key)
                by_epoch.setdefault(row["epoch"], []).append(math.nan if value is None else value)
        epochs = np.array(sorted(by_epoch), dtype=float)
        stats = [compare.mean_std(by_epoch[int(e)]) for e in epochs]
        mean = np.array([m for m, _ in stats], dtype=float)
        std = np.array([s for _, s in stats], dtype=float)
        return epochs, mean, std

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
        values = [average(np.stack(by_step[s]), geometric) for s in steps]
        if len({len(v) for v in values}) != 1:
            return np.zeros(0), np.zeros((0, 0))
        return np.array(steps, dtype=float), np.stack(values)

    def result_layers(
        self, key: str, runs: Sequence[Run], geometric: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, min, max over runs) of a per-layer result.json field."""
        lists = [numbers(r.result.get(key) or []) for r in runs]
        lists = [x for x in lists if x.size]
        if not lists or len({len(x) for x in lists}) != 1:
            return np.full(1, math.nan), np.full(1, math.nan), np.full(1, math.nan)
        stack = np.stack(lists)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return average(stack, geometric), np.nanmin(stack, 0), np.nanmax(stack, 0)


@dataclass(frozen=True)
class FigureBlock:
    """One figure of the page: the question it answers, its caption and its PNG."""

    anchor: str
    question: str
    caption: str
    image: bytes
    attenuation: tuple[dict[str, Any], ...] = ()  # rows of the slope-bound table drawn below it
    section: tuple[str, str] = ("", "")  # (heading, note) of the figures for one setting


@dataclass(frozen=True)
class Report:
    """Everything the page shows, computed from the records."""

    sources: list[str]
    runs: list[Run]
    groups: list[Group]
    notes: list[str]
    rows: list[dict[str, Any]]
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


def find_run_dirs(path: Path) -> list[Path]:
    """`path` itself when it is a run directory, else every run directory below it."""
    if (path / records.CONFIG).is_file():
        return [path]
    found = []
    for root, dirs, files in os.walk(path):
        if records.CONFIG in files:
            found.append(Path(root))
            dirs.clear()  # a run directory holds no runs
        dirs.sort()
    return sorted(found)


def read_run(path: Path) -> Run | str:
    """The run's records, or a note saying why they cannot be used."""
    try:
        config = records.read_json(path / records.CONFIG)
        result = records.read_json(path / records.RESULT) if records.is_complete(path) else None
    except (OSError, json.JSONDecodeError) as e:
        return f"{path}: unreadable records ({e}); skipped"
    if not isinstance(config, dict) or config.get("activation") not in ACTIVATIONS:
        name = config.get("activation") if isinstance(config, dict) else None
        return f"{path}: unknown activation {name!r} in config.json; skipped"
    hidden = config.get("hidden")
    if not isinstance(hidden, list) or not all(isinstance(w, int) for w in hidden):
        return f"{path}: config.json has no list of hidden widths; skipped"
    if result is not None and (
        not isinstance(result, dict) or not all(key in result for key in REQUIRED_FIELDS)
    ):
        return f"{path}: result.json lacks fields of a finished run; skipped"
    return Run(path, config, records.read_metrics(path), result)


def load_runs(paths: Sequence[Path | str]) -> tuple[list[Run], list[str]]:
    """Every run under the given directories (deduplicated), and notes on what was skipped."""
    runs, notes, seen = [], [], set()
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            raise UsageError(f"no such directory: {path}")
        for run_dir in find_run_dirs(path):
            if run_dir.resolve() in seen:
                continue
            seen.add(run_dir.resolve())
            run = read_run(run_dir)
            (runs if isinstance(run, Run) else notes).append(run)
    if not runs and not notes:
        shown = ", ".join(str(p) for p in paths)
        raise UsageError(f"no run directories (with config.json) under {shown}")
    return runs, notes


def setting_of(config: dict[str, Any]) -> tuple[Any, ...]:
    """The run's setting: its values of SETTING_KEYS, hashable (hidden as a tuple)."""
    values = []
    for key in SETTING_KEYS:
        value = config.get(key)
        if key == "hidden":
            value = tuple(value)
        elif not isinstance(value, (str, int, float, bool, type(None))):
            value = json.dumps(value, sort_keys=True)  # odd records: still one setting each
        values.append(value)
    return tuple(values)


def setting_order(setting: tuple[Any, ...]) -> tuple[Any, ...]:
    """Sort key of a setting: shallowest first, then the other axes (numbers before text)."""
    hidden = setting[HIDDEN]
    rest = [v for i, v in enumerate(setting) if i != HIDDEN]
    return (
        len(hidden),
        hidden,
        *[
            (0, v, "")
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            else (1, 0, str(v))
            for v in rest
        ],
    )


def axes_of(setting: tuple[Any, ...]) -> dict[str, Any]:
    """A setting as readable axes: depth and width for equal widths, else the widths joined."""
    values = dict(zip(SETTING_KEYS, setting, strict=True))
    hidden = values.pop("hidden")
    if len(set(hidden)) == 1:
        return {"depth": len(hidden), "width": hidden[0], **values}
    return {"depth": len(hidden), "widths": "-".join(map(str, hidden)), **values}


# How a varying axis reads in a label, in label order.
AXIS_WORDS = {
    "depth": "depth {}",
    "width": "width {}",
    "widths": "{}",
    "init": "init {}",
    "optimizer": "{}",
    "lr": "lr {}",
    "epochs": "{} epochs",
    "batch_size": "batch {}",
    "dataset": "{}",
}


def namer(items: Sequence[dict[str, Any]]) -> Callable[[dict[str, Any]], str]:
    """Names for axes dicts that say only what varies among `items`: 'depth 5, sgd, lr 0.1'."""
    varying = [
        key
        for key in AXIS_WORDS
        if len({json.dumps(item.get(key), default=str) for item in items}) > 1
    ]

    def name(item: dict[str, Any]) -> str:
        words = []
        for key in varying:
            value = item.get(key)
            if value is None or (key == "depth" and "widths" in item):  # the widths say it
                continue
            value = f"{value:g}" if isinstance(value, float) else value
            words.append(AXIS_WORDS[key].format(value))
        return ", ".join(words)

    return name


def make_groups(runs: Sequence[Run]) -> tuple[list[Group], list[str]]:
    """Finished runs grouped by activation and setting, in registry order, shallowest first;
    labels name the setting only where settings differ; notes on configs that differ within."""
    keyed: dict[tuple[str, tuple[Any, ...]], list[Run]] = {}
    for run in runs:
        if run.result is not None:
            key = (run.config["activation"], setting_of(run.config))
            keyed.setdefault(key, []).append(run)
    order = list(ACTIVATIONS)
    keys = sorted(keyed, key=lambda k: (order.index(k[0]), setting_order(k[1])))
    names = list(dict.fromkeys(name for name, _ in keys))
    palette = {name: f"C{i % 10}" for i, name in enumerate(names)}
    describe = namer([axes_of(setting) for _, setting in keys])
    groups, notes = [], []
    for name, setting in keys:
        words = describe(axes_of(setting))
        label = ACTIVATIONS[name].label + (f", {words}" if words else "")
        group_runs = sorted(keyed[(name, setting)], key=lambda r: (r.config.get("seed", 0), r.path))
        groups.append(Group(ACTIVATIONS[name], tuple(group_runs), label, setting, palette[name]))
        ignored = {"seed", "device"}
        differ = sorted(
            k
            for k in {k for r in group_runs for k in r.config} - ignored
            if len({json.dumps(r.config.get(k)) for r in group_runs}) > 1
        )
        if differ:
            notes.append(f"the {label} runs differ in {', '.join(differ)}: compare with care")
    return groups, notes


def by_setting(groups: Sequence[Group]) -> dict[tuple[Any, ...], list[Group]]:
    """The groups of each setting, settings shallowest first, activations in registry order."""
    settings: dict[tuple[Any, ...], list[Group]] = {}
    for group in sorted(groups, key=lambda g: setting_order(g.setting)):  # stable sort
        settings.setdefault(group.setting, []).append(group)
    return settings


def representative_settings(settings: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The settings the per-layer figures are drawn for: the shallowest, and the deepest with
    the same other axes (else the first deepest); without depths, the first and the last."""
    ordered = sorted(settings, key=setting_order)
    if len(ordered) <= 1:
        return ordered
    first = ordered[0]

    def others(setting: tuple[Any, ...]) -> dict[str, Any]:
        return {k: v for k, v in axes_of(setting).items() if k != "depth"}

    deepest = [s for s in ordered if len(s[HIDDEN]) == len(ordered[-1][HIDDEN])]
    last = next((s for s in deepest if others(s) == others(first)), deepest[0])
    return [first, last if last != first else ordered[-1]]


def run_result(result: dict[str, Any]) -> RunResult:
    """A RunResult from a result.json dict, nulls back to nan, unknown fields dropped."""
    values = {key: result[key] for key in RESULT_FIELDS if key in result}
    for key in SCALAR_FIELDS:
        if values.get(key) is None:
            values[key] = math.nan
    for key, value in values.items():
        if isinstance(value, list) and key != "history":
            values[key] = numbers(value).tolist()
    return RunResult(**values)


def summary_row(group: Group) -> dict[str, Any]:
    """compare.summarize's row for one group."""
    (row,) = compare.summarize([run_result(r.result) for r in group.runs])
    return row


def percent(fraction: float) -> str:
    """0.3104 -> '31 %', 0.0042 -> '0.4 %'."""
    value = 100 * fraction
    return f"{value:.0f} %" if value >= 10 else f"{value:.1f} %"


def ratio_verdict(ratio: float, thresholds: Thresholds = THRESHOLDS) -> str:
    """The word for a first-layer / output-layer gradient ratio."""
    if ratio < thresholds.vanishing_ratio:
        return "vanishing"
    if ratio < thresholds.attenuated_ratio:
        return "attenuated"
    if ratio > thresholds.exploding_ratio:
        return "exploding"
    return "no vanishing"


def diagnose(group: Group, thresholds: Thresholds = THRESHOLDS) -> list[str]:
    """Plain-language findings for one group, each a sentence computed from its records."""
    sentences = []
    accuracies, seeds = group.accuracies, len(group.runs)
    if accuracies:
        mean, std = compare.mean_std(accuracies)
        spread = f" ± {100 * std:.2f}" if len(accuracies) > 1 else ""
        over = f"over {len(accuracies)} seeds" if len(accuracies) > 1 else "one seed"
        sentences.append(f"Test accuracy {100 * mean:.2f}{spread} % ({over}).")
    diverged = seeds - len(group.ok)
    if diverged:
        sentences.append(
            f"{diverged} of {seeds} runs diverged (the loss became non-finite); "
            "they are left out of accuracy and loss."
        )

    ratio = group.vanishing_ratio_init
    layers = len(group.hidden) + 1  # Linear layers: the hidden ones and the output layer
    if math.isfinite(ratio):
        mean_note = f" (geometric mean over {seeds} seeds)" if seeds > 1 else ""
        verdict = ratio_verdict(ratio, thresholds)
        if verdict == "vanishing":
            verdict += f", {math.floor(-math.log10(ratio))} orders of magnitude less"
        sentences.append(
            f"At initialisation layer 1 receives {number(ratio)} of the gradient that layer "
            f"{layers} (the output layer) receives{mean_note}: {verdict}."
        )
    elif group.ratio_underflow:
        sentences.append(
            "At initialisation the gradient reaching layer 1 is exactly 0 at every seed: it "
            "underflowed, too small for float32 (below about 1e-38 of the output layer's): "
            "vanishing, beyond measurement."
        )
    else:
        sentences.append("The gradient ratio at initialisation is not finite in the records.")
    bound = group.activation.derivative_bound
    if bound < 1:
        depth = len(group.hidden)
        sentences.append(
            f"{group.activation.label}'s slope is at most {bound:g}, so its {depth} hidden layers "
            f"alone multiply the gradient by at most ({bound:g})^{depth} = {number(bound**depth)}."
        )
    final, _, _ = group.result_layers("grad_norms_final", group.ok, geometric=True)
    if final.size > 1 and np.isfinite(final[[0, -1]]).all():
        after = float(final[0] / final[-1])
        sentences.append(
            f"After training the ratio is {number(after)}: {ratio_verdict(after, thresholds)}."
        )
    sentences.extend(health_sentences(group, thresholds))
    return sentences


def health_sentences(group: Group, thresholds: Thresholds = THRESHOLDS) -> list[str]:
    """Dead units for rectifiers, saturation for the others, a caveat for linear."""
    key = group.health_key
    if key is None:
        return [
            "A linear activation has slope 1 everywhere, so nothing vanishes, but however deep the "
            "network is it computes a single linear map: a linear classifier."
        ]
    if not group.ok:
        return []
    values, _, _ = group.result_layers(key, group.ok)
    if not np.isfinite(values).any():
        return []
    worst = int(np.nanargmax(values))
    epochs = len(group.ok[0].result.get("history", []))
    if key == "dead_fraction":
        widths = np.array(group.hidden, dtype=float)
        overall = float(np.nansum(values * widths) / widths.sum())
        if values[worst] >= thresholds.dead_fraction:
            sentence = (
                f"{percent(values[worst])} of layer-{worst + 1} units are dead after epoch "
                f"{epochs} (zero output on every training image); {percent(overall)} of all "
                "hidden units."
            )
            first = group.epoch_layers("dead_fraction")[1]
            if epochs > 1 and first.size and worst < first.shape[1]:
                sentence += f" After epoch 1 it was {percent(first[0, worst])}."
            return [sentence]
        if values[worst] == 0:
            return [f"No dead units after epoch {epochs} (checked on the whole training set)."]
        return [
            f"No dead layer: at most {percent(values[worst])} of a layer's units (layer "
            f"{worst + 1}) are dead after epoch {epochs}."
        ]
    if values[worst] >= thresholds.saturated_fraction:
        return [
            f"{percent(values[worst])} of layer-{worst + 1} activations are saturated at the end "
            f"of training (slope below {SATURATED} of its maximum): little gradient passes them."
        ]
    if values[worst] == 0:
        return ["No saturated activations at the end of training."]
    return [
        f"Little saturation: at most {percent(values[worst])} of a layer's activations "
        f"(layer {worst + 1}) are saturated at the end of training."
    ]


@dataclass(frozen=True)
class Gap:
    """The test-accuracy gap between two groups, and the t-test that judges it."""

    better: Group  # the higher mean accuracy
    worse: Group
    difference: float  # better's mean accuracy minus worse's (a fraction)
    test: str  # "paired t-test" on the same seeds, "Welch's t-test" otherwise, "" if none ran
    seeds: str  # "3 seeds", or "3 and 2 seeds" when the groups differ
    p: float  # two-sided; nan when the gap cannot be judged
    significant: bool

    @property
    def test_name(self) -> str:
        """The short name for a table: 'paired', 'Welch' or '–'."""
        return {"paired t-test": "paired", "Welch's t-test": "Welch"}.get(self.test, "–")


def gap_test(a: Group, b: Group, thresholds: Thresholds = THRESHOLDS) -> Gap:
    """A paired t-test when both groups ran the same seeds, Welch's t-test otherwise."""
    if stats.summarize(b.accuracies).mean > stats.summarize(a.accuracies).mean:
        a, b = b, a
    by_seed_a, by_seed_b = dict(a.seed_accuracies), dict(b.seed_accuracies)
    n_a, n_b = len(a.accuracies), len(b.accuracies)
    seeds = f"{n_a} seeds" if n_a == n_b else f"{n_a} and {n_b} seeds"
    difference = stats.summarize(a.accuracies).mean - stats.summarize(b.accuracies).mean
    if min(n_a, n_b) < 2:
        return Gap(a, b, difference, "", seeds, math.nan, False)
    # Same seeds, each once: the same initial weights and batch order, so pair them.
    if len(by_seed_a) == n_a and len(by_seed_b) == n_b and by_seed_a.keys() == by_seed_b.keys():
        shared = sorted(by_seed_a, key=str)
        test = stats.paired_test([by_seed_a[s] for s in shared], [by_seed_b[s] for s in shared])
        name = "paired t-test"
    else:
        test = stats.welch_test(a.accuracies, b.accuracies)
        name = "Welch's t-test"
    return Gap(a, b, difference, name, seeds, test.p, bool(test.p < thresholds.p_value))


def p_text(p: float) -> str:
    """'p = 0.031', or 'p < 0.0001' where two digits would read as zero or as 1e-31."""
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.2g}"


def verdict(gap: Gap) -> str:
    """One plain sentence on a gap: larger than the seed spread, within it, or not judgeable."""
    prefix = (
        f"The accuracy gap between {gap.better.label} and {gap.worse.label} "
        f"({100 * gap.difference:.2f} points)"
    )
    if not gap.test:
        return f"{prefix} cannot be judged: one seed: no spread to compare with, run --seeds 0,1,2."
    if math.isnan(gap.p):
        return f"{prefix} cannot be judged: every seed gave the same accuracy."
    if gap.significant:
        return (
            f"{prefix} is larger than the seed spread: significant at {gap.seeds} "
            f"({gap.test}, {p_text(gap.p)})."
        )
    return (
        f"{prefix} is within the seed spread: not significant at {gap.seeds} "
        f"({gap.test}, {p_text(gap.p)})."
    )


def significance(groups: Sequence[Group], thresholds: Thresholds = THRESHOLDS) -> list[str]:
    """Is the best activation's accuracy lead over each other one larger than the seed spread?"""
    scored = [g for g in groups if g.accuracies]
    if len(scored) < 2:
        return []
    best = max(scored, key=lambda g: stats.summarize(g.accuracies).mean)
    return [verdict(gap_test(best, other, thresholds)) for other in scored if other is not best]


def setting_gaps(groups: Sequence[Group], thresholds: Thresholds = THRESHOLDS) -> list[Gap]:
    """Every pair of activations at the same setting, with its t-test; settings shallowest first,
    then the larger gaps first."""
    gaps = []
    for members in by_setting(groups).values():
        scored = [g for g in members if g.accuracies]
        pairs = [gap_test(a, b, thresholds) for i, a in enumerate(scored) for b in scored[i + 1 :]]
        gaps += sorted(pairs, key=lambda gap: -gap.difference)
    return gaps


def gap_sentences(gaps: Sequence[Gap], thresholds: Thresholds = THRESHOLDS) -> list[str]:
    """How many gaps between activations at the same setting are significant, and by which test."""
    if not gaps:
        return []
    judged = [g for g in gaps if g.test and not math.isnan(g.p)]
    significant = sum(g.significant for g in judged)
    sentences = [
        f"{significant} of the {len(gaps)} accuracy gaps between two activations at the same "
        f"setting are larger than the seed spread (p below {thresholds.p_value:g}), listed below; "
        f"{len(judged) - significant} are within it: not significant."
    ]
    if len(judged) < len(gaps):
        sentences.append(
            f"{len(gaps) - len(judged)} cannot be judged: one seed, or the same accuracy at every "
            "seed."
        )
    paired = sum(g.test == "paired t-test" for g in judged)
    tests = [f"a paired t-test on the shared seeds ({paired} pairs)"] if paired else []
    if len(judged) > paired:
        tests.append(f"Welch's t-test where the seeds differ ({len(judged) - paired} pairs)")
    if tests:
        sentences.append(f"Each gap is judged by {' and '.join(tests)}.")
    if any(g.test == "paired t-test" and g.seeds == "2 seeds" for g in judged):
        sentences.append(
            "With 2 seeds a paired t-test has 1 degree of freedom: only a gap that is large and "
            "nearly the same at both seeds is significant."
        )
    return sentences


def chance_level(dataset: Any) -> float:
    """Accuracy of guessing: 1 / the number of classes."""
    spec = DATASETS.get(dataset) if isinstance(dataset, str) else None
    return 1 / (len(spec.classes) if spec is not None else CHANCE_CLASSES)


@dataclass(frozen=True)
class DepthSeries:
    """One line of the depth figures: an activation at one setting of the other axes."""

    label: str
    activation: Activation
    color: str
    style: int  # which setting of the other axes: line style and marker
    groups: tuple[Group, ...]  # shallowest first

    @property
    def dataset(self) -> Any:
        return self.groups[0].setting[SETTING_KEYS.index("dataset")]

    @property
    def health_key(self) -> str | None:
        return self.groups[0].health_key

    @property
    def depths(self) -> np.ndarray:
        return np.array([g.depth for g in self.groups], dtype=float)

    def accuracy(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std over seeds) of test accuracy at each depth."""
        summaries = [g.accuracy for g in self.groups]
        return np.array([s.mean for s in summaries]), np.array([s.std for s in summaries])

    def ratio(self) -> np.ndarray:
        """Layer-1 / output gradient ratio at initialisation (geometric mean) at each depth; 0
        where it underflowed at every seed."""
        return np.array([0.0 if g.ratio_underflow else g.vanishing_ratio_init for g in self.groups])

    def units(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std over seeds) of the dead or saturated share at each depth."""
        if self.health_key is None:
            nan = np.full(len(self.groups), math.nan)
            return nan, nan
        summaries = [g.unit_share(self.health_key) for g in self.groups]
        return np.array([s.mean for s in summaries]), np.array([s.std for s in summaries])


def depth_series(groups: Sequence[Group]) -> list[DepthSeries]:
    """The groups as lines over depth: one per activation and setting of the other axes."""
    keyed: dict[tuple[str, str], list[Group]] = {}
    others: dict[str, dict[str, Any]] = {}
    for group in groups:  # registry order, then shallowest first
        other = {k: v for k, v in axes_of(group.setting).items() if k not in ("depth", "widths")}
        text = json.dumps(other, sort_keys=True, default=str)
        others.setdefault(text, other)
        keyed.setdefault((group.activation.name, text), []).append(group)
    style = {text: i for i, text in enumerate(others)}
    describe = namer(list(others.values()))
    series = []
    for (_, text), members in keyed.items():
        words = describe(others[text])
        first = members[0]
        label = first.activation.label + (f" ({words})" if words else "")
        members = sorted(members, key=lambda g: setting_order(g.setting))
        series.append(
            DepthSeries(label, first.activation, first.color, style[text], tuple(members))
        )
    return series


@dataclass(frozen=True)
class StopRule:
    """Below which mean accuracy an activation counts as not learning, on one data set."""

    dataset: Any
    chance: float
    best: Group
    threshold: float

    def sentence(self, thresholds: Thresholds = THRESHOLDS) -> str:
        how_far = "half" if thresholds.stop_fraction == 0.5 else f"{thresholds.stop_fraction:g}"
        return (
            f"An activation stops learning at the smallest depth (number of hidden layers) whose "
            f"mean test accuracy on {self.dataset} is less than {how_far} way from chance "
            f"({percent2(self.chance)}) to the best mean in this report "
            f"({percent2(self.best.accuracy.mean)}, {self.best.label}): below "
            f"{percent2(self.threshold)}."
        )


def percent2(fraction: float) -> str:
    """0.97235 -> '97.24 %'; missing -> '–'."""
    return f"{100 * fraction:.2f} %" if math.isfinite(fraction) else "–"


def stop_rules(groups: Sequence[Group], thresholds: Thresholds = THRESHOLDS) -> list[StopRule]:
    """Per data set, the accuracy below which a depth counts as not learning."""
    rules = []
    for dataset in dict.fromkeys(g.setting[SETTING_KEYS.index("dataset")] for g in groups):
        scored = [
            g
            for g in groups
            if g.setting[SETTING_KEYS.index("dataset")] == dataset and g.accuracies
        ]
        if not scored:
            continue
        best = max(scored, key=lambda g: g.accuracy.mean)
        chance = chance_level(dataset)
        threshold = chance + thresholds.stop_fraction * (best.accuracy.mean - chance)
        rules.append(StopRule(dataset, chance, best, threshold))
    return rules


def spoken(items: Sequence[Any]) -> str:
    """[2, 5, 10] -> '2, 5 and 10'."""
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def depth_words(depths: Sequence[int]) -> str:
    """[2] -> 'depth 2', [2, 5] -> 'depths 2 and 5'."""
    return f"depth{'s' if len(depths) > 1 else ''} {spoken(depths)}"


def stop_sentence(series: DepthSeries, rule: StopRule) -> str:
    """Where one activation stops learning, or that it trains at every depth tried."""
    depths = [int(d) for d in series.depths]
    means, _ = series.accuracy()
    below = [i for i, m in enumerate(means) if not m >= rule.threshold]  # nan: nothing trained

    def accuracy_at(i: int) -> str:
        if not math.isfinite(means[i]):
            return "every run diverged"
        text = f"mean test accuracy {percent2(means[i])}, below {percent2(rule.threshold)}"
        accuracies = series.groups[i].accuracies
        above = sum(a >= rule.threshold for a in accuracies)
        if above:  # the mean hides seeds that did learn
            best = percent2(max(accuracies))
            text += f" ({above} of {len(accuracies)} seeds above it, the best at {best})"
        return text

    if not below:
        low = int(np.argmin(means))
        return (
            f"{series.label} trains at every depth tried ({spoken(depths)}): its lowest mean "
            f"test accuracy is {percent2(means[low])}, at depth {depths[low]}."
        )
    first = below[0]
    if first == 0:
        sentence = (
            f"{series.label} does not learn even at the shallowest depth tried, {depths[0]}: "
            f"{accuracy_at(0)}"
        )
    else:
        sentence = (
            f"{series.label} stops learning at depth {depths[first]}: {accuracy_at(first)}; "
            f"it trains at {depth_words(depths[:first])}"
        )
    again = [depths[i] for i in range(first + 1, len(depths)) if i not in below]
    if again:
        sentence += f"; yet it trains again at {depth_words(again)}"
    return sentence + "."


def depth_findings(
    groups: Sequence[Group], thresholds: Thresholds = THRESHOLDS
) -> tuple[list[str], list[str]]:
    """(the stop rule per data set, one stop-depth sentence per line of the depth figures);
    empty unless the groups span more than one depth."""
    if len({g.depth for g in groups}) < 2:
        return [], []
    rules = {rule.dataset: rule for rule in stop_rules(groups, thresholds)}
    sentences = [
        stop_sentence(series, rules[series.dataset])
        for series in depth_series(groups)
        if series.dataset in rules
    ]
    return [rule.sentence(thresholds) for rule in rules.values()], sentences


def attenuation_rows(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """Per group: the slope bound (max f')^L next to the measured ratio at initialisation."""
    rows = []
    for group in groups:
        depth = len(group.hidden)
        bound = group.activation.derivative_bound**depth
        measured = group.vanishing_ratio_init
        rows.append(
            {
                "label": group.label,
                "max_slope": group.activation.derivative_bound,
                "depth": depth,
                "bound": bound,
                "measured": measured,
                "missing": "0 (underflow)" if group.ratio_underflow else "–",
            }
        )
    return rows


class FigureSpec(NamedTuple):
    """A figure of the page: its anchor, the question it answers, its caption, how to draw it
    from groups, and for some a table of its numbers drawn under it."""

    anchor: str
    question: str
    caption: str
    draw: Callable[[Sequence[Group]], Any]
    table: Callable[[Sequence[Group]], list[dict[str, Any]]] | None = None


def layer_specs() -> list[FigureSpec]:
    """(anchor, question, caption, draw) of the figures drawn per setting, in reading order."""
    return [
        FigureSpec(
            "gradient-flow",
            "How much gradient reaches each layer?",
            "L2 norm of each layer's weight gradient on the fixed probe batch, at step 0 (left) "
            "and at the last probe (right), log scale; geometric mean over seeds, band from the "
            "smallest to the largest seed. A line falling towards layer 1 is the vanishing "
            "gradient; the legend gives layer 1 / output at initialisation.",
            plots.gradient_flow,
        ),
        FigureSpec(
            "heatmaps",
            "Where and when is the gradient small during training?",
            "Weight-gradient norm by layer (rows, input side at the bottom) and training step "
            "(columns), one shared log colour scale for every activation: darker means less "
            "gradient. Grey: zero or not recorded.",
            plots.gradient_heatmaps,
        ),
        FigureSpec(
            "learning",
            "Does the network learn, and how fast?",
            "Test accuracy and loss after each epoch; the band is mean ± standard deviation over "
            "seeds (absent with one seed).",
            plots.learning_curves,
        ),
        FigureSpec(
            "units",
            "Do units saturate or die?",
            "Sigmoid, tanh and the smooth activations: share of (sample, unit) pairs whose slope "
            f"is below {SATURATED} of its maximum. Rectifiers: share of units with zero output "
            "on every image; lines on the probe batch, dots on the whole training set at each "
            "epoch end.",
            plots.unit_health,
        ),
        FigureSpec(
            "prelu",
            "Which negative slope does PReLU learn?",
            "Learned slope a of max(z, a z) per layer over training (mean over seeds); "
            "0 would be ReLU, 1 a linear layer.",
            plots.prelu_slopes,
        ),
    ]


SHAPES_SPEC = FigureSpec(
    "activations",
    "What does each activation do to the gradient?",
    "Each activation f(z) and its slope f'(z) over [-6, 6] (PReLU at its initial slope "
    "0.25). Back-propagation multiplies the gradient by f'(z) once per layer; sigmoid's "
    "slope never exceeds 1/4 (dotted line).",
    plots.activation_shapes,
)
ATTENUATION_SPEC = FigureSpec(
    "attenuation",
    "Does the slope bound predict the measured attenuation?",
    "Measured layer-1 / output gradient ratio at initialisation next to (max f')^L, the "
    "most that L hidden layers' slopes let through. The weights also scale the gradient, "
    "so the bound sets the order of magnitude, not the exact value.",
    plots.attenuation,
    table=attenuation_rows,
)


def draw(
    spec: FigureSpec,
    groups: Sequence[Group],
    suffix: str = "",
    note: str = "",
    section: tuple[str, str] = ("", ""),
) -> list[FigureBlock]:
    """The spec's figure as a one-element list of FigureBlock, or [] when it has nothing to show;
    `suffix` names the setting in the question, `note` ends the caption."""
    anchor, question, caption, draw_figure, table = spec
    figure = draw_figure(groups)
    if figure is None:
        return []
    rows = tuple(table(groups)) if table is not None else ()
    question += f" ({suffix})" if suffix else ""
    anchor += f"-{suffix.replace(' ', '-').replace(',', '')}" if suffix else ""
    return [FigureBlock(anchor, question, caption + note, plots.png(figure), rows, section)]


def depth_figures(
    groups: Sequence[Group], thresholds: Thresholds = THRESHOLDS
) -> list[FigureBlock]:
    """Accuracy, gradient ratio and unit health against depth, one line per activation and
    setting of the other axes; [] unless the groups span more than one depth."""
    if len({g.depth for g in groups}) < 2:
        return []
    series = depth_series(groups)
    rules = stop_rules(groups, thresholds)
    references = [(rule.chance, f"chance, {percent2(rule.chance)}", ":") for rule in rules]
    references += [
        (rule.threshold, f"stops learning below {percent2(rule.threshold)}", "--") for rule in rules
    ]
    lines = "one line per activation" + (
        " and setting of the other axes" if len({s.style for s in series}) > 1 else ""
    )
    specs = [
        FigureSpec(
            "depth-accuracy",
            "At which depth does each activation stop learning?",
            f"Test accuracy after training against depth (the number of hidden layers), {lines}: "
            "mean over seeds, the band mean ± standard deviation (absent with one seed). Dotted: "
            "chance; dashed: the stop threshold (see Diagnosis). Right: the test error on a log "
            "scale, which tells apart the activations that still learn.",
            lambda _: plots.accuracy_by_depth(series, references),
        ),
        FigureSpec(
            "depth-ratio",
            "How much gradient reaches layer 1 as the network gets deeper?",
            f"Layer 1 / output weight-gradient norm at initialisation (step 0) against depth, "
            f"{lines}, geometric mean over seeds, log scale. Below "
            f"{number(thresholds.vanishing_ratio)} (grey dashed line) the gradient vanishes; "
            "at 1 (grey solid line) layer 1 gets as much as the output layer. "
            "Dotted, for activations whose slope stays below 1: (max f')^L, the most that L "
            "hidden layers' slopes let through.",
            lambda _: plots.ratio_by_depth(series, thresholds.vanishing_ratio),
        ),
        FigureSpec(
            "depth-units",
            "Do more units die or saturate as the network gets deeper?",
            "After training, against depth: rectifiers, the share of all hidden units with zero "
            "output on every training image (last epoch end); the other families, the share of "
            f"(sample, unit) pairs in all hidden layers with slope below {SATURATED} of the "
            "maximum (last probe). Mean over seeds, band ± standard deviation.",
            lambda _: plots.units_by_depth(series),
        ),
    ]
    return [block for spec in specs for block in draw(spec, groups)]


def draw_figures(groups: Sequence[Group], thresholds: Thresholds = THRESHOLDS) -> list[FigureBlock]:
    """The page's figures, in reading order; some only when their runs exist.

    One setting (a compare): every figure over all groups. Several (a sweep): the depth figures
    over all groups, then the per-layer figures for the shallowest and the deepest setting only,
    so that the page does not grow with the grid.
    """
    settings = by_setting(groups)
    if len(settings) <= 1:
        specs = [*layer_specs(), SHAPES_SPEC, ATTENUATION_SPEC]
        return [block for spec in specs for block in draw(spec, groups)]
    blocks = depth_figures(groups, thresholds)
    shapes: dict[str, Group] = {}  # one per activation: its shape does not depend on the setting
    for group in groups:
        shapes.setdefault(
            group.activation.name, dataclasses.replace(group, label=group.activation.label)
        )
    blocks += draw(SHAPES_SPEC, list(shapes.values()))
    chosen = representative_settings(list(settings))
    describe = namer([axes_of(s) for s in settings])
    names = [describe(axes_of(s)) for s in chosen]
    deeper = len(chosen) == 2 and len(chosen[0][HIDDEN]) < len(chosen[1][HIDDEN])
    roles = ["the shallowest", "the deepest"] if deeper else ["the first", "the last"]
    for setting, name, role in zip(chosen, names, roles, strict=False):
        section = (
            f"Layer by layer at {name}",
            f"The per-layer figures are drawn for {spoken(names)} ({' and '.join(roles)} "
            f"setting), not for each of the {len(settings)} settings; the summary table and the "
            "figures above cover them all.",
        )
        note = f" {name[:1].upper()}{name[1:]} only ({role} setting)."
        members = [dataclasses.replace(g, label=g.activation.label) for g in settings[setting]]
        for spec in [*layer_specs(), ATTENUATION_SPEC]:
            blocks += draw(spec, members, name, note, section)
    return blocks


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
    groups, group_notes = make_groups(runs)
    notes.extend(group_notes)
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


SUMMARY_HEADER = (compare.TABLE_HEADER[0], "runs", *compare.TABLE_HEADER[1:])


def fixed(value: float, digits: int) -> str:
    """A table number, '–' when missing."""
    return f"{value:.{digits}f}" if math.isfinite(value) else "–"


def summary_cells(group: Group, row: dict[str, Any]) -> list[str]:
    """One table row, formatted as compare.format_table formats it."""
    rectifier = group.activation.family == "rectifier"
    underflow = group.ratio_underflow
    accuracy = fixed(100 * row["test_accuracy_mean"], 2)
    if row["runs"] - row["diverged"] > 1:
        accuracy += f" ± {100 * row['test_accuracy_std']:.2f}"
    if row["diverged"]:
        accuracy += f" ({row['diverged']} diverged)"
    ratio = row["vanishing_ratio_init"]
    return [
        group.label,
        str(row["runs"]),
        accuracy,
        fixed(row["test_loss_mean"], 4),
        fixed(row["seconds_per_epoch"], 1),
        f"{ratio:.2e}" if math.isfinite(ratio) else ("0 (underflow)" if underflow else "–"),
        # Dead units are the rectifiers' failure, saturation the others'.
        fixed(row["dead_percent"], 1) if rectifier else "-",
        "-" if rectifier else fixed(row["saturated_percent"], 1),
    ]


def run_cells(run: Run) -> list[str]:
    """One line of the run list."""
    config = run.config
    epochs = len(run.rows("epoch"))
    if run.result is None:
        status = f"unfinished ({epochs} of {config.get('epochs', '?')} epochs recorded)"
        accuracy = "–"
    else:
        status = run.status
        value = run.result.get("test_accuracy")
        accuracy = fixed(100 * value, 2) if value is not None else "–"
    return [
        str(run.path),
        ACTIVATIONS[config["activation"]].label,
        str(config.get("seed", "?")),
        status,
        accuracy,
        str(run.result.get("device", "?") if run.result else "–"),
    ]


RUN_HEADER = ("directory", "activation", "seed", "status", "test acc (%)", "device")
GAP_HEADER = ("setting", "better", "worse", "gap (points)", "test", "seeds", "p")


def gap_cells(gap: Gap) -> list[str]:
    """One row of the table of gaps between activations at one setting."""
    return [
        gap.better.setting_label or "–",
        gap.better.activation.label,
        gap.worse.activation.label,
        f"{100 * gap.difference:.2f}",
        gap.test_name,
        gap.seeds.removesuffix(" seeds"),
        p_text(gap.p).removeprefix("p = ").removeprefix("p ") if math.isfinite(gap.p) else "–",
    ]


def all_gap_cells(gap: Gap) -> list[str]:
    """A gap's row with its verdict."""
    judged = gap.test and math.isfinite(gap.p)
    return [*gap_cells(gap), ("yes" if gap.significant else "no") if judged else "cannot judge"]


EXPLANATION = (
    "Back-propagation applies the chain rule: the gradient that reaches layer 1 is the output "
    "layer's gradient multiplied, once per hidden layer, by that layer's weights and by the slope "
    "f'(z) of its activation. With L hidden layers the activations contribute a product of L "
    "slopes, so whatever each slope is, it is raised to the power L.",
    "Sigmoid's slope σ(z)(1 − σ(z)) is at most 1/4 (at z = 0) and almost 0 once |z| > 4, so L "
    "sigmoid layers multiply the gradient by at most (1/4)^L (1/256 for L = 4) unless the weights "
    "make up for it: the first layers receive the least gradient and learn the slowest. Tanh "
    "reaches slope 1 only at z = 0 and saturates too.",
    "ReLU's slope is exactly 1 wherever a unit is active (z > 0): an active path passes the "
    "gradient on unchanged, so depth costs nothing. For z < 0 its slope is 0, and a unit whose "
    "input is negative for every example gets no gradient ever again: it is dead.",
    "Leaky ReLU keeps a small fixed slope (0.01 by default) for z < 0, so no unit is ever cut off "
    "completely; PReLU learns that slope, per layer or per unit, along with the weights.",
    "A linear activation has slope 1 everywhere, so nothing vanishes, but a stack of linear "
    "layers is a single linear map: the network can only draw straight boundaries between "
    "classes, and depth buys nothing. Depth needs a nonlinearity; the point is one whose slope "
    "stays near 1 where the signal is.",
)


def definitions() -> list[tuple[str, str]]:
    """(name, meaning) of every probe metric, quoted from the probes module's docstring."""
    doc = probes.__doc__ or ""
    if "Definitions" not in doc:
        return []
    items: list[list[str]] = []
    for line in doc.split("Definitions", 1)[1].splitlines()[1:]:
        text = line.strip()
        if text.startswith("- "):
            items.append([text[2:]])
        elif text and items:
            items[-1].append(text)
    pairs = []
    for parts in items:
        name, _, meaning = " ".join(parts).partition(":")
        pairs.append((name.strip().strip("`"), meaning.strip().replace("`", "")))
    return pairs


def esc(value: Any) -> str:
    """Any text from records, paths or labels, safe inside HTML text and attributes."""
    return html.escape(str(value), quote=True)


STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1040px; margin: 0 auto; padding: 1.5em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
.meta { color: #555; }
.note { background: #fff6dd; border-left: 4px solid #e0b000; padding: 0.3em 0.8em; }
table { border-collapse: collapse; margin: 0.8em 0; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 0.3em 0.7em; text-align: right; }
th { background: #f4f4f4; }
th:first-child, td:first-child { text-align: left; }
table.runs td:first-child { font-family: ui-monospace, monospace; font-size: 0.9em; }
table.gaps td:nth-child(2), table.gaps td:nth-child(3) { text-align: left; }
.verdict { font-weight: 600; }
figure { margin: 1.5em 0; }
figure h3 { margin-bottom: 0.3em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.93em; }
code { background: #f4f4f4; padding: 0 0.25em; }
details { margin: 0.25em 0; }
summary { cursor: pointer; }
details ul { margin-top: 0.2em; }
"""


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], css: str = "") -> str:
    """An HTML table; every cell escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>\n" for row in rows
    )
    attribute = f' class="{css}"' if css else ""
    return f"<table{attribute}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>"


def title(report: Report) -> str:
    """'Vanishing gradients: Sigmoid, ReLU on mnist', with the depths when they vary."""
    labels = ", ".join(dict.fromkeys(g.activation.label for g in report.groups))
    datasets = sorted({str(r.config.get("dataset", "?")) for r in report.runs})
    depths = sorted({g.depth for g in report.groups})
    span = f", {depths[0]} to {depths[-1]} hidden layers" if len(depths) > 1 else ""
    return f"Vanishing gradients: {labels or 'no finished runs'} on {', '.join(datasets)}{span}"


def setup_line(report: Report) -> str:
    """The training setup: the first run's config, or each axis's values for a sweep."""
    if not report.runs:
        return "No readable runs."
    config = report.runs[0].config
    seeds = sorted({r.config.get("seed") for r in report.runs if r.result is not None}, key=str)
    probes_text = (
        f"seeds {', '.join(map(str, seeds)) or '–'}; probes every {config.get('probe_every')} "
        f"steps on {config.get('probe_size')} training images."
    )
    if report.settings <= 1:
        widths = "-".join(str(w) for w in [784, *config.get("hidden", []), 10])
        return (
            f"MLP {widths}, init {config.get('init')}, {config.get('optimizer')} lr "
            f"{config.get('lr')}, batch {config.get('batch_size')}, epochs "
            f"{config.get('epochs')}, {probes_text}"
        )
    settings = sorted({g.setting for g in report.groups}, key=setting_order)

    def values(key: str) -> str:
        column = SETTING_KEYS.index(key)
        return "/".join(dict.fromkeys(str(s[column]) for s in settings))

    hiddens = list(dict.fromkeys(s[HIDDEN] for s in settings))
    widths = {w for hidden in hiddens for w in hidden}
    if len(widths) == 1 and all(len(set(h)) == 1 for h in hiddens):
        depths = ", ".join(str(len(h)) for h in hiddens)
        shape = f"MLPs 784-{widths.pop()}×L-10 with L = {depths} hidden layers"
    else:
        shape = "MLPs " + ", ".join("-".join(map(str, [784, *h, 10])) for h in hiddens)
    return (
        f"{shape}; init {values('init')}, {values('optimizer')} lr {values('lr')}, batch "
        f"{values('batch_size')}, epochs {values('epochs')}; {probes_text}"
    )


def sources(report: Report) -> list[str]:
    """The directories given, or for many (a compare passes each run) their common parent."""
    if len(report.sources) <= 3:
        return report.sources
    try:
        parent = os.path.commonpath(report.sources)
    except ValueError:  # relative and absolute mixed
        return report.sources
    return [f"{len(report.sources)} directories under {parent or '.'}"]


def attenuation_cells(row: dict[str, Any]) -> list[str]:
    """One row of the slope-bound table."""
    measured, bound = row["measured"], row["bound"]
    return [
        row["label"],
        f"{row['max_slope']:.3g}",
        str(row["depth"]),
        f"({row['max_slope']:.3g})^{row['depth']} = {number(bound)}",
        number(measured) if math.isfinite(measured) else row["missing"],
    ]


ATTENUATION_HEADER = ("activation", "max slope", "L", "slope bound (max f')^L", "measured at init")


def render_html(report: Report) -> str:
    """The whole report as one self-contained HTML page."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title(report))}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{esc(title(report))}</h1>",
        f'<p class="meta">{esc(setup_line(report))}<br>Records read from '
        + ", ".join(f"<code>{esc(s)}</code>" for s in sources(report))
        + ". Regenerate with <code>vanishing report DIR</code>; nothing is retrained.</p>",
    ]
    parts += [f'<p class="note">{esc(note)}</p>' for note in report.notes]
    parts.append("<h2>Summary</h2>")
    if report.groups:
        cells = [summary_cells(g, r) for g, r in zip(report.groups, report.rows, strict=True)]
        parts.append(html_table(SUMMARY_HEADER, cells, "summary"))
        parts.append(
            '<p class="meta">Mean ± standard deviation over seeds. Grad ratio: layer 1 / output '
            "layer weight-gradient norm at step 0 (geometric mean). Dead %: hidden units with "
            "zero output on every training image after the last epoch (rectifiers). Saturated %: "
            f"(sample, unit) pairs with slope below {SATURATED} of the maximum at the last "
            "probe.</p>"
        )
    else:
        parts.append("<p>No run has finished yet: nothing to summarise.</p>")
    parts.append("<h2>Diagnosis</h2>")
    if report.stops:
        parts.append("<h3>Where does each activation stop learning?</h3>")
        parts += [f"<p>{esc(rule)}</p>" for rule in report.stop_rules]
        parts.append("<ul>" + "".join(f'<li class="verdict">{esc(s)}</li>' for s in report.stops))
        parts.append("</ul>")
    if report.verdicts:
        parts.append("<h3>Is the accuracy gap real?</h3><ul>")
        parts += [f'<li class="verdict">{esc(v)}</li>' for v in report.verdicts]
        parts.append("</ul>")
    if report.gaps:
        significant = [gap_cells(g) for g in report.gaps if g.significant]
        if significant:
            parts.append(html_table(GAP_HEADER, significant, "gaps"))
        parts.append(
            f"<details><summary>All {len(report.gaps)} pairs, significant or not</summary>"
            + html_table(GAP_HEADER + ("significant",), [all_gap_cells(g) for g in report.gaps])
            + "</details>"
        )
    sweep = report.settings > 1
    if sweep:
        parts.append(
            "<h3>Each activation at each setting</h3>"
            '<p class="meta">Click a line for its findings.</p>'
        )
    for group, sentences in zip(report.groups, report.diagnoses, strict=True):
        items = "".join(f"<li>{esc(s)}</li>" for s in sentences)
        if sweep:  # dozens of groups: one line each, opened on demand
            first = sentences[0] if sentences else ""
            parts.append(
                f"<details><summary><b>{esc(group.label)}</b>: {esc(first)}</summary>"
                f"<ul>{items}</ul></details>"
            )
        else:
            parts.append(f"<h3>{esc(group.label)}</h3><ul>")
            parts += [f"<li>{esc(s)}</li>" for s in sentences]
            parts.append("</ul>")
    parts.append("<h2>Why gradients vanish</h2>")
    parts += [f"<p>{esc(p)}</p>" for p in EXPLANATION]
    if report.figures:
        parts.append("<h2>Figures</h2>")
    section = ("", "")
    for block in report.figures:
        if block.section != section and block.section[0]:
            section = block.section
            parts.append(f"<h2>{esc(section[0])}</h2>")
            parts.append(f'<p class="meta">{esc(section[1])}</p>')
        data = base64.b64encode(block.image).decode("ascii")
        parts.append(
            f'<figure id="{esc(block.anchor)}"><h3>{esc(block.question)}</h3>'
            f'<img src="data:image/png;base64,{data}" alt="{esc(block.question)}">'
            f"<figcaption>{esc(block.caption)}</figcaption></figure>"
        )
        if block.attenuation:
            cells = [attenuation_cells(row) for row in block.attenuation]
            parts.append(html_table(ATTENUATION_HEADER, cells, "attenuation"))
    pairs = definitions()
    if pairs:
        parts.append("<h2>What the numbers mean</h2><ul>")
        parts += [f"<li><code>{esc(n)}</code>: {esc(m)}</li>" for n, m in pairs]
        parts.append("</ul>")
    parts.append("<h2>Runs</h2>")
    runs = html_table(RUN_HEADER, [run_cells(r) for r in report.runs], "runs")
    if report.settings > 1:  # a sweep's dozens of runs: on demand
        unfinished = sum(r.result is None for r in report.runs)
        waiting = f", {unfinished} unfinished" if unfinished else ""
        runs = f"<details><summary>All {len(report.runs)} runs{waiting}</summary>{runs}</details>"
    parts.append(runs)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def md(value: Any) -> str:
    """Record text for Markdown: HTML-escaped (Markdown passes raw HTML) and pipes escaped."""
    return html.escape(str(value), quote=False).replace("|", "\\|")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown pipe table."""
    lines = ["| " + " | ".join(md(h) for h in header) + " |"]
    lines.append("| " + " | ".join("---" for _ in header) + " |")
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(report: Report, html_name: str = "report.html") -> str:
    """The table, diagnosis and explanation in Markdown; the figures are in the HTML page."""
    shown = ", ".join(sources(report))
    lines = [f"# {md(title(report))}", "", md(f"{setup_line(report)} Records read from {shown}.")]
    lines.append("")
    lines += [f"> {md(note)}\n" for note in report.notes]
    lines += ["## Summary", ""]
    if report.groups:
        cells = [summary_cells(g, r) for g, r in zip(report.groups, report.rows, strict=True)]
        lines += md_table(SUMMARY_HEADER, cells)
    else:
        lines.append("No run has finished yet: nothing to summarise.")
    lines += ["", "## Diagnosis", ""]
    if report.stops:
        lines += ["### Where does each activation stop learning?", ""]
        lines += [md(rule) for rule in report.stop_rules] + [""]
        lines += [f"- **{md(s)}**" for s in report.stops] + [""]
    if report.verdicts:
        lines += ["### Is the accuracy gap real?", ""]
        lines += [f"- **{md(v)}**" for v in report.verdicts]
        lines.append("")
    significant = [gap_cells(g) for g in report.gaps if g.significant]
    if significant:
        lines += md_table(GAP_HEADER, significant) + [""]
    for group, sentences in zip(report.groups, report.diagnoses, strict=True):
        lines += [f"### {md(group.label)}", ""] + [f"- {md(s)}" for s in sentences] + [""]
    lines += ["## Why gradients vanish", ""]
    for paragraph in EXPLANATION:
        lines += [paragraph, ""]  # our own text: no record strings to escape
    if report.groups:
        lines += ["## Slope bound and measured attenuation", ""]
        lines += md_table(ATTENUATION_HEADER, [attenuation_cells(r) for r in report.attenuation])
        lines.append("")
    if report.figures:
        lines += ["## Figures", "", f"Figures are omitted here; see {md(html_name)}:", ""]
        lines += [f"- {md(block.question)}" for block in report.figures]
        lines.append("")
    lines += ["## Runs", ""] + md_table(RUN_HEADER, [run_cells(r) for r in report.runs])
    return "\n".join(lines) + "\n"


def write_report(
    paths: Sequence[Path | str], out: Path | str | None = None, thresholds: Thresholds = THRESHOLDS
) -> tuple[Path, Path]:
    """Write report.html (default: in the first directory given) and report.md beside it."""
    if not paths:
        raise UsageError("give at least one run or sweep directory")
    report = build_report(paths, thresholds)
    html_path = Path(out) if out is not None else Path(paths[0]) / "report.html"
    md_path = html_path.with_suffix(".md")
    try:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(render_html(report), encoding="utf-8")
        md_path.write_text(render_markdown(report, html_path.name), encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot write the report to {html_path}: {e.strerror or e}") from None
    return html_path, md_path
