"""Verdicts on one group's gradient flow, read from every signal the probes record: the
back-propagated signal (dLoss/dh) across the hidden layers, the activations' scale (their std)
across the same layers, the size of the gradient norms, divergence and the final test loss, with
saturation and dead units; each verdict names the layers and the factor and the cure that fits
what the run already uses. Every threshold lives on `Thresholds`.

Why not the weight-gradient ratio alone: a weight gradient is the signal times the layer's input,
so a signal that vanishes towards the input and activations that shrink with depth cancel in it
(a deep ReLU net with Xavier init looks even while its signal falls 20,000-fold), and activations
that grow (a residual stream) make the output layer's weight gradient large while the signal
reaching layer 1 does not shrink at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vanishing import stats
from vanishing.data.datasets import DATASETS
from vanishing.model.activations import ACTIVATIONS, SATURATION_FRACTION
from vanishing.reporting.formats import number, percent, percent2
from vanishing.reporting.loading import load_runs
from vanishing.reporting.results import Group, RunRecords, make_groups, numbers
from vanishing.settings.config import completed
from vanishing.settings.naming import NUMBERED, LayerNames, watched


@dataclass(frozen=True)
class Thresholds:
    """Every threshold the diagnosis uses, in one place."""

    # The back-propagated signal dLoss/dh at layer 1 over the last hidden layer's, at step 0.
    # Under 1 %: layer 1's weight gradient (signal times its input) is 100x smaller than it would
    # be at an even signal, and so are its SGD steps, two orders of magnitude: vanishing.
    signal_vanishing: float = 1e-2
    # Under 10 %: attenuated; visible, but Adam's per-weight step scaling largely hides it.
    signal_attenuated: float = 0.1
    # The mirror images: over 10x growing, over 100x exploding, a step 100x too large at layer 1.
    signal_growing: float = 10.0
    signal_exploding: float = 100.0
    # The activations' std at the last hidden layer over layer 1's, at step 0. Under 1 %: the
    # last layer's outputs vary 100x less than the first's; what reaches the output layer hardly
    # depends on the input (forward collapse). Over 100x: forward blow-up, logits so large that
    # the softmax saturates and the loss is huge.
    scale_collapse: float = 1e-2
    scale_blowup: float = 100.0
    # A weight gradient of norm 1000 (the loss is a mean over the batch): an SGD step at lr 0.01
    # moves that layer by 10, about the whole norm of a 256-wide layer at He init (~16); healthy
    # nets on MNIST start near 0.1 to 10. Above it at step 0, or at any probe later: exploding.
    grad_norm_huge: float = 1e3
    # A final test loss over 10x chance's, ln(classes): the true class gets e^-23 of the
    # probability on average on 10 classes. Overfitting stays within a few times chance's; this
    # is a run whose updates blew up, even if no number became inf (lr 1e9: a loss of 6e25).
    loss_blowup: float = 10.0
    # Within 5 points of chance (1 / classes): the most common class alone gives 11.35 % on
    # MNIST's test set; a net that does no better has not learned.
    chance_margin: float = 0.05
    # The weight-gradient ratio, layer 1 over the output layer, at step 0: the old single verdict,
    # still what a one-hidden-layer net is judged by and what the depth figure draws. Under 1 %:
    # vanishing; under 10 %: attenuated; over 10x: exploding.
    vanishing_ratio: float = 1e-2
    attenuated_ratio: float = 0.1
    exploding_ratio: float = 10.0
    # A layer with 5 % or more of its units dead (zero on every training image) is worth naming.
    dead_fraction: float = 0.05
    # 20 % or more saturated (sample, unit) pairs: a fifth of the signal passes a slope < 10 % max.
    saturated_fraction: float = 0.2
    # The t-tests on test accuracy (paired on shared seeds, else Welch's): the usual 5 % level.
    p_value: float = stats.ALPHA
    # One seed a side: a gap over 5x the largest seed std measured in the same report is no seed
    # effect (two single runs differ by sqrt(2) std on average; 5x is z ~ 3.5, p ~ 0.0005).
    spread_multiple: float = 5.0
    # One seed a side: a gap between a group at chance and one more than half way from chance to
    # 100 % (55 % on 10 classes) is not seed noise: the one did not learn, the other did.
    far_above_chance: float = 0.5
    # An activation has stopped learning at a depth where its mean test accuracy is less than
    # half way from chance (1 / classes) to the best group's mean on the same data set: below
    # 53.5 % on MNIST when the best reaches 97 %. Relative, so it holds on harder data sets too.
    stop_fraction: float = 0.5


THRESHOLDS = Thresholds()
SATURATED = f"{100 * SATURATION_FRACTION:g} %"  # the probes' saturation rule, as the page says it
CHANCE_CLASSES = 10  # the chance level's class count for a data set missing from the registry
SGD_LIKE = ("sgd",)  # optimizers whose step grows with the gradient: clipping bounds it
# A layer dead from the start: no init of the other layers brings it back.
DEAD_LAYER_CURE = (
    "look at what feeds the dead layer (a bias or an input far below 0 makes every "
    "pre-activation negative); leaky ReLU or PReLU keep a slope for z < 0, so the gradient "
    "passes a unit that is off"
)


def shown(value: Any) -> str:
    """A record's number as the command line writes it (`1`, `0.5`); anything else as it is."""
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def chance_level(dataset: Any) -> float:
    """Accuracy of guessing: 1 / the number of classes."""
    spec = DATASETS.get(dataset) if isinstance(dataset, str) else None
    return 1 / (len(spec.classes) if spec is not None else CHANCE_CLASSES)


def setting_value(config: dict[str, Any], key: str) -> Any:
    """A config value, with what its absence means for records older than the key."""
    return completed(config).get(key)


def ratio_verdict(ratio: float, thresholds: Thresholds = THRESHOLDS) -> str:
    """The word for a first-layer / output-layer weight-gradient ratio."""
    if ratio < thresholds.vanishing_ratio:
        return "vanishing"
    if ratio < thresholds.attenuated_ratio:
        return "attenuated"
    if ratio > thresholds.exploding_ratio:
        return "exploding"
    return "no vanishing"


def fold(factor: float) -> str:
    """How many times: 23187 -> '23,000', 3.42 -> '3.4', 2.1e9 -> '2.1e+09'."""
    if factor < 10:
        return f"{factor:.2g}"
    if factor < 1e6:
        return f"{float(f'{factor:.2g}'):,.0f}"
    return f"{factor:.1e}"


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


def signal_of(row: dict[str, Any], units: Sequence[Any] | None = None) -> np.ndarray:
    """A probe row's back-propagated signal per hidden layer, nan where missing. With `units`
    (a watched model's units per activation layer, config.json's `hidden`): each layer's norm
    per sample and position, over the square root of its values per unit (its histogram's
    counts, every finite value of the batch, over its units), since a watched model's maps
    differ in size: a conv's 16 x 28 x 28 map has 784 positions where a 64-unit Linear layer
    has one, and its norm is 28 times the size at the same gradient per position. An MLP's
    layers all have one position per sample: their factor is the plain norms', as for a run
    of `vanishing train`, so the same network gets the same verdict either way."""
    signal = numbers(row.get("signal_norms") or [])
    histograms = row.get("activation_histogram")
    if (
        units is None
        or not isinstance(histograms, list)
        or len(histograms) != signal.size
        or len(units) != signal.size
    ):
        return signal
    counts = numbers(
        [sum(h.get("counts") or []) if isinstance(h, dict) else None for h in histograms]
    )
    width = numbers([u if isinstance(u, int) and u > 0 else None for u in units])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, signal / np.sqrt(counts / width), math.nan)


def watched_units(config: dict[str, Any]) -> list[Any] | None:
    """A watched model's units per activation layer (`signal_of`), None for a training run."""
    hidden = config.get("hidden")
    return hidden if watched(config) and isinstance(hidden, list) else None


def run_signal(run: RunRecords) -> np.ndarray:
    """The run's signal per hidden layer at step 0 (`signal_of`), result.json's for records
    without a step-0 probe."""
    row = first_probe(run)
    if row and watched(run.config):
        return signal_of(row, watched_units(run.config))
    return layer_values(run, "signal_norms", "signal_norms_init")


def run_factor(values: np.ndarray, reverse: bool) -> float:
    """values[0] / values[-1] (or the reverse): nan for one layer or a missing or zero divisor."""
    if values.size < 2:
        return math.nan
    top, bottom = (values[-1], values[0]) if reverse else (values[0], values[-1])
    if not (math.isfinite(top) and math.isfinite(bottom)) or bottom <= 0:
        return math.nan
    return float(top / bottom)


def mean_profile(lists: Sequence[np.ndarray]) -> np.ndarray:
    """Per layer, the geometric mean over runs of the runs whose lists agree in length."""
    lists = [x for x in lists if x.size]
    if not lists or len({x.size for x in lists}) != 1:
        return np.zeros(0)
    return stats.mean_over_runs(np.stack(lists), geometric=True)


@dataclass(frozen=True)
class Profile:
    """A group's layers at initialisation (step 0), over every run (diverged ones too: step 0
    comes before any step): per hidden layer the back-propagated signal and the activations'
    std (geometric means over seeds), and the factors across them."""

    signal: np.ndarray  # ||dLoss/dh|| per hidden layer, input side first
    scale: np.ndarray  # std of each hidden layer's output
    signal_factor: float  # layer 1 over the last hidden layer: < 1 shrinks towards the input
    scale_factor: float  # the last hidden layer over layer 1: < 1 shrinks with depth
    layers: int  # hidden layers
    names: LayerNames = NUMBERED  # how sentences name the layers

    @classmethod
    def of_probe(
        cls, row: dict[str, Any], layers: int, config: dict[str, Any] | None = None
    ) -> Profile:
        """One probe row's Profile (a run still training: no seeds to average); `config` names
        the layers and says whether the run is a watched model's."""
        config = config or {}
        signal = signal_of(row, watched_units(config))
        scale = numbers(row.get("activation_std") or [])
        return cls(
            signal,
            scale,
            run_factor(signal, reverse=False),
            run_factor(scale, reverse=True),
            layers,
            LayerNames.of(config),
        )

    @property
    def signal_per_layer(self) -> float:
        return per_layer(self.signal_factor, self.layers - 1)

    @property
    def scale_per_layer(self) -> float:
        return per_layer(self.scale_factor, self.layers - 1)


def profile(group: Group) -> Profile:
    """The group's Profile, from each run's step-0 probe (result.json's signal_norms_init for
    records without one)."""
    signals = [run_signal(r) for r in group.runs]
    scales = [layer_values(r, "activation_std") for r in group.runs]
    return Profile(
        signal=mean_profile(signals),
        scale=mean_profile(scales),
        signal_factor=combine([run_factor(s, reverse=False) for s in signals]),
        scale_factor=combine([run_factor(s, reverse=True) for s in scales]),
        layers=group.depth,
        names=group.names,
    )


def signal_word(factor: float, thresholds: Thresholds = THRESHOLDS) -> str:
    """vanishing, attenuated, healthy, growing or exploding; '' when not measured."""
    if not factor >= 0:  # nan
        return ""
    if factor < thresholds.signal_vanishing:
        return "vanishing"
    if factor < thresholds.signal_attenuated:
        return "attenuated"
    if factor > thresholds.signal_exploding:
        return "exploding"
    if factor > thresholds.signal_growing:
        return "growing"
    return "healthy"


def scale_word(factor: float, thresholds: Thresholds = THRESHOLDS) -> str:
    """collapse, blow-up or steady; '' when not measured."""
    if not factor >= 0:
        return ""
    if factor < thresholds.scale_collapse:
        return "collapse"
    if factor > thresholds.scale_blowup:
        return "blow-up"
    return "steady"


@dataclass(frozen=True)
class Verdict:
    """One group's verdict: the failures found (`kinds`, worst first), its sentences (the
    headline first, evidence next, the cure last) and the factors behind them."""

    kinds: tuple[str, ...]  # e.g. ("vanishing", "collapse", "cancel"); ("healthy",) when none
    headline: str  # the first sentence
    sentences: tuple[str, ...]  # headline, evidence, accuracy, cure
    profile: Profile
    cure: str = ""  # the last sentence, '' when nothing needs curing

    @property
    def word(self) -> str:
        """The short verdict for a table cell: 'vanishing, forward collapse'."""
        names = {
            "blew-up": "blew up",
            "exploding": "exploding",
            "vanishing": "vanishing",
            "attenuated": "attenuated",
            "growing": "growing",
            "collapse": "forward collapse",
            "blow-up": "forward blow-up",
            "dead": "dead units",
            "saturated": "saturated",
            "no-learning": "did not learn",
            "healthy": "healthy",
        }
        return ", ".join(names[k] for k in self.kinds if k in names)


@dataclass
class Findings:
    """Sentences as a verdict accrues them: (kind, sentence) pairs, worst kinds first."""

    headline: list[tuple[str, str]] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def add(self, kind: str, sentence: str, headline: bool = True) -> None:
        self.kinds.append(kind)
        if headline:
            self.headline.append((kind, sentence))
        else:
            self.evidence.append(sentence)


def change(factor: float, only: str = "") -> str:
    """How a factor within the healthy band reads: 'keeps its size' within 2x, else which way
    and how far ('shrinks 5.7-fold'; `only` before the number where the band is news)."""
    if 0.5 <= factor <= 2:
        return "keeps its size"
    return f"{'shrinks' if factor < 1 else 'grows'} {only}{fold(max(factor, 1 / factor))}-fold"


def signal_sentence(
    profile: Profile, word: str, rectifier: bool = False, dead_layer: int = 0
) -> str:
    """'Vanishing gradient: the back-propagated signal shrinks 23,000-fold from layer 30 to
    layer 1 (0.71 per layer).'; `dead_layer`: the hidden layer whose every unit is dead at
    step 0, which is why a signal of exactly 0 is."""
    factor, names = profile.signal_factor, profile.names
    span = f"from {names.hidden(profile.layers)} to {names.hidden(1)}"
    if factor == 0 and dead_layer:
        return (
            f"Vanishing gradient: the back-propagated signal reaching {names.hidden(1)} is "
            f"exactly 0 because every unit of {names.hidden(dead_layer)} is dead at step 0 "
            "(zero for every sample): no gradient passes it back."
        )
    if factor == 0:
        return (
            f"Vanishing gradient: the back-propagated signal reaching {names.hidden(1)} is "
            "exactly 0 "
            f"({'no active unit passes it back, or ' if rectifier else ''}too small for "
            f"float32): it vanishes {span}, beyond measurement."
        )
    each = f"({profile.signal_per_layer:.2f} per layer)"
    if word == "healthy":
        return (
            f"Healthy gradient: the back-propagated signal {change(factor, 'only ')} {span} "
            f"(×{number(factor)}, {profile.signal_per_layer:.2f} per layer)."
        )
    how = f"shrinks {fold(1 / factor)}-fold" if factor < 1 else f"grows {fold(factor)}-fold"
    title = {"vanishing": "Vanishing", "attenuated": "Attenuated", "growing": "Growing"}
    name = f"{title.get(word, 'Exploding')} gradient"
    return f"{name}: the back-propagated signal {how} {span} {each}."


def scale_sentence(profile: Profile, word: str) -> str:
    """'Forward collapse: the activations' scale (std) falls 470-fold from layer 1 to layer 20
    (0.72 per layer); the output hardly depends on the input.'"""
    factor, names = profile.scale_factor, profile.names
    span = f"from {names.hidden(1)} to {names.hidden(profile.layers)}"
    if factor == 0:
        return (
            f"Forward collapse: the activations' scale (std) falls to exactly 0 {span}: "
            "the output no longer depends on the input."
        )
    each = f"({profile.scale_per_layer:.2f} per layer)"
    if word == "collapse":
        return (
            f"Forward collapse: the activations' scale (std) falls {fold(1 / factor)}-fold "
            f"{span} {each}; the output hardly depends on the input."
        )
    return f"Forward blow-up: the activations' scale (std) grows {fold(factor)}-fold {span} {each}."


def largest(norms: Sequence[Any]) -> tuple[float, int]:
    """(the largest finite norm, its layer counted from 1); (nan, 0) when none."""
    values = numbers(norms)
    if not np.isfinite(values).any():
        return math.nan, 0
    index = int(np.nanargmax(values))
    return float(values[index]), index + 1


def layer_name(layer: int, layers: int, names: LayerNames = NUMBERED) -> str:
    """'layer 3', or 'the output layer' for the last Linear layer; a watched model's module
    name ('conv3')."""
    return names.weighted(layer, layers)


def blew_up(group: Group, found: Profile, thresholds: Thresholds, findings: Findings) -> None:
    """Divergence, a final test loss far above chance's, gradient norms that became huge."""
    runs, seeds = group.runs, len(group.runs)
    linear_layers, names = group.depth + 1, group.names
    diverged = [r for r in runs if r.status == "diverged"]
    if diverged:
        steps = [s for r in diverged if (s := r.finished.get("diverged_step")) is not None]
        at = f", by step {min(steps)}" if steps else ""  # seen at probes and epoch ends
        sentence = (
            f"Blew up: {len(diverged)} of {seeds} runs diverged (the loss became non-finite{at})"
        )
        before = [r.finished.get("norms_before_divergence") or {} for r in diverged]
        peaks = [(largest(b.get("grad_norms") or []), b.get("step")) for b in before]
        peaks = [p for p in peaks if math.isfinite(p[0][0])]
        if peaks:
            (norm, layer), step = max(peaks, key=lambda p: p[0][0])
            sentence += (
                f"; at step {step}, the last probe before, gradient norms reached "
                f"{number(norm)} ({layer_name(layer, linear_layers, names)})"
            )
        findings.add("blew-up", sentence + ".")
    chance_loss = -math.log(chance_level(group.setting.get("dataset")))
    losses = stats.finite(r.finished.get("test_loss") for r in group.ok)
    huge = [loss for loss in losses if loss > thresholds.loss_blowup * chance_loss]
    if huge:
        share = f" in {len(huge)} of {seeds} runs" if seeds > 1 else ""
        gain = setting_value(group.runs[0].config, "init_gain")
        if found.scale_factor > thresholds.scale_blowup:  # the forward pass, not the steps
            cause = (
                "the logits are huge because the activations' scale grows "
                f"{fold(found.scale_factor)}-fold with depth"
            )
        elif isinstance(gain, (int, float)) and gain > 1:
            cause = (
                f"the weights start at {gain:g} times the init's own scale (--init-gain), and "
                "the logits with them"
            )
        else:
            lr = group.runs[0].config.get("lr")
            cause = "the updates exploded" + (
                f" at lr {lr:g}" if isinstance(lr, (int, float)) else ""
            )
        findings.add(
            "blew-up",
            f"Blew up: the final test loss is {number(max(huge))}{share}, far above chance's "
            f"{chance_loss:.2f} (ln {round(math.exp(chance_loss))}): {cause}.",
        )
    grown = []
    for run in group.ok:
        probes = run.rows("probe")
        init = largest(probes[0].get("grad_norms") or [])[0] if probes else math.nan
        peak = max(
            ((largest(p.get("grad_norms") or []), p.get("step")) for p in probes[1:]),
            key=lambda p: p[0][0] if math.isfinite(p[0][0]) else -1.0,
            default=((math.nan, 0), None),
        )
        if math.isfinite(peak[0][0]) and peak[0][0] > thresholds.grad_norm_huge > init:
            grown.append((peak, init))
    if grown:
        ((norm, layer), step), init = max(grown, key=lambda g: g[0][0][0])
        findings.add(
            "blew-up",
            f"Exploding during training: gradient norms grew to {number(norm)} "
            f"({layer_name(layer, linear_layers, names)}) by step {step}, from {number(init)} "
            "at step 0.",
        )


def dead_at_init(group: Group) -> int:
    """The first hidden layer (from 1) whose every unit is dead at step 0 in every run (a
    rectifier net whose signal is exactly 0 for that reason); 0 when none is."""
    if group.activation.family != "rectifier":
        return 0
    lists = [numbers(first_probe(r).get("dead_fraction") or []) for r in group.runs]
    if not lists or len({x.size for x in lists}) != 1 or not lists[0].size:
        return 0
    whole = np.all(np.stack(lists) >= 1, axis=0)
    return int(np.argmax(whole)) + 1 if whole.any() else 0


def judge(group: Group, thresholds: Thresholds = THRESHOLDS) -> Verdict:
    """The group's verdict from every signal its records hold."""
    findings = Findings()
    found = profile(group)
    blew_up(group, found, thresholds, findings)

    signal = signal_word(found.signal_factor, thresholds)
    scale = scale_word(found.scale_factor, thresholds)
    init_norms = [largest(r.finished.get("grad_norms_init") or []) for r in group.runs]
    init_norms = [n for n in init_norms if math.isfinite(n[0])]
    ratio = group.vanishing_ratio_init
    if found.layers >= 2 and signal:
        if signal in ("vanishing", "exploding", "attenuated", "growing"):
            rectifier = group.activation.family == "rectifier"
            dead = dead_at_init(group) if found.signal_factor == 0 else 0
            findings.add(signal, signal_sentence(found, signal, rectifier, dead))
        if scale in ("collapse", "blow-up"):
            findings.add(scale, scale_sentence(found, scale))
    elif math.isfinite(ratio):  # one hidden layer (or old records): the weight gradients alone
        word = ratio_verdict(ratio, thresholds)
        if word != "no vanishing":
            findings.add(
                word,
                f"{word.capitalize()} gradient: {found.names.share(number(ratio))} at "
                "initialisation.",
            )
    if init_norms:
        norm, layer = max(init_norms)
        if norm > thresholds.grad_norm_huge:
            findings.add(
                "exploding",
                f"Huge gradients at initialisation: norms up to {number(norm)} "
                f"({layer_name(layer, found.layers + 1, found.names)}).",
                headline="exploding" not in findings.kinds,
            )
    weight_note(group, found, signal, scale, thresholds, findings)
    if group.ratio_underflow:
        findings.add(
            "underflow",
            "At initialisation the weight gradient reaching layer 1 is exactly 0 at every seed: "
            "it underflowed, too small for float32.",
            headline=False,
        )
    bound = group.activation.derivative_bound
    if bound < 1 and signal in ("vanishing", "attenuated"):
        depth = group.depth
        layers = "activation layers" if group.watched else "hidden layers"
        findings.evidence.append(
            f"{group.activation.label}'s slope is at most {bound:g}, so its {depth} {layers} "
            f"alone multiply the gradient by at most ({bound:g})^{depth} = {number(bound**depth)}."
        )
    for kind, sentence in health(group, thresholds):
        findings.add(kind, sentence, headline=kind in ("dead", "saturated"))
    accuracy = accuracy_sentence(group, thresholds)
    if accuracy.endswith("it did not learn."):
        findings.kinds.append("no-learning")
    return finish(group, found, signal, findings, accuracy, thresholds)


def weight_note(
    group: Group,
    found: Profile,
    signal: str,
    scale: str,
    thresholds: Thresholds,
    findings: Findings,
) -> None:
    """Where the weight-gradient ratio disagrees with the signal: both effects cancel in it, or
    growing activations make it look like vanishing."""
    ratio = group.vanishing_ratio_init
    if not math.isfinite(ratio) or found.layers < 2 or not signal:
        return
    even = thresholds.attenuated_ratio <= ratio <= thresholds.exploding_ratio
    cancels = (signal == "vanishing" and scale == "collapse") or (
        signal == "exploding" and scale == "blow-up"
    )
    if even and cancels:
        findings.add(
            "cancel",
            f"The weight gradients look even ({found.names.gets(number(ratio))}) only because "
            "the two cancel: a weight gradient is the signal times the layer's input.",
            headline=False,
        )
        return
    looks = ratio_verdict(ratio, thresholds)
    if signal in ("healthy", "growing", "exploding") and looks in ("vanishing", "attenuated"):
        why = ""
        if found.scale_factor > 1 / thresholds.signal_attenuated:
            why = (
                f": the activations grow {fold(found.scale_factor)}-fold with depth, which "
                "enlarges the output layer's weight gradient"
            )
        findings.add(
            "mismatch",
            f"The weight-gradient ratio ({number(ratio)}, {found.names.share_short()}) alone "
            f"would read as {looks}, but the signal reaching {found.names.hidden(1)} does not "
            f"shrink{why}.",
            headline=False,
        )
    elif signal in ("healthy", "attenuated", "vanishing") and looks == "exploding":
        findings.add(
            "mismatch",
            f"The weight-gradient ratio ({number(ratio)}, {found.names.share_short()}) alone "
            f"would read as exploding, but the signal reaching {found.names.hidden(1)} does not "
            "grow.",
            headline=False,
        )


def health(group: Group, thresholds: Thresholds = THRESHOLDS) -> list[tuple[str, str]]:
    """(kind, sentence): dead units for rectifiers, saturation for the others, a caveat for
    linear; kind 'dead' or 'saturated' when a layer is over its threshold, else 'note'."""
    key = group.health_key
    if key is None:
        return [
            (
                "note",
                "A linear activation has slope 1 everywhere, so it takes nothing from the "
                "gradient (only the weights' scale can), but however deep the network is it "
                "computes a single linear map: a linear classifier.",
            )
        ]
    if not group.ok:
        return []
    values, _, _ = group.result_layers(key, group.ok)
    if not np.isfinite(values).any():
        return []
    worst = int(np.nanargmax(values))
    names = group.names
    epochs = len(group.ok[0].finished.get("history", []))
    if key == "dead_fraction":
        widths = np.array(group.hidden, dtype=float)
        overall = float(np.nansum(values * widths) / widths.sum())
        if group.watched:
            return watched_dead(group, values, worst, overall, thresholds)
        if values[worst] >= thresholds.dead_fraction:
            sentence = (
                f"{percent(values[worst])} of {names.units(worst + 1)} units are dead after epoch "
                f"{epochs} (zero output on every training image); {percent(overall)} of all "
                "hidden units."
            )
            first = group.epoch_layers("dead_fraction")[1]
            if epochs > 1 and first.size and worst < first.shape[1]:
                sentence += f" After epoch 1 it was {percent(first[0, worst])}."
            return [("dead", "Dead units: " + sentence)]
        if values[worst] == 0:
            return [
                ("note", f"No dead units after epoch {epochs} (checked on the whole training set).")
            ]
        return [
            (
                "note",
                f"No dead layer: at most {percent(values[worst])} of a layer's units "
                f"({names.hidden(worst + 1)}) are dead after epoch {epochs}.",
            )
        ]
    if values[worst] >= thresholds.saturated_fraction:
        return [
            (
                "saturated",
                f"Saturated: {percent(values[worst])} of {names.units(worst + 1)} activations are "
                f"saturated at the end of training (slope below {SATURATED} of its maximum): "
                "little gradient passes them.",
            )
        ]
    if values[worst] == 0:
        return [("note", "No saturated activations at the end of training.")]
    return [
        (
            "note",
            f"Little saturation: at most {percent(values[worst])} of a layer's activations "
            f"({names.hidden(worst + 1)}) are saturated at the end of training.",
        )
    ]


def watched_dead(
    group: Group, values: np.ndarray, worst: int, overall: float, thresholds: Thresholds
) -> list[tuple[str, str]]:
    """Dead units of a watched model, which `watch` measures on the batches of its last few
    probes (the training steps', or the probe batch), not on the whole training set: at the
    last probe."""
    name = group.names.hidden(worst + 1)
    probes = group.ok[0].rows("probe")
    step = probes[-1].get("step") if probes else None
    at = f"at the last probe (step {step})" if step is not None else "at the last probe"
    if values[worst] == 0:
        return [("note", f"No dead units {at}.")]
    if values[worst] < thresholds.dead_fraction:
        return [
            (
                "note",
                f"No dead layer: at most {percent(values[worst])} of a layer's units ({name}) "
                f"are dead {at}.",
            )
        ]
    sentence = (
        f"Dead units: {name}: {percent(values[worst])} dead units {at}, zero for every sample "
        f"and position of the last batches measured; {percent(overall)} of all measured units."
    )
    first = numbers(probes[0].get("dead_fraction") or []) if len(probes) > 1 else np.zeros(0)
    if worst < first.size and math.isfinite(first[worst]):
        sentence += f" At step {probes[0].get('step')} it was {percent(first[worst])}."
    return [("dead", sentence)]


def at_chance(group: Group, thresholds: Thresholds = THRESHOLDS) -> bool:
    """The group's mean test accuracy is within `chance_margin` of chance: it did not learn."""
    chance = chance_level(group.setting.get("dataset"))
    return bool(group.accuracies) and group.accuracy.mean < chance + thresholds.chance_margin


def accuracy_sentence(group: Group, thresholds: Thresholds = THRESHOLDS) -> str:
    """'Test accuracy 97.10 ± 0.20 % (over 3 seeds).', with '...: chance level, it did not
    learn.' at chance; '' when no run finished without diverging."""
    accuracies = group.accuracies
    if not accuracies:
        return ""
    mean, std = group.accuracy.mean, group.accuracy.std
    spread = f" ± {100 * std:.2f}" if len(accuracies) > 1 else ""
    runs = "runs" if group.watched else "seeds"  # a watched model's runs have no seed
    over = f"over {len(accuracies)} {runs}" if len(accuracies) > 1 else f"one {runs[:-1]}"
    sentence = f"Test accuracy {100 * mean:.2f}{spread} % ({over})"
    if at_chance(group, thresholds):
        chance = chance_level(group.setting.get("dataset"))
        return f"{sentence}: chance level ({percent2(chance)}), it did not learn."
    return sentence + "."


def finish(
    group: Group,
    found: Profile,
    signal: str,
    findings: Findings,
    accuracy: str,
    thresholds: Thresholds,
) -> Verdict:
    """The Verdict: the worst finding as the headline, the others and the accuracy as evidence,
    the cure last."""
    order = [
        "blew-up",
        "exploding",
        "vanishing",
        "blow-up",
        "collapse",
        "attenuated",
        "growing",
        "dead",
        "saturated",
    ]
    ranked = sorted(findings.headline, key=lambda item: order.index(item[0]))
    kinds = sorted(dict.fromkeys(k for k in findings.kinds if k in order), key=order.index)
    kinds += [k for k in ("no-learning", "cancel", "mismatch") if k in findings.kinds]
    # Dead or saturated units never head the verdict: the gradient's fate comes first.
    gradient = [(kind, sentence) for kind, sentence in ranked if kind not in ("dead", "saturated")]
    units = [sentence for kind, sentence in ranked if kind in ("dead", "saturated")]
    if gradient:
        headline = gradient[0][1]
        evidence = [sentence for _, sentence in gradient[1:]]
    elif "no-learning" in kinds:
        headline = "Did not learn, though no gradient failure shows at initialisation."
        evidence = []
    else:
        kinds = ["healthy", *kinds]
        if signal:
            headline = signal_sentence(found, "healthy")
        elif math.isfinite(group.vanishing_ratio_init):
            headline = (
                f"Healthy gradient: {found.names.share(number(group.vanishing_ratio_init))} at "
                "initialisation."
            )
        else:
            headline = "No gradient measured at initialisation."
            kinds = kinds[1:]
        evidence = []
    if kinds and kinds[0] != "healthy" and signal == "healthy" and found.layers >= 2:
        evidence.append(
            f"The back-propagated signal {change(found.signal_factor)} from "
            f"{found.names.hidden(found.layers)} to {found.names.hidden(1)} "
            f"(×{number(found.signal_factor)})."
        )
    evidence += findings.evidence + units
    after = "" if "blew-up" in kinds else final_signal(group, signal, thresholds)
    if after:
        evidence.append(after)
    if accuracy:
        evidence.append(accuracy)
    diverged = sum(r.status == "diverged" for r in group.runs)
    if diverged and group.ok:
        evidence.append("The diverged runs are left out of accuracy and loss.")
    clipped = clipping_sentence(group)
    if clipped:
        evidence.append(clipped)
    cure = cure_sentence(group, tuple(kinds), thresholds)
    sentences = (headline, *evidence, *([cure] if cure else []))
    return Verdict(tuple(kinds), headline, sentences, found, cure)


def final_signal(group: Group, first_word: str, thresholds: Thresholds) -> str:
    """Where the signal's verdict at the last probe differs from step 0's, a sentence saying so."""
    factors = []
    for run in group.ok:
        probes = run.rows("probe")
        if len(probes) > 1:
            factors.append(
                run_factor(signal_of(probes[-1], watched_units(group.runs[0].config)), False)
            )
    factor = combine(factors)
    word = signal_word(factor, thresholds)
    if not word or not first_word or word == first_word:
        return ""
    return (
        f"After training (last probe) the signal reads {word}: "
        f"×{'0' if factor == 0 else number(factor)} from {last_to_first(group.names, group.depth)}."
    )


def last_to_first(names: LayerNames, layers: int) -> str:
    """'the last hidden layer to layer 1', or a watched model's 'conv4 to conv1'."""
    last = names.hidden(layers) if names.named else "the last hidden layer"
    return f"{last} to {names.hidden(1)}"


def clipping_sentence(group: Group) -> str:
    """'Clipping (--clip-grad-norm 1) cut 1,875 of 1,875 steps.' for runs that clip."""
    limit = setting_value(group.runs[0].config, "clip_grad_norm")
    if limit is None:
        return ""
    clipped = [int(c) for r in group.ok if (c := r.finished.get("clipped_steps")) is not None]
    steps = [int(s) for r in group.ok if (s := r.finished.get("steps")) is not None]
    if not clipped or len(clipped) != len(group.ok) or len(steps) != len(group.ok):
        return f"Gradients were clipped to norm {shown(limit)}."
    return (
        f"Clipping (--clip-grad-norm {shown(limit)}) cut {sum(clipped):,} of {sum(steps):,} steps."
    )


def cure_sentence(group: Group, kinds: tuple[str, ...], thresholds: Thresholds) -> str:
    """The cure for the worst failure, fitted to what the run already uses; '' if none fits."""
    if group.watched:
        return model_cure(group, kinds)
    config = group.runs[0].config
    norm = setting_value(config, "norm") or "none"
    residual = bool(setting_value(config, "residual"))
    gain = setting_value(config, "init_gain")
    clip = setting_value(config, "clip_grad_norm")
    init = str(config.get("init", "default"))
    optimizer = str(config.get("optimizer", ""))
    family, name = group.activation.family, group.activation.name
    kaiming = init in ("kaiming", "he")
    parts: list[str] = []
    worst = kinds[0] if kinds else "healthy"
    gain = gain if isinstance(gain, (int, float)) and not isinstance(gain, bool) else 1.0
    lr = config.get("lr")
    lr_here = f" (lr {lr:g} here)" if isinstance(lr, (int, float)) else ""
    can_clip = optimizer in SGD_LIKE and clip is None
    # What makes the scale too large: the signal or the activations growing, or the init gain.
    too_large = bool({"exploding", "blow-up", "growing"} & set(kinds)) or gain > 1
    if worst == "blew-up" and not too_large:
        parts.append(f"a lower learning rate{lr_here}")
        if can_clip:
            parts.append("--clip-grad-norm to cap each step")
    elif worst in ("blew-up", "exploding", "blow-up", "growing"):
        if gain > 1:
            parts.append(f"a lower --init-gain ({gain:g} here; 1 keeps each init's own scale)")
        elif family == "rectifier" and not kaiming:
            parts.append("He (kaiming) initialisation, which keeps the scale")
        else:
            parts.append("a smaller initial weight scale (--init-gain below 1)")
        if norm != "batch":
            parts.append("batch norm resets the scale every layer")
        if can_clip:
            parts.append("--clip-grad-norm caps each step")
    elif worst in ("vanishing", "collapse", "attenuated"):
        if gain < 1:
            parts.append(f"--init-gain 1 keeps each init's own scale ({gain:g} here)")
        if family == "rectifier":
            if not kaiming:
                parts.append("He (kaiming) initialisation keeps the forward scale")
            if norm != "batch":
                parts.append("batch norm resets it every layer")
            elif not residual:
                parts.append("residual connections carry the signal past each layer")
        else:
            # A linear layer keeps its scale at std 1/sqrt(fan_in); a rectifier would change
            # what a linear network is, so it is offered to the others only.
            options = [
                *(
                    ["lecun init (std 1/sqrt(fan_in))"]
                    if family == "linear" and init not in ("lecun", "orthogonal")
                    else []
                ),
                *(["batch norm"] if norm != "batch" else []),
                *(["residual connections"] if not residual else []),
                *(["a rectifier (ReLU with He init)"] if family != "linear" else []),
            ]
            if options:
                listed = options[0] if len(options) == 1 else ", ".join(options[:-1])
                listed += f" or {options[-1]}" if len(options) > 1 else ""
                each = ", each of which keeps" if len(options) > 1 else ", which keeps"
                parts.append(f"{listed}{each} the gradient's size from layer to layer")
    if dead_at_init(group) and worst == "vanishing":
        parts = [DEAD_LAYER_CURE]
    if "dead" in kinds and name == "relu" and (worst == "dead" or not parts):
        parts.append("leaky ReLU or PReLU keep a slope for z < 0, so no unit dies for good")
    elif "saturated" in kinds and worst == "saturated" and norm != "batch":
        parts.append("batch norm keeps pre-activations near 0, where the slope is largest")
    if not parts:
        return ""
    return f"Cure: {'; '.join(parts)}."


def model_cure(group: Group, kinds: tuple[str, ...]) -> str:
    """A watched model's cure for its worst failure, as changes to the model or the loop (its
    user passes no options): the module to add, the init to use; '' if none fits."""
    config = group.runs[0].config
    description = str(config.get("description") or "")
    has_norm = "BatchNorm" in description or "LayerNorm" in description
    norm = "nn.BatchNorm2d" if "Conv2d" in description else "nn.BatchNorm1d"
    label, family = group.activation.label, group.activation.family
    lr = config.get("lr")
    lr_here = f" (lr {lr:g} here)" if isinstance(lr, (int, float)) else ""
    clip = (
        "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0) before optimizer.step() caps "
        "each step"
    )
    can_clip = str(config.get("optimizer")) in SGD_LIKE
    worst = kinds[0] if kinds else "healthy"
    too_large = bool({"exploding", "blow-up", "growing"} & set(kinds))
    parts: list[str] = []
    if worst == "blew-up" and not too_large:
        parts.append(f"a lower learning rate{lr_here}")
        if can_clip:
            parts.append(clip)
    elif worst in ("blew-up", "exploding", "blow-up", "growing"):
        parts.append(
            "smaller initial weights: He (kaiming) init for rectifiers "
            "(nn.init.kaiming_normal_), Xavier for the others (nn.init.xavier_normal_)"
        )
        if not has_norm:
            parts.append(f"add batch norm ({norm}) before the activations to reset the scale")
        if can_clip:
            parts.append(clip)
    elif worst in ("vanishing", "collapse", "attenuated"):
        if family == "rectifier":
            parts.append(
                "He (kaiming) init (nn.init.kaiming_normal_ on each layer's weight), where the "
                "layers still have PyTorch's default (a sixth of He's variance), keeps the "
                "forward scale"
            )
            if not has_norm:
                parts.append(f"add batch norm ({norm}) before the activations to reset it")
            else:
                parts.append("residual connections (x + f(x)) carry the signal past each layer")
        else:
            options = [
                *(
                    [f"a rectifier instead of {label} (nn.ReLU with He init)"]
                    if family != "linear"
                    else []
                ),
                *([f"batch norm ({norm}) before the activations"] if not has_norm else []),
                "residual connections (x + f(x))",
            ]
            listed = (
                ", ".join(options[:-1]) + f" or {options[-1]}" if len(options) > 1 else options[0]
            )
            each = ", each of which keeps" if len(options) > 1 else ", which keeps"
            parts.append(f"{listed}{each} the gradient's size from layer to layer")
    if dead_at_init(group) and worst == "vanishing":
        parts = [DEAD_LAYER_CURE]
    if "dead" in kinds and group.activation.name == "relu" and (worst == "dead" or not parts):
        parts.append(
            "nn.LeakyReLU or nn.PReLU instead of nn.ReLU keep a slope for z < 0, so no unit "
            "dies for good"
        )
    elif "saturated" in kinds and worst == "saturated" and not has_norm:
        parts.append(
            f"add batch norm ({norm}) before the activations: it keeps pre-activations near 0, "
            "where the slope is largest"
        )
    if not parts:
        return ""
    return f"Cure: {'; '.join(parts)}."


def headline(source: Path | str | Sequence[RunRecords], thresholds: Thresholds = THRESHOLDS) -> str:
    """One short line: the headline verdict of a run directory (or of runs' records), e.g. for
    `vanishing train` to print; with several groups, each prefixed by its label."""
    runs = load_runs([source])[0] if isinstance(source, (str, Path)) else list(source)
    groups = make_groups(runs)
    if not groups:
        return "No finished run: no verdict."
    verdicts = [judge(g, thresholds) for g in groups]
    if len(groups) == 1:
        return verdicts[0].headline
    return " ".join(f"{g.label}: {v.headline}" for g, v in zip(groups, verdicts, strict=True))


def live_headline(
    rows: Sequence[dict[str, Any]], config: dict[str, Any], thresholds: Thresholds = THRESHOLDS
) -> str:
    """One line for a run still training, from its metrics rows so far: the back-propagated
    signal's verdict at the first probe (step 0), in `judge`'s words, and the latest probe's
    where it reads otherwise; a net of one hidden layer by its weight-gradient ratio."""
    probes = [row for row in rows if row.get("kind") == "probe"]
    if not probes:
        return "No probe yet: no verdict."
    first, latest = probes[0], probes[-1]
    layers = len(config.get("hidden") or [])
    found = Profile.of_probe(first, layers, config)
    word = signal_word(found.signal_factor, thresholds)
    at = f"step {first.get('step')}"
    if layers < 2 or not word:
        ratio = first.get("vanishing_ratio")
        if not isinstance(ratio, (int, float)):
            return f"No gradient measured at {at}."
        verdict = ratio_verdict(ratio, thresholds)
        return f"{verdict.capitalize()} gradient: {found.names.share(number(ratio))} at {at}."
    family = (
        ACTIVATIONS[config["activation"]].family if config.get("activation") in ACTIVATIONS else ""
    )
    line = signal_sentence(found, word, rectifier=family == "rectifier")
    forward = scale_word(found.scale_factor, thresholds)
    if forward in ("collapse", "blow-up"):
        line += " " + scale_sentence(found, forward)
    if latest is not first:
        factor = Profile.of_probe(latest, layers, config).signal_factor
        now = signal_word(factor, thresholds)
        if now and now != word:
            shown_factor = "0" if factor == 0 else number(factor)
            line += (
                f" At step {latest.get('step')} the signal reads {now}: ×{shown_factor} from "
                f"{last_to_first(found.names, layers)}."
            )
    alarm = live_alarm(probes, rows, config, thresholds)
    return alarm + line + live_dead(latest, thresholds, found.names)


def live_alarm(
    probes: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    config: dict[str, Any],
    thresholds: Thresholds,
) -> str:
    """What the latest rows of a training run show that step 0 cannot: a loss that blew up,
    gradients grown huge; '' when none. It heads the live line."""
    latest, step = probes[-1], probes[-1].get("step")
    chance_loss = -math.log(chance_level(config.get("dataset")))
    # A key written as null is a non-finite number; a key never written says nothing.
    # A watched model's probe rows carry the loss as null when the hooks saw none (no probe
    # batch): only its epoch rows say anything about the loss.
    blind = watched(config) and config.get("probe_size") is None
    last_rows = [*([] if blind else [latest]), *(r for r in rows[-1:] if r.get("kind") == "epoch")]
    losses = [row[key] for row in last_rows for key in ("loss", "test_loss") if key in row]
    # At step 0 nothing has trained yet: a huge loss there is the init's, not a blow-up.
    when = "At initialisation" if step == 0 else f"Blew up: by step {step}"
    for loss in losses:
        if loss is None or (isinstance(loss, (int, float)) and not math.isfinite(loss)):
            return f"{when} the loss is {'not' if step == 0 else 'no longer'} a finite number. "
        if isinstance(loss, (int, float)) and loss > thresholds.loss_blowup * chance_loss:
            return f"{when} the loss is {number(loss)}, far above chance's {chance_loss:.2f}. "
    norm, layer = largest(latest.get("grad_norms") or [])
    first_norm = largest(probes[0].get("grad_norms") or [])[0]
    if math.isfinite(norm) and norm > thresholds.grad_norm_huge >= first_norm:
        layers = len(config.get("hidden") or []) + 1
        return (
            f"Exploding during training: gradient norms reached {number(norm)} "
            f"({layer_name(layer, layers, LayerNames.of(config))}) by step {step}. "
        )
    return ""


def live_dead(latest: dict[str, Any], thresholds: Thresholds, names: LayerNames = NUMBERED) -> str:
    """' Dead units: ...' where a layer's units output 0 on the whole probe batch; else ''."""
    dead = numbers(latest.get("dead_fraction") or [])
    if not (dead.size and np.isfinite(dead).any()) or np.nanmax(dead) < thresholds.dead_fraction:
        return ""
    worst = int(np.nanargmax(dead))
    return (
        f" Dead units: {percent(float(dead[worst]))} of {names.units(worst + 1)} units output 0 "
        f"on every probe image at step {latest.get('step')}."
    )
