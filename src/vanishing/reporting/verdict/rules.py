"""The rules: which failure a point's records, or a run's latest metrics rows, show, as data (a
kind and the numbers behind it), with no sentence. `judging` applies them to a point, `live` to
the rows of a run still training, and `sentences` says what they found.

The kinds of finding, worst first (`FAILURES`): a verdict's headline is the worst one found.
- training-blow-up: the training blew up: a run diverged (its loss became non-finite), its final
  test loss is far above chance's (a regression's: its baseline's), or its gradient norms grew
  huge after step 0;
- exploding-through-time, vanishing-through-time: a recurrent layer's gradient from the last
  step of the sequence back to the first (`time_profile`), read apart from depth: it grows at
  any probe, or it vanishes after training (at initialisation where nothing was probed later);
- exploding, vanishing, attenuated, growing: the back-propagated signal across the hidden layers
  at step 0 (or, with one hidden layer, the weight-gradient ratio); exploding also for gradient
  norms already huge at step 0;
- forward-blow-up, forward-collapse: the activations' scale (std) grows or falls with depth at
  step 0, in the forward pass;
- large-steps: a run that did not learn (or blew up) whose optimizer moved a layer by as much as
  its own weights in one step: the learning rate is too large;
- small-steps: a run that did not learn whose steps stayed tiny in every layer: too small;
- dead, saturated: a layer with too many units that pass no gradient;
- closed-gates, saturated-gates: an LSTM's forget gates (a GRU's update gates) that keep little
  of the cell per step, or gates most of whose values sit at 0 or 1.
Whether a small gradient slows learning is the optimizer's part (`Steps`): under SGD a layer's
step is its gradient times the learning rate, under Adam or RMSprop each weight's step is
divided by its own gradient's running size.
Notes follow them (`NOTES`): no-learning (chance level, a regression's baseline), cancel (the
weight-gradient ratio looks even because two failures cancel in it), mismatch (the ratio alone
would read otherwise).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vanishing import stats
from vanishing.model.mlp import OPTIMIZERS
from vanishing.reporting.formats import number
from vanishing.reporting.results import (
    ADDING_BASELINE,
    REGRESSION,
    Point,
    RunRecords,
    numbers,
    task_of,
)
from vanishing.reporting.verdict.profile import (
    Profile,
    first_probe,
    largest,
    mean_profile,
    run_factor,
    run_signal,
    setting_value,
)
from vanishing.reporting.verdict.thresholds import (
    THRESHOLDS,
    Thresholds,
    chance_level,
    chance_loss,
)
from vanishing.reporting.verdict.time_profile import (
    TimeLayer,
    TimeProfile,
    time_profile,
    time_rows,
)
from vanishing.settings.naming import watched

FAILURES = (
    "training-blow-up",
    "exploding-through-time",
    "exploding",
    "large-steps",
    "small-steps",
    "vanishing-through-time",
    "vanishing",
    "forward-blow-up",
    "forward-collapse",
    "attenuated",
    "growing",
    "dead",
    "saturated",
    "closed-gates",
    "saturated-gates",
)
NOTES = ("no-learning", "cancel", "mismatch")
# Findings that are evidence only, never a verdict's kind.
EVIDENCE = ("underflow", "note", "steps", "time")
UNITS = ("dead", "saturated")  # never the headline: the gradient's fate comes first
GATES = ("closed-gates", "saturated-gates")  # nor the gates: they are why, not what
THROUGH_TIME = ("exploding-through-time", "vanishing-through-time")
FORWARD = ("forward-collapse", "forward-blow-up")
# What makes the scale too large, for the cures.
TOO_LARGE = ("exploding", "forward-blow-up", "growing")
# How a table cell says each kind: 'vanishing, forward collapse'.
WORDS = {
    "training-blow-up": "blew up",
    "exploding": "exploding",
    "vanishing": "vanishing",
    "attenuated": "attenuated",
    "growing": "growing",
    "forward-collapse": "forward collapse",
    "forward-blow-up": "forward blow-up",
    "large-steps": "steps too large",
    "small-steps": "steps too small",
    "dead": "dead units",
    "saturated": "saturated",
    "exploding-through-time": "exploding through time",
    "vanishing-through-time": "vanishing through time",
    "closed-gates": "gates closed",
    "saturated-gates": "gates saturated",
    "no-learning": "did not learn",
    "healthy": "healthy",
}


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


def scale_word(found: Profile, thresholds: Thresholds = THRESHOLDS) -> str:
    """forward-collapse (the output no longer depends on the input: the spread across samples
    falls, or for older records the std), forward-blow-up (the activations' std grows) or
    steady; '' when not measured."""
    collapse, scale = found.collapse_factor, found.scale_factor
    if not (collapse >= 0 or scale >= 0):
        return ""
    if collapse < thresholds.scale_collapse:
        return "forward-collapse"
    if scale > thresholds.scale_blowup:
        return "forward-blow-up"
    return "steady"


def ratio_verdict(ratio: float, thresholds: Thresholds = THRESHOLDS) -> str:
    """The word for a first-layer / output-layer weight-gradient ratio."""
    if ratio < thresholds.vanishing_ratio:
        return "vanishing"
    if ratio < thresholds.attenuated_ratio:
        return "attenuated"
    if ratio > thresholds.exploding_ratio:
        return "exploding"
    return "no vanishing"


@dataclass(frozen=True)
class Gradient:
    """What step 0 says about the gradient: the signal across two hidden layers or more where it
    was measured (`by_signal`), else the weight-gradient ratio (one hidden layer, old records)."""

    signal: str  # signal_word of the signal factor; '' when not measured
    scale: str  # scale_word of the scale factor; '' when not measured
    ratio: float  # layer 1's weight gradient over the output layer's; nan when not measured
    by_signal: bool
    ratio_word: str  # ratio_verdict where the ratio judges; '' where the signal does or no ratio

    @property
    def kinds(self) -> tuple[str, ...]:
        """The failures it shows: the signal's and the forward pass's, or the ratio's."""
        if self.by_signal:
            signal = (self.signal,) if self.signal != "healthy" else ()
            return (*signal, *((self.scale,) if self.scale in FORWARD else ()))
        return (self.ratio_word,) if self.ratio_word not in ("", "no vanishing") else ()


def gradient(found: Profile, ratio: float, thresholds: Thresholds = THRESHOLDS) -> Gradient:
    """The Gradient of a Profile (a point's, or one probe row's) and its weight-gradient ratio."""
    signal = signal_word(found.signal_factor, thresholds)
    by_signal = found.layers >= 2 and bool(signal)
    judged = not by_signal and math.isfinite(ratio)
    return Gradient(
        signal,
        scale_word(found, thresholds),
        ratio,
        by_signal,
        ratio_verdict(ratio, thresholds) if judged else "",
    )


def later_signal(first: str, factor: float, thresholds: Thresholds = THRESHOLDS) -> str:
    """The signal's word at a later probe (`factor`) where it differs from step 0's (`first`);
    '' where it agrees or either was not measured."""
    word = signal_word(factor, thresholds)
    return word if word and first and word != first else ""


@dataclass(frozen=True)
class WeightNote:
    """Where the weight-gradient ratio disagrees with the signal."""

    kind: str  # "cancel": both failures cancel in it; "mismatch": it alone would read `looks`
    looks: str  # ratio_verdict of the ratio
    grows: bool  # the activations grow enough with depth to enlarge the output layer's gradient


def weight_note(
    found: Profile, step0: Gradient, thresholds: Thresholds = THRESHOLDS
) -> WeightNote | None:
    """Where the weight-gradient ratio disagrees with the signal: both effects cancel in it, or
    growing activations make it look like vanishing; None where it agrees or cannot be read."""
    ratio, signal, scale = step0.ratio, step0.signal, step0.scale
    if not math.isfinite(ratio) or not step0.by_signal:
        return None
    looks = ratio_verdict(ratio, thresholds)
    even = thresholds.attenuated_ratio <= ratio <= thresholds.exploding_ratio
    # A weight gradient is the signal times the layer's input: what cancels is the inputs' size
    # (their std), not how much they depend on the input.
    shrinks = found.scale_factor < thresholds.scale_collapse
    cancels = (signal == "vanishing" and shrinks) or (
        signal == "exploding" and scale == "forward-blow-up"
    )
    if even and cancels:
        return WeightNote("cancel", looks, False)
    grows = found.scale_factor > 1 / thresholds.signal_attenuated
    if signal in ("healthy", "growing", "exploding") and looks in ("vanishing", "attenuated"):
        return WeightNote("mismatch", looks, grows)
    if signal in ("healthy", "attenuated", "vanishing") and looks == "exploding":
        return WeightNote("mismatch", looks, False)
    return None


@dataclass(frozen=True)
class Peak:
    """The largest gradient norm of a probe: its size, its weighted layer (from 1), its step."""

    norm: float
    layer: int
    step: Any


def peak(norms: Sequence[Any], step: Any) -> Peak | None:
    """The largest finite norm of a list of gradient norms; None when none is finite."""
    norm, layer = largest(norms)
    return Peak(norm, layer, step) if math.isfinite(norm) else None


@dataclass(frozen=True)
class Divergence:
    """Runs whose loss became non-finite."""

    runs: int  # diverged
    seeds: int  # in the point
    step: int | None  # the earliest step it was seen, where recorded
    peak: Peak | None  # the largest gradient norm at the last probe before, over those runs


def divergence(point: Point) -> Divergence | None:
    """The point's diverged runs; None when none diverged."""
    diverged = [r for r in point.runs if r.status == "diverged"]
    if not diverged:
        return None
    steps = [s for r in diverged if (s := r.finished.get("diverged_step")) is not None]
    before = [r.finished.get("norms_before_divergence") or {} for r in diverged]
    peaks = [p for b in before if (p := peak(b.get("grad_norms") or [], b.get("step")))]
    highest = max(peaks, key=lambda p: p.norm) if peaks else None
    return Divergence(len(diverged), len(point.runs), min(steps) if steps else None, highest)


@dataclass(frozen=True)
class Reference:
    """What a loss is set against: chance's cross-entropy, ln(classes), for a classification;
    for a regression its baseline, the test loss of always answering the targets' mean."""

    loss: float
    multiple: float  # a loss over `multiple` times `loss` says the training blew up
    words: str  # "chance's 2.30", "the baseline's 0.167"
    why: str  # what it is: "ln 10", "always answering 1"


def loss_reference(
    dataset: Any, regression: bool, baseline: float, thresholds: Thresholds = THRESHOLDS
) -> Reference:
    """The Reference of a data set's loss (`regression`: `baseline`, else chance's)."""
    if regression:
        words = f"the baseline's {number(baseline)}"
        return Reference(baseline, thresholds.regression_blowup, words, "always answering 1")
    chance = chance_loss(dataset)
    why = f"ln {round(math.exp(chance))}"
    return Reference(chance, thresholds.loss_blowup, f"chance's {chance:.2f}", why)


def point_reference(point: Point, thresholds: Thresholds = THRESHOLDS) -> Reference:
    """The point's loss Reference (`loss_reference`)."""
    dataset = point.condition.get("dataset")
    return loss_reference(dataset, point.regression, point.baseline, thresholds)


def huge_losses(losses: Iterable[Any], reference: Reference) -> list[float]:
    """The losses that say the training blew up, in order: over the reference's multiple of
    its loss, or not a finite number (nan; a record writes one as null). Other values say
    nothing."""
    found = []
    for loss in losses:
        if loss is None or (isinstance(loss, (int, float)) and not math.isfinite(loss)):
            found.append(math.nan)
        elif isinstance(loss, (int, float)) and loss > reference.multiple * reference.loss:
            found.append(float(loss))
    return found


@dataclass(frozen=True)
class HugeLoss:
    """Finished runs whose final test loss is far above chance's, and the likely cause."""

    loss: float  # the largest
    runs: int  # runs over the threshold
    seeds: int  # in the point
    reference: Reference  # chance's loss, or a regression's baseline
    cause: str  # "forward": the activations grow with depth; "gain": --init-gain; "updates"
    scale_factor: float  # the activations' scale factor at step 0
    gain: Any  # --init-gain, as recorded
    lr: Any  # the learning rate, as recorded


def huge_final_loss(
    point: Point, found: Profile, thresholds: Thresholds = THRESHOLDS
) -> HugeLoss | None:
    """A final test loss far above chance's (a regression's baseline's) in the finished runs;
    None when none is."""
    reference = point_reference(point, thresholds)
    losses = stats.finite(r.finished.get("test_loss") for r in point.ok)
    huge = huge_losses(losses, reference)
    if not huge:
        return None
    config = point.runs[0].config
    gain = setting_value(config, "init_gain")
    if found.scale_factor > thresholds.scale_blowup:  # the forward pass, not the steps
        cause = "forward"
    elif isinstance(gain, (int, float)) and gain > 1:
        cause = "gain"
    else:
        cause = "updates"
    return HugeLoss(
        max(huge),
        len(huge),
        len(point.runs),
        reference,
        cause,
        found.scale_factor,
        gain,
        config.get("lr"),
    )


@dataclass(frozen=True)
class LossAlarm:
    """A run's latest loss says the training blew up (or, at step 0, that the init did)."""

    loss: float  # nan: not a finite number
    step: Any  # the latest probe's
    reference: Reference  # chance's loss, or a regression's baseline


def loss_alarm(
    probes: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    config: dict[str, Any],
    thresholds: Thresholds = THRESHOLDS,
) -> LossAlarm | None:
    """The `huge_losses` rule on the latest rows of a run still training: its latest probe's
    loss, and the test loss of an epoch row written last; None when neither is huge."""
    latest = probes[-1]
    # A watched model's probe rows carry the loss as null when the hooks saw none (no probe
    # batch): only its epoch rows say anything about the loss.
    blind = watched(config) and config.get("probe_size") is None
    last_rows = [*([] if blind else [latest]), *(r for r in rows[-1:] if r.get("kind") == "epoch")]
    # A key written as null is a non-finite number; a key never written says nothing.
    losses = [row[key] for row in last_rows for key in ("loss", "test_loss") if key in row]
    reference = row_reference(rows, config, thresholds)
    huge = huge_losses(losses, reference)
    return LossAlarm(huge[0], latest.get("step"), reference) if huge else None


def row_reference(
    rows: Sequence[dict[str, Any]], config: dict[str, Any], thresholds: Thresholds = THRESHOLDS
) -> Reference:
    """The loss Reference of a run still training: a regression's baseline from its latest
    epoch row that records one (ADDING_BASELINE before its first epoch)."""
    regression = task_of(config) == REGRESSION
    baselines = stats.finite(row.get("baseline_loss") for row in rows if row.get("kind") == "epoch")
    baseline = baselines[-1] if baselines else ADDING_BASELINE
    return loss_reference(config.get("dataset"), regression, baseline, thresholds)


@dataclass(frozen=True)
class Grown:
    """Gradient norms that grew huge during training from under the threshold at step 0."""

    peak: Peak  # the largest after step 0
    init: float  # the largest at step 0


def grown_gradients(
    probes: Sequence[dict[str, Any]], thresholds: Thresholds = THRESHOLDS
) -> Grown | None:
    """A run's probe rows (step 0's first) whose gradient norms passed `grad_norm_huge` after
    step 0 from under it at step 0; None when they did not."""
    init = largest(probes[0].get("grad_norms") or [])[0] if probes else math.nan
    later = [p for row in probes[1:] if (p := peak(row.get("grad_norms") or [], row.get("step")))]
    highest = max(later, key=lambda p: p.norm, default=None)
    if highest is not None and highest.norm > thresholds.grad_norm_huge > init:
        return Grown(highest, init)
    return None


def grown_in_point(point: Point, thresholds: Thresholds = THRESHOLDS) -> Grown | None:
    """`grown_gradients` over the point's finished runs: the run whose norms grew largest."""
    grown = [g for run in point.ok if (g := grown_gradients(run.rows("probe"), thresholds))]
    return max(grown, key=lambda g: g.peak.norm, default=None)


def huge_at_init(point: Point, thresholds: Thresholds = THRESHOLDS) -> Peak | None:
    """Gradient norms over `grad_norm_huge` at step 0 in any run: the largest; else None."""
    norms = [largest(r.finished.get("grad_norms_init") or []) for r in point.runs]
    norms = [n for n in norms if math.isfinite(n[0])]
    if not norms:
        return None
    norm, layer = max(norms)
    return Peak(norm, layer, 0) if norm > thresholds.grad_norm_huge else None


@dataclass(frozen=True)
class LayerShare:
    """The layer with the largest share of dead (or saturated) units."""

    layer: int  # from 1
    share: float  # a fraction
    over: bool  # at or over the threshold: worth a finding


def worst_layer(values: np.ndarray, threshold: float) -> LayerShare | None:
    """The layer whose share is largest, and whether it reaches `threshold`; None when no
    layer's share was measured."""
    if not np.isfinite(values).any():
        return None
    worst = int(np.nanargmax(values))
    return LayerShare(worst + 1, float(values[worst]), bool(values[worst] >= threshold))


def dead_units(values: np.ndarray, thresholds: Thresholds = THRESHOLDS) -> LayerShare | None:
    """The layer with the most dead units (a share per layer: the training set's after an
    epoch, or a probe batch's); `over` at `dead_fraction`."""
    return worst_layer(values, thresholds.dead_fraction)


def saturated_units(values: np.ndarray, thresholds: Thresholds = THRESHOLDS) -> LayerShare | None:
    """The layer with the most saturated activations; `over` at `saturated_fraction`."""
    return worst_layer(values, thresholds.saturated_fraction)


def unit_failure(point: Point, thresholds: Thresholds = THRESHOLDS) -> LayerShare | None:
    """The layer with the most dead (rectifiers) or saturated units at the end of training,
    where it is over its threshold; None otherwise."""
    key = point.health_key
    if key is None or not point.ok:
        return None
    values, _, _ = point.result_layers(key, point.ok)
    share = (
        dead_units(values, thresholds)
        if key == "dead_fraction"
        else saturated_units(values, thresholds)
    )
    return share if share and share.over else None


def units_hurt(point: Point, thresholds: Thresholds = THRESHOLDS) -> bool:
    """Dead or saturated units over their threshold that hurt: the net did not learn, or half
    of a layer's units pass no gradient. Dead and saturated units are judged alike."""
    share = unit_failure(point, thresholds)
    if share is None:
        return False
    return at_chance(point, thresholds) or share.share >= thresholds.units_hurt


def dead_at_init(point: Point) -> int:
    """The first hidden layer (from 1) whose every unit is dead at step 0 in every run (a
    rectifier net whose signal is exactly 0 for that reason); 0 when none is."""
    if point.activation.family != "rectifier":
        return 0
    lists = [numbers(first_probe(r).get("dead_fraction") or []) for r in point.runs]
    if not lists or len({x.size for x in lists}) != 1 or not lists[0].size:
        return 0
    whole = np.all(np.stack(lists) >= 1, axis=0)
    return int(np.argmax(whole)) + 1 if whole.any() else 0


def born_dead(run: RunRecords) -> int:
    """The first hidden layer (from 1) whose every unit is dead at step 0 on the probe batch
    (zero for each of its samples); 0 when none is."""
    whole = numbers(first_probe(run).get("dead_fraction") or []) >= 1
    return int(np.argmax(whole)) + 1 if whole.any() else 0


@dataclass(frozen=True)
class BornDead:
    """The runs of a point whose back-propagated signal reaching layer 1 is exactly 0 at step 0,
    and where: the group's factor is the other runs' (a factor of 0 has no logarithm)."""

    runs: int  # of the point's runs, those with a whole layer dead at step 0
    of: int  # the point's runs
    layers: dict[int, int]  # first dead hidden layer -> runs
    probe: str  # what 'dead' was measured on, as a sentence says it
    underflow: int = 0  # runs whose signal is exactly 0 with no layer dead: too small for float32
    unit: str = "seeds"  # what the runs are: a watched model's are "runs"

    @property
    def rest(self) -> int:
        """The runs that pass a gradient: the group's factors are theirs."""
        return self.of - self.runs - self.underflow


def born_dead_runs(point: Point) -> BornDead | None:
    """The point's runs born dead (`BornDead`); None when every run passes a gradient."""
    zero = [r for r in point.runs if run_factor(run_signal(r), reverse=False) == 0]
    layers = Counter(layer for r in zero if (layer := born_dead(r)))
    if not layers:
        return None  # no run born dead (a signal of 0 in some is an underflow)
    config = point.runs[0].config
    size = config.get("probe_size")
    probe = (
        "every sample of the measured batch"
        if watched(config)
        else f"each of the {size} probe images"
        if isinstance(size, int)
        else "every probe image"
    )
    dead = sum(layers.values())
    unit = "runs" if watched(config) else "seeds"
    layers_of = dict(sorted(layers.items()))
    return BornDead(dead, len(point.runs), layers_of, probe, len(zero) - dead, unit)


def dead_layer_in_some_run(point: Point) -> bool:
    """A rectifier net with a whole hidden layer dead at step 0 in at least one run, so that
    no gradient passes there: what feeds that layer is the cure, not the init's scale."""
    return point.activation.family == "rectifier" and born_dead_runs(point) is not None


def learned_well(point: Point, thresholds: Thresholds = THRESHOLDS) -> bool:
    """The point's mean test accuracy is more than half way from chance to 100 % (55 % on 10
    classes): it learned, not merely left chance. A regression's test loss, more than half way
    from its baseline to 0."""
    if point.regression:
        far = (1 - thresholds.far_above_chance) * point.baseline
        return bool(point.scores) and point.score.mean < far
    chance = chance_level(point.condition.get("dataset"))
    far = chance + thresholds.far_above_chance * (1 - chance)
    return bool(point.accuracies) and point.accuracy.mean > far


def at_chance(point: Point, thresholds: Thresholds = THRESHOLDS) -> bool:
    """The point's mean test accuracy is within `chance_margin` of chance: it did not learn. A
    regression's test loss, within `baseline_margin` of its baseline's or above it."""
    if point.regression:
        return bool(point.scores) and at_baseline(point.score.mean, point.baseline, thresholds)
    chance = chance_level(point.condition.get("dataset"))
    return bool(point.accuracies) and point.accuracy.mean < chance + thresholds.chance_margin


def at_baseline(loss: float, baseline: float, thresholds: Thresholds = THRESHOLDS) -> bool:
    """A regression's test loss no better than its baseline's, within `baseline_margin`."""
    return loss > (1 - thresholds.baseline_margin) * baseline


@dataclass(frozen=True)
class Steps:
    """The optimizer's steps, from the update ratio ||dW|| / ||W|| of each weighted layer: at
    step 0 (geometric means over seeds) and the largest at any probe of any run."""

    ratios: np.ndarray  # per weighted layer at step 0, input side first
    peak: Peak | None  # the largest update ratio recorded: its size, its layer, its step
    optimizer: str  # the registry's name, or a watched optimizer's class name in lower case
    momentum: float

    @property
    def first(self) -> float:
        """Layer 1's update ratio at step 0; nan when not recorded."""
        return float(self.ratios[0]) if self.ratios.size else math.nan

    @property
    def last(self) -> float:
        """The output layer's update ratio at step 0; nan when not recorded."""
        return float(self.ratios[-1]) if self.ratios.size else math.nan

    @property
    def relative(self) -> float:
        """Layer 1's step over the output layer's, at step 0: how much slower it learns."""
        return self.first / self.last if self.last > 0 and self.first >= 0 else math.nan

    @property
    def rescales(self) -> bool | None:
        """Whether the optimizer divides each weight's step by its own gradient's running size;
        None for an optimizer the registry does not know (a watched model's)."""
        known = OPTIMIZERS.get(self.optimizer)
        return known.rescales if known else None

    @property
    def label(self) -> str:
        """'Adam', 'SGD with momentum 0.9', or a watched model's optimizer as recorded."""
        known = OPTIMIZERS.get(self.optimizer)
        label = known.label if known else (self.optimizer or "the optimizer")
        sgd = self.optimizer == "sgd"  # the one optimizer that takes --momentum
        return f"{label} with momentum {self.momentum:g}" if sgd and self.momentum else label


def steps(point: Point) -> Steps | None:
    """The point's Steps; None where its records hold no update ratio (older records, a model
    watched without its optimizer)."""
    lists = [numbers(first_probe(r).get("update_ratio") or []) for r in point.runs]
    ratios = mean_profile(lists)
    if ratios.size:  # a layer no run moved is 0, not left out of the geometric mean
        ratios[np.all(np.stack([x for x in lists if x.size]) == 0, axis=0)] = 0.0
    peaks = [
        found
        for run in point.runs
        for row in run.rows("probe")
        if (found := peak(row.get("update_ratio") or [], row.get("step")))
    ]
    return steps_found(ratios, peaks, point.runs[0].config)


def probe_steps(probes: Sequence[dict[str, Any]], config: dict[str, Any]) -> Steps | None:
    """One run's Steps from its probe rows so far (the live line's): the step-0 probe's update
    ratios and the largest at any probe; None where the rows hold none."""
    first = probes[0] if probes and probes[0].get("step") == 0 else {}
    peaks = [
        found for row in probes if (found := peak(row.get("update_ratio") or [], row.get("step")))
    ]
    return steps_found(numbers(first.get("update_ratio") or []), peaks, config)


def steps_found(ratios: np.ndarray, peaks: Sequence[Peak], config: dict[str, Any]) -> Steps | None:
    """Steps of step-0 `ratios` and the largest of `peaks` under the config's optimizer; None
    when there are neither."""
    if not ratios.size and not peaks:
        return None
    momentum = setting_value(config, "momentum")
    return Steps(
        ratios,
        max(peaks, key=lambda p: p.norm, default=None),
        str(config.get("optimizer") or ""),
        float(momentum) if isinstance(momentum, (int, float)) else 0.0,
    )


def slow_first_layers(found: Steps, thresholds: Thresholds = THRESHOLDS) -> bool:
    """Layer 1's steps are an order of magnitude slower than the output layer's at step 0."""
    return found.relative < thresholds.steps_slow


def large_steps(found: Steps, thresholds: Thresholds = THRESHOLDS) -> Peak | None:
    """The largest step, where it moved a layer by `steps_large` of its weights or more."""
    return found.peak if found.peak and found.peak.norm >= thresholds.steps_large else None


def small_steps(found: Steps, thresholds: Thresholds = THRESHOLDS) -> Peak | None:
    """The largest step, where even it stayed under `steps_tiny` of a layer's weights."""
    return found.peak if found.peak and found.peak.norm < thresholds.steps_tiny else None


@dataclass(frozen=True)
class ThroughTime:
    """What a point's (or a run's) records say through time: its layers at the first probe
    and at the last (None where not probed after the first), and the profile the verdict
    judges: after training where measured, since a gated cell's gates learn to keep the
    gradient (an LSTM's at initialisation keeps 0.5 to 0.73 of it per step), else the first."""

    first: TimeProfile
    last: TimeProfile | None

    @property
    def judged(self) -> TimeProfile:
        return self.last or self.first


def through_time(point: Point) -> ThroughTime | None:
    """The point's ThroughTime; None where its records hold no time profile (an MLP)."""
    first = time_profile(point)
    return ThroughTime(first, time_profile(point, final=True)) if first else None


def weakest(found: TimeProfile) -> TimeLayer | None:
    """The layer whose gradient reaching step 1 is the smallest share of step T's."""
    return min(found.measured, key=lambda layer: layer.judged_factor, default=None)


def vanishing_through_time(
    found: TimeProfile, thresholds: Thresholds = THRESHOLDS
) -> TimeLayer | None:
    """The layer whose gradient vanishes the most from step T back to step 1, where it falls
    under `time_vanishing`; None where none does."""
    layer = weakest(found)
    return layer if layer is not None and layer.judged_factor < thresholds.time_vanishing else None


@dataclass(frozen=True)
class TimePeak:
    """The largest growth through time of any probe: step 1's norm over step T's."""

    layer: TimeLayer  # at that probe
    step: Any  # the probe's training step
    first: bool  # the run's first probe (at initialisation where its step is 0)


def exploding_through_time(
    runs_rows: Sequence[Sequence[dict[str, Any]]],
    config: dict[str, Any],
    thresholds: Thresholds = THRESHOLDS,
) -> TimePeak | None:
    """The first probe at which a recurrent layer's gradient through time became non-finite
    (a record writes it as null), else the probe whose growth from step T back to step 1 is the
    largest, where it is over `time_exploding`; None where neither is. `runs_rows` holds each
    run's probe rows that have a time profile."""
    largest: TimePeak | None = None
    for rows in runs_rows:
        for index, row in enumerate(rows):
            found = TimeProfile.of_rows([row], config, final=False)
            for layer in found.layers if found else ():
                peak = TimePeak(layer, row.get("step"), index == 0)
                if layer.nonfinite:
                    return peak
                if layer.growth > (largest.layer.growth if largest else -math.inf):
                    largest = peak
    if largest is not None and largest.layer.growth > thresholds.time_exploding:
        return largest
    return None


def exploding_in_point(point: Point, thresholds: Thresholds = THRESHOLDS) -> TimePeak | None:
    """`exploding_through_time` over every run of the point (a diverged one's probes before)."""
    return exploding_through_time(
        [time_rows(run) for run in point.runs], point.runs[0].config, thresholds
    )


@dataclass(frozen=True)
class GateFinding:
    """A layer's gate, and the number behind the finding: a memory gate's mean (closed), or the
    share of a gate's values under 0.05 or over 0.95 (saturated)."""

    layer: TimeLayer
    gate: str
    value: float


def closed_gates(found: TimeProfile, thresholds: Thresholds = THRESHOLDS) -> GateFinding | None:
    """The layer whose memory gate (an LSTM's forget gate, a GRU's update gate) keeps the
    least per step, where its mean is under `gate_closed`; None otherwise."""
    kept = [GateFinding(layer, *keeping) for layer in found.layers if (keeping := layer.keeping)]
    least = min(kept, key=lambda item: item.value, default=None)
    return least if least is not None and least.value < thresholds.gate_closed else None


def saturated_gates(found: TimeProfile, thresholds: Thresholds = THRESHOLDS) -> GateFinding | None:
    """The gate whose values sit the most at 0 or 1, where that share reaches
    `gates_saturated`; None otherwise."""
    shares = [
        (layer, gate, share) for layer in found.layers for gate, share in layer.saturated.items()
    ]
    if not shares:
        return None
    layer, gate, share = max(shares, key=lambda item: item[2])
    return GateFinding(layer, gate, share) if share >= thresholds.gates_saturated else None
