"""The report: one offline HTML page (and a Markdown twin) built from run records alone.

It reads config.json, metrics.jsonl and result.json of finished runs, never trains, so it can be
redrawn at any time. Computing (groups, summary rows, diagnosis, significance) lives here; drawing
lives in `plots`.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vanishing import compare, plots, probes, records
from vanishing.activations import ACTIVATIONS, SATURATION_FRACTION, Activation
from vanishing.errors import UsageError
from vanishing.plots import number
from vanishing.train import RunResult


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
    # Welch's t-test on test accuracy, best activation against each other: the usual 5 % level.
    p_value: float = 0.05


THRESHOLDS = Thresholds()
SATURATED = f"{100 * SATURATION_FRACTION:g} %"  # the probes' saturation rule, as the page says it

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
    """The finished runs of one activation and architecture, over seeds."""

    activation: Activation
    runs: tuple[Run, ...]
    label: str

    @property
    def ok(self) -> tuple[Run, ...]:
        return tuple(r for r in self.runs if r.status == "ok")

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(self.runs[0].config["hidden"])

    @property
    def accuracies(self) -> list[float]:
        return [r.result["test_accuracy"] for r in self.ok if r.result["test_accuracy"] is not None]

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


def make_groups(runs: Sequence[Run]) -> tuple[list[Group], list[str]]:
    """Finished runs grouped by activation and widths, in registry order; notes on mixed configs."""
    keyed: dict[tuple[str, tuple[int, ...]], list[Run]] = {}
    for run in runs:
        if run.result is not None:
            key = (run.config["activation"], tuple(run.config["hidden"]))
            keyed.setdefault(key, []).append(run)
    order = list(ACTIVATIONS)
    keys = sorted(keyed, key=lambda k: (order.index(k[0]), k[1]))
    names = [k[0] for k in keys]
    groups, notes = [], []
    for name, hidden in keys:
        label = ACTIVATIONS[name].label
        if names.count(name) > 1:
            label += " " + "-".join(map(str, hidden))
        group_runs = sorted(keyed[(name, hidden)], key=lambda r: (r.config.get("seed", 0), r.path))
        groups.append(Group(ACTIVATIONS[name], tuple(group_runs), label))
        ignored = {"seed", "device"}
        differ = sorted(
            k
            for k in {k for r in group_runs for k in r.config} - ignored
            if len({json.dumps(r.config.get(k)) for r in group_runs}) > 1
        )
        if differ:
            notes.append(f"the {label} runs differ in {', '.join(differ)}: compare with care")
    return groups, notes


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


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (nan when neither sample varies)."""
    from scipy import stats  # imported here: scipy is slow to load and only this needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero variance: p is nan, handled below
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def significance(groups: Sequence[Group], thresholds: Thresholds = THRESHOLDS) -> list[str]:
    """Is the best activation's accuracy lead over each other one larger than the seed spread?"""
    scored = [g for g in groups if g.accuracies]
    if len(scored) < 2:
        return []
    best = max(scored, key=lambda g: compare.mean_std(g.accuracies)[0])
    best_mean = compare.mean_std(best.accuracies)[0]
    verdicts = []
    for other in scored:
        if other is best:
            continue
        a, b = best.accuracies, other.accuracies
        gap = 100 * (best_mean - compare.mean_std(b)[0])
        prefix = f"The accuracy gap between {best.label} and {other.label} ({gap:.2f} points)"
        if min(len(a), len(b)) < 2:
            verdicts.append(
                f"{prefix} cannot be judged: one seed: no spread to compare with, "
                "run --seeds 0,1,2."
            )
            continue
        p = welch_p(a, b)
        seeds = f"{len(a)} seeds" if len(a) == len(b) else f"{len(a)} and {len(b)} seeds"
        if math.isnan(p):
            verdicts.append(f"{prefix} cannot be judged: every seed gave the same accuracy.")
        elif p < thresholds.p_value:
            verdicts.append(
                f"{prefix} is larger than the seed spread: significant at {seeds} "
                f"(Welch's t-test, p = {p:.2g})."
            )
        else:
            verdicts.append(
                f"{prefix} is within the seed spread: not significant at {seeds} "
                f"(Welch's t-test, p = {p:.2g})."
            )
    return verdicts


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
            }
        )
    return rows


def draw_figures(groups: Sequence[Group]) -> list[FigureBlock]:
    """The page's figures, in reading order; some only when their runs exist."""
    specs = [
        (
            "gradient-flow",
            "How much gradient reaches each layer?",
            "L2 norm of each layer's weight gradient on the fixed probe batch, at step 0 (left) "
            "and at the last probe (right), log scale; geometric mean over seeds, band from the "
            "smallest to the largest seed. A line falling towards layer 1 is the vanishing "
            "gradient; the legend gives layer 1 / output at initialisation.",
            plots.gradient_flow,
        ),
        (
            "heatmaps",
            "Where and when is the gradient small during training?",
            "Weight-gradient norm by layer (rows, input side at the bottom) and training step "
            "(columns), one shared log colour scale for every activation: darker means less "
            "gradient. Grey: zero or not recorded.",
            plots.gradient_heatmaps,
        ),
        (
            "learning",
            "Does the network learn, and how fast?",
            "Test accuracy and loss after each epoch; the band is mean ± standard deviation over "
            "seeds (absent with one seed).",
            plots.learning_curves,
        ),
        (
            "units",
            "Do units saturate or die?",
            "Sigmoid, tanh and the smooth activations: share of (sample, unit) pairs whose slope "
            f"is below {SATURATED} of its maximum. Rectifiers: share of units with zero output "
            "on every image; lines on the probe batch, dots on the whole training set at each "
            "epoch end.",
            plots.unit_health,
        ),
        (
            "prelu",
            "Which negative slope does PReLU learn?",
            "Learned slope a of max(z, a z) per layer over training (mean over seeds); "
            "0 would be ReLU, 1 a linear layer.",
            plots.prelu_slopes,
        ),
        (
            "activations",
            "What does each activation do to the gradient?",
            "Each activation f(z) and its slope f'(z) over [-6, 6] (PReLU at its initial slope "
            "0.25). Back-propagation multiplies the gradient by f'(z) once per layer; sigmoid's "
            "slope never exceeds 1/4 (dotted line).",
            plots.activation_shapes,
        ),
        (
            "attenuation",
            "Does the slope bound predict the measured attenuation?",
            "Measured layer-1 / output gradient ratio at initialisation next to (max f')^L, the "
            "most that L hidden layers' slopes let through. The weights also scale the gradient, "
            "so the bound sets the order of magnitude, not the exact value.",
            plots.attenuation,
        ),
    ]
    blocks = []
    for anchor, question, caption, draw in specs:
        figure = draw(groups)
        if figure is not None:
            blocks.append(FigureBlock(anchor, question, caption, plots.png(figure)))
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
    return Report(
        sources=[str(p) for p in paths],
        runs=runs,
        groups=groups,
        notes=notes,
        rows=[summary_row(g) for g in groups],
        diagnoses=[diagnose(g, thresholds) for g in groups],
        verdicts=significance(groups, thresholds),
        attenuation=attenuation_rows(groups),
        figures=draw_figures(groups) if figures and groups else [],
    )


SUMMARY_HEADER = (
    "activation",
    "runs",
    "test acc (%)",
    "test loss",
    "s/epoch",
    "grad ratio L1/Lout at init",
    "dead %",
    "saturated %",
)


def fixed(value: float, digits: int) -> str:
    """A table number, '–' when missing."""
    return f"{value:.{digits}f}" if math.isfinite(value) else "–"


def summary_cells(group: Group, row: dict[str, Any]) -> list[str]:
    """One table row, formatted as compare.format_table formats it."""
    rectifier = group.activation.family == "rectifier"
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
        f"{ratio:.2e}" if math.isfinite(ratio) else "–",
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
.verdict { font-weight: 600; }
figure { margin: 1.5em 0; }
figure h3 { margin-bottom: 0.3em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.93em; }
code { background: #f4f4f4; padding: 0 0.25em; }
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
    """'Vanishing gradients: Sigmoid, ReLU on mnist'."""
    labels = ", ".join(g.label for g in report.groups) or "no finished runs"
    datasets = sorted({str(r.config.get("dataset", "?")) for r in report.runs})
    return f"Vanishing gradients: {labels} on {', '.join(datasets)}"


def setup_line(report: Report) -> str:
    """The shared training setup, from the first run's config."""
    if not report.runs:
        return "No readable runs."
    config = report.runs[0].config
    widths = "-".join(str(w) for w in [784, *config.get("hidden", []), 10])
    seeds = sorted({r.config.get("seed") for r in report.runs if r.result is not None}, key=str)
    return (
        f"MLP {widths}, init {config.get('init')}, {config.get('optimizer')} lr "
        f"{config.get('lr')}, batch {config.get('batch_size')}, epochs {config.get('epochs')}, "
        f"seeds {', '.join(map(str, seeds)) or '–'}; probes every {config.get('probe_every')} "
        f"steps on {config.get('probe_size')} training images."
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
        number(measured) if math.isfinite(measured) else "–",
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
    if report.verdicts:
        parts.append("<h3>Is the accuracy gap real?</h3><ul>")
        parts += [f'<li class="verdict">{esc(v)}</li>' for v in report.verdicts]
        parts.append("</ul>")
    for group, sentences in zip(report.groups, report.diagnoses, strict=True):
        parts.append(f"<h3>{esc(group.label)}</h3><ul>")
        parts += [f"<li>{esc(s)}</li>" for s in sentences]
        parts.append("</ul>")
    parts.append("<h2>Why gradients vanish</h2>")
    parts += [f"<p>{esc(p)}</p>" for p in EXPLANATION]
    if report.figures:
        parts.append("<h2>Figures</h2>")
    for block in report.figures:
        data = base64.b64encode(block.image).decode("ascii")
        parts.append(
            f'<figure id="{esc(block.anchor)}"><h3>{esc(block.question)}</h3>'
            f'<img src="data:image/png;base64,{data}" alt="{esc(block.question)}">'
            f"<figcaption>{esc(block.caption)}</figcaption></figure>"
        )
        if block.anchor == "attenuation":
            cells = [attenuation_cells(row) for row in report.attenuation]
            parts.append(html_table(ATTENUATION_HEADER, cells, "attenuation"))
    pairs = definitions()
    if pairs:
        parts.append("<h2>What the numbers mean</h2><ul>")
        parts += [f"<li><code>{esc(n)}</code>: {esc(m)}</li>" for n, m in pairs]
        parts.append("</ul>")
    parts.append("<h2>Runs</h2>")
    parts.append(html_table(RUN_HEADER, [run_cells(r) for r in report.runs], "runs"))
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
    if report.verdicts:
        lines += ["### Is the accuracy gap real?", ""]
        lines += [f"- **{md(v)}**" for v in report.verdicts]
        lines.append("")
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
