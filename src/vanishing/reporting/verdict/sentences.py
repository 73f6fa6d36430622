"""What the rules found, in words: the sentences of a point's verdict (and the live line's shared
ones), each naming the layers, the factor and the step behind it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vanishing.reporting.formats import number, percent, percent2
from vanishing.reporting.results import Point, numbers
from vanishing.reporting.verdict.profile import Profile, per_layer, setting_value
from vanishing.reporting.verdict.rules import (
    BornDead,
    Divergence,
    GateFinding,
    Gradient,
    Grown,
    HugeLoss,
    LayerShare,
    Peak,
    Steps,
    ThroughTime,
    TimePeak,
    WeightNote,
    at_baseline,
    at_chance,
    dead_units,
    saturated_units,
)
from vanishing.reporting.verdict.thresholds import (
    SATURATED,
    THRESHOLDS,
    Thresholds,
    chance_level,
)
from vanishing.reporting.verdict.time_profile import TimeLayer, TimeProfile
from vanishing.settings import naming
from vanishing.settings.naming import NUMBERED, LayerNames

UNDERFLOW = (
    "At initialisation the weight gradient reaching layer 1 is exactly 0 at every seed: "
    "it underflowed, too small for float32."
)
LEFT_OUT = "The diverged runs are left out of accuracy and loss."
NO_LEARNING = "Did not learn, though no gradient failure shows at initialisation."
NO_GRADIENT = "No gradient measured at initialisation."


def shown(value: Any) -> str:
    """A record's number as the command line writes it (`1`, `0.5`); anything else as it is."""
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def fold(factor: float) -> str:
    """How many times: 23187 -> '23,000', 3.42 -> '3.4', 2.1e9 -> '2.1e+09'."""
    if factor < 10:
        return f"{factor:.2g}"
    if factor < 1e6:
        return f"{float(f'{factor:.2g}'):,.0f}"
    return f"{factor:.1e}"


def times(factor: float) -> str:
    """A factor after '×': 0 where it is exactly 0 (underflow), else as `number` writes it."""
    return "0" if factor == 0 else number(factor)


def change(factor: float, only: str = "") -> str:
    """How a factor within the healthy band reads: 'keeps its size' within 2x, else which way
    and how far ('shrinks 5.7-fold'; `only` before the number where the band is news)."""
    if 0.5 <= factor <= 2:
        return "keeps its size"
    return f"{'shrinks' if factor < 1 else 'grows'} {only}{fold(max(factor, 1 / factor))}-fold"


def layer_name(layer: int, layers: int, names: LayerNames = NUMBERED) -> str:
    """'layer 3', or 'the output layer' for the last Linear layer; a watched model's module
    name ('conv3')."""
    return names.weighted(layer, layers)


def last_to_first(names: LayerNames, layers: int) -> str:
    """'the last hidden layer to layer 1', or a watched model's 'conv4 to conv1'."""
    last = names.hidden(layers) if names.named else "the last hidden layer"
    return f"{last} to {names.hidden(1)}"


def signal_sentence(
    profile: Profile,
    word: str,
    rectifier: bool = False,
    dead_layer: int = 0,
    probe: str = "every sample",
) -> str:
    """'Vanishing gradient: the back-propagated signal shrinks 23,000-fold from layer 30 to
    layer 1 (0.71 per layer).'; `dead_layer`: the hidden layer whose every unit is dead at
    step 0, which is why a signal of exactly 0 is."""
    factor, names = profile.signal_factor, profile.names
    span = f"from {names.hidden(profile.last)} to {names.hidden(1)}"
    if factor == 0 and dead_layer:
        return (
            f"Vanishing gradient: the back-propagated signal reaching {names.hidden(1)} is "
            f"exactly 0 because every unit of {names.hidden(dead_layer)} is dead at step 0 "
            f"(zero for {probe}): no gradient passes it back."
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
    span = f"from {names.hidden(1)} to {names.hidden(profile.last)}"
    if word == "forward-collapse" and profile.by_spread:
        return spread_sentence(profile, span)
    if factor == 0:
        return (
            f"Forward collapse: the activations' scale (std) falls to exactly 0 {span}: "
            "the output no longer depends on the input."
        )
    each = f"({profile.scale_per_layer:.2f} per layer)"
    if word == "forward-collapse":
        return (
            f"Forward collapse: the activations' scale (std) falls {fold(1 / factor)}-fold "
            f"{span} {each}; the output hardly depends on the input."
        )
    return f"Forward blow-up: the activations' scale (std) grows {fold(factor)}-fold {span} {each}."


def spread_sentence(profile: Profile, span: str) -> str:
    """'Forward collapse: how much the activations depend on the input (each unit's std across
    samples) falls 1.0e+08-fold from layer 1 to layer 40 (0.63 per layer), though their std
    keeps 0.26 of its size: ...'."""
    factor = profile.spread_factor
    falls = "falls to exactly 0" if factor == 0 else f"falls {fold(1 / factor)}-fold"
    each = f" ({per_layer(factor, profile.last - 1):.2f} per layer)" if factor > 0 else ""
    kept = profile.scale_factor
    biases = (
        f", though their std keeps ×{number(kept)} of its size (the spread biases put between "
        "units, which does not depend on the input)"
        if kept >= THRESHOLDS.scale_collapse
        else ""
    )
    logits = (
        f"; the logits vary {number(profile.logits_spread)} across samples"
        if math.isfinite(profile.logits_spread)
        else ""
    )
    return (
        f"Forward collapse: how much the activations depend on the input (each unit's std "
        f"across samples) {falls} {span}{each}{biases}{logits}: the output "
        f"{'no longer depends' if factor == 0 else 'hardly depends'} on the input."
    )


def ratio_sentence(word: str, ratio: float, names: LayerNames, at: str) -> str:
    """'Vanishing gradient: layer 1 receives 0.003 of the output layer's weight gradient at
    initialisation.': a net of one hidden layer, judged by its weight-gradient ratio."""
    return f"{word.capitalize()} gradient: {names.share(number(ratio))} at {at}."


def gradient_sentences(
    found: Profile,
    step0: Gradient,
    rectifier: bool = False,
    dead_layer: int = 0,
    probe: str = "every sample",
) -> list[tuple[str, str]]:
    """(kind, sentence) for each failure step 0 shows (`Gradient.kinds`)."""
    said = []
    for kind in step0.kinds:
        if not step0.by_signal:
            sentence = ratio_sentence(kind, step0.ratio, found.names, "initialisation")
        elif kind == step0.signal:
            sentence = signal_sentence(found, kind, rectifier, dead_layer, probe)
        else:
            sentence = scale_sentence(found, kind)
        said.append((kind, sentence))
    return said


def signal_evidence(found: Profile) -> str:
    """'The back-propagated signal keeps its size from layer 20 to layer 1 (×0.93).': a healthy
    signal, as evidence under a verdict headed by another failure."""
    return (
        f"The back-propagated signal {change(found.signal_factor)} from "
        f"{found.names.hidden(found.last)} to {found.names.hidden(1)} "
        f"(×{number(found.signal_factor)})."
    )


def head_sentence(found: Profile) -> str:
    """Why a watched model's head is left out of the signal's factor (`profile.compared`)."""
    names = found.names
    head = [names.hidden(layer) for layer in range(found.last + 1, found.layers + 1)]
    return (
        f"{', '.join(head)} {'sees' if len(head) == 1 else 'see'} one position per sample (a "
        f"pooler's or a head's) where the layers before see every position of the sequence: "
        f"the signal is compared across those, from {names.hidden(found.last)} to "
        f"{names.hidden(1)}."
    )


def later_signal_sentence(
    when: str, word: str, factor: float, names: LayerNames, layers: int
) -> str:
    """'After training (last probe) the signal reads healthy: ×0.5 from the last hidden layer
    to layer 1.' (`when` opens it)."""
    return f"{when} the signal reads {word}: ×{times(factor)} from {last_to_first(names, layers)}."


def weight_note_sentence(note: WeightNote, found: Profile, ratio: float) -> str:
    """Why the weight-gradient ratio reads otherwise than the signal."""
    names = found.names
    if note.kind == "cancel":
        return (
            f"The weight gradients look even ({names.gets(number(ratio))}) only because "
            "the two cancel: a weight gradient is the signal times the layer's input."
        )
    if note.looks == "exploding":
        return (
            f"The weight-gradient ratio ({number(ratio)}, {names.share_short()}) alone "
            f"would read as exploding, but the signal reaching {names.hidden(1)} does not "
            "grow."
        )
    why = (
        f": the activations grow {fold(found.scale_factor)}-fold with depth, which "
        "enlarges the output layer's weight gradient"
        if note.grows
        else ""
    )
    return (
        f"The weight-gradient ratio ({number(ratio)}, {names.share_short()}) alone "
        f"would read as {note.looks}, but the signal reaching {names.hidden(1)} does not "
        f"shrink{why}."
    )


def divergence_sentence(found: Divergence, linear_layers: int, names: LayerNames) -> str:
    """'Blew up: 3 of 3 runs diverged (the loss became non-finite, by step 120); at step 100,
    the last probe before, gradient norms reached 1.2e+05 (layer 1).'"""
    at = f", by step {found.step}" if found.step is not None else ""  # at probes and epoch ends
    sentence = (
        f"Blew up: {found.runs} of {found.seeds} runs diverged (the loss became non-finite{at})"
    )
    if found.peak is not None:
        sentence += (
            f"; at step {found.peak.step}, the last probe before, gradient norms reached "
            f"{number(found.peak.norm)} ({layer_name(found.peak.layer, linear_layers, names)})"
        )
    return sentence + "."


def huge_loss_sentence(found: HugeLoss) -> str:
    """'Blew up: the final test loss is 6.0e+25, far above chance's 2.30 (ln 10): the updates
    exploded at lr 1e+09.'"""
    share = f" in {found.runs} of {found.seeds} runs" if found.seeds > 1 else ""
    if found.cause == "forward":
        cause = (
            "the logits are huge because the activations' scale grows "
            f"{fold(found.scale_factor)}-fold with depth"
        )
    elif found.cause == "gain":
        cause = (
            f"the weights start at {found.gain:g} times the init's own scale (--init-gain), and "
            "the logits with them"
        )
    else:
        lr = found.lr
        cause = "the updates exploded" + (f" at lr {lr:g}" if isinstance(lr, (int, float)) else "")
    return (
        f"Blew up: the final test loss is {number(found.loss)}{share}, far above "
        f"{found.reference.words} ({found.reference.why}): {cause}."
    )


def grown_sentence(found: Grown, linear_layers: int, names: LayerNames) -> str:
    """'Exploding during training: gradient norms grew to 5.0e+04 (layer 1) by step 40, from
    0.1 at step 0.'"""
    top = found.peak
    return (
        f"Exploding during training: gradient norms grew to {number(top.norm)} "
        f"({layer_name(top.layer, linear_layers, names)}) by step {top.step}, from "
        f"{number(found.init)} at step 0."
    )


def huge_init_sentence(found: Peak, linear_layers: int, names: LayerNames) -> str:
    """'Huge gradients at initialisation: norms up to 2.0e+04 (layer 1).'"""
    return (
        f"Huge gradients at initialisation: norms up to {number(found.norm)} "
        f"({layer_name(found.layer, linear_layers, names)})."
    )


def units_sentences(point: Point, thresholds: Thresholds = THRESHOLDS) -> list[tuple[str, str]]:
    """(kind, sentence): dead units for rectifiers, saturation for the others, a caveat for
    linear; kind 'dead' or 'saturated' when a layer is over its threshold, else 'note'."""
    key = point.health_key
    if key is None:
        return [
            (
                "note",
                "A linear activation has slope 1 everywhere, so it takes nothing from the "
                "gradient (only the weights' scale can), but however deep the network is it "
                "computes a single linear map: a linear classifier.",
            )
        ]
    if not point.ok:
        return []
    values, _, _ = point.result_layers(key, point.ok)
    if key == "dead_fraction":
        dead = dead_units(values, thresholds)
        if dead is None:
            return []
        if point.watched:
            return watched_dead(point, values, dead)
        return dead_sentences(point, values, dead)
    saturated = saturated_units(values, thresholds)
    if saturated is None:
        return []
    name = point.names.hidden(saturated.layer)
    if saturated.over:
        return [
            (
                "saturated",
                f"Saturated: {percent(saturated.share)} of {point.names.units(saturated.layer)} "
                f"activations are saturated at the end of training (slope below {SATURATED} of "
                "its maximum): little gradient passes them.",
            )
        ]
    if saturated.share == 0:
        return [("note", "No saturated activations at the end of training.")]
    return [
        (
            "note",
            f"Little saturation: at most {percent(saturated.share)} of a layer's activations "
            f"({name}) are saturated at the end of training.",
        )
    ]


def overall(point: Point, values: np.ndarray) -> float:
    """A share per hidden layer over all the hidden units, each layer weighted by its width."""
    widths = np.array(point.hidden, dtype=float)
    return float(np.nansum(values * widths) / widths.sum())


def dead_sentences(point: Point, values: np.ndarray, dead: LayerShare) -> list[tuple[str, str]]:
    """A training run's dead units, measured on the whole training set after each epoch."""
    names = point.names
    epochs = len(point.ok[0].finished.get("history", []))
    if dead.over:
        everywhere = percent(overall(point, values))
        # A recurrent run counts them on its last probe's sequences, at every step (a pass
        # over every training sequence would cost an epoch's evaluation).
        where = (
            "at every step of every probe sequence"
            if naming.recurrent(point.runs[0].config)
            else "on every training image"
        )
        sentence = (
            f"{percent(dead.share)} of {names.units(dead.layer)} units are dead after epoch "
            f"{epochs} (zero output {where}); {everywhere} of all hidden units."
        )
        first = point.epoch_layers("dead_fraction")[1]
        worst = dead.layer - 1
        if epochs > 1 and first.size and worst < first.shape[1]:
            sentence += f" After epoch 1 it was {percent(first[0, worst])}."
        return [("dead", "Dead units: " + sentence)]
    if dead.share == 0:
        return [
            ("note", f"No dead units after epoch {epochs} (checked on the whole training set).")
        ]
    return [
        (
            "note",
            f"No dead layer: at most {percent(dead.share)} of a layer's units "
            f"({names.hidden(dead.layer)}) are dead after epoch {epochs}.",
        )
    ]


def watched_dead(point: Point, values: np.ndarray, dead: LayerShare) -> list[tuple[str, str]]:
    """Dead units of a watched model, which `watch` measures on the batches of its last few
    probes (the training steps', or the probe batch), not on the whole training set: at the
    last probe."""
    name = point.names.hidden(dead.layer)
    probes = point.ok[0].rows("probe")
    step = probes[-1].get("step") if probes else None
    at = f"at the last probe (step {step})" if step is not None else "at the last probe"
    if dead.share == 0:
        return [("note", f"No dead units {at}.")]
    if not dead.over:
        return [
            (
                "note",
                f"No dead layer: at most {percent(dead.share)} of a layer's units ({name}) "
                f"are dead {at}.",
            )
        ]
    everywhere = percent(overall(point, values))
    sentence = (
        f"Dead units: {name}: {percent(dead.share)} dead units {at}, zero for every sample "
        f"and position of the last batches measured; {everywhere} of all measured units."
    )
    first = numbers(probes[0].get("dead_fraction") or []) if len(probes) > 1 else np.zeros(0)
    worst = dead.layer - 1
    if worst < first.size and math.isfinite(first[worst]):
        sentence += f" At step {probes[0].get('step')} it was {percent(first[worst])}."
    return [("dead", sentence)]


def bound_sentence(point: Point) -> str:
    """'sigmoid's slope is at most 0.25, so its 20 hidden layers alone multiply the gradient by
    at most (0.25)^20 = 9.1e-13.'"""
    bound, depth = point.activation.derivative_bound, point.depth
    layers = "activation layers" if point.watched else "hidden layers"
    return (
        f"{point.activation.label}'s slope is at most {bound:g}, so its {depth} {layers} "
        f"alone multiply the gradient by at most ({bound:g})^{depth} = {number(bound**depth)}."
    )


def accuracy_sentence(point: Point, thresholds: Thresholds = THRESHOLDS) -> str:
    """'Test accuracy 97.10 ± 0.20 % (over 3 seeds).', with '...: chance level, it did not
    learn.' at chance; a regression's `loss_sentence`; '' when no run finished without
    diverging."""
    if point.regression:
        return loss_sentence(point, thresholds)
    accuracies = point.accuracies
    if not accuracies:
        return ""
    mean, std = point.accuracy.mean, point.accuracy.std
    spread = f" ± {100 * std:.2f}" if len(accuracies) > 1 else ""
    runs = "runs" if point.watched else "seeds"  # a watched model's runs have no seed
    over = f"over {len(accuracies)} {runs}" if len(accuracies) > 1 else f"one {runs[:-1]}"
    sentence = f"Test accuracy {100 * mean:.2f}{spread} % ({over})"
    if at_chance(point, thresholds):
        chance = chance_level(point.condition.get("dataset"))
        return f"{sentence}: chance level ({percent2(chance)}), it did not learn."
    return sentence + "."


def mse(value: float) -> str:
    """A mean squared error for a sentence: 3 significant digits ('0.004', '0.167')."""
    return f"{value:.3g}"


def baseline_words(loss: float, baseline: float, thresholds: Thresholds = THRESHOLDS) -> str:
    """Whether a regression's test loss beat its baseline: 'it beat the baseline', 'no better
    than the baseline, it did not learn', 'worse than the baseline, it did not learn'."""
    if not at_baseline(loss, baseline, thresholds):
        return "it beat the baseline"
    if loss <= baseline:
        return "no better than the baseline, it did not learn"
    return "worse than the baseline, it did not learn"


def loss_sentence(point: Point, thresholds: Thresholds = THRESHOLDS) -> str:
    """A regression's 'Test MSE 0.004 ± 0.001 (over 3 seeds; always answering 1: 0.167): it
    beat the baseline.'; '' when no run finished without diverging."""
    scores = point.scores
    if not scores:
        return ""
    mean, std = point.score.mean, point.score.std
    spread = f" ± {std:.1g}" if len(scores) > 1 else ""  # one digit: the spread's size
    runs = "runs" if point.watched else "seeds"
    over = f"over {len(scores)} {runs}" if len(scores) > 1 else f"one {runs[:-1]}"
    baseline = point.baseline
    return (
        f"Test MSE {mse(mean)}{spread} ({over}; always answering 1: {mse(baseline)}): "
        f"{baseline_words(mean, baseline, thresholds)}."
    )


def clipping_sentence(point: Point) -> str:
    """'Clipping (--clip-grad-norm 1) cut 1,875 of 1,875 steps.' for runs that clip."""
    limit = setting_value(point.runs[0].config, "clip_grad_norm")
    if limit is None:
        return ""
    clipped = [int(c) for r in point.ok if (c := r.finished.get("clipped_steps")) is not None]
    steps = [int(s) for r in point.ok if (s := r.finished.get("steps")) is not None]
    if not clipped or len(clipped) != len(point.ok) or len(steps) != len(point.ok):
        return f"Gradients were clipped to norm {shown(limit)}."
    return (
        f"Clipping (--clip-grad-norm {shown(limit)}) cut {sum(clipped):,} of {sum(steps):,} steps."
    )


def possessive(name: str) -> str:
    """'the output layer's', 'fc's'."""
    return f"{name}'s"


def update_ratios(found: Steps) -> str:
    """'update ratio ||ΔW||/||W|| 4.4e-06 against 3.4e-02 at step 0'."""
    return f"update ratio ||ΔW||/||W|| {number(found.first)} against {number(found.last)} at step 0"


def steps_sentence(found: Steps, names: LayerNames, learned: bool) -> str:
    """Whether the small gradient slows the first layers' learning: under SGD their steps
    shrink with it; Adam and RMSprop rescale each weight's step (why the seed's sigmoid net
    still learns)."""
    layers = found.ratios.size
    first, last = names.weighted(1, layers), names.weighted(layers, layers)
    ratios = update_ratios(found)
    relative = found.relative
    if relative < THRESHOLDS.steps_slow:
        moves = (
            "does not move at all"
            if relative == 0
            else f"moves {fold(1 / relative)}x slower than {last}"
        )
        if found.rescales is False:
            rule = (
                "a running sum of its gradients times the learning rate"
                if found.momentum
                else "the learning rate times its gradient"
            )
            return (
                f"The steps shrink with the gradient: under {found.label} a weight's step is "
                f"{rule}, so {first} {moves} ({ratios}) and the first layers learn the slowest."
            )
        shrink = "The steps shrink with the gradient"
        return f"{shrink}: under {found.label} {first} {moves} ({ratios})."
    rate = f"{first} moves at {fold(relative)}x {possessive(last)} rate ({ratios})"
    # Only where it learned: at step 0 Adam's step is about lr whatever the gradient, and a net
    # that did not learn may have lost its first layers' steps later.
    why = ", which is why this network still learns" if learned else ""
    if found.rescales:
        return (
            f"The gradient reaching {first} is small, but {found.label} divides each weight's "
            f"step by the running size of its own gradient: {rate}{why}."
        )
    less = "shrink less than the gradient" if relative < 1 else "do not shrink with the gradient"
    return f"The steps {less}: {rate}."


def large_steps_sentence(peak: Peak, found: Steps, names: LayerNames) -> str:
    """'Steps too large: at step 0 Adam moved layer 1 by 3.6 times its own weights' norm
    ...': the learning rate, not the gradient's flow, is what failed."""
    layer = names.weighted(peak.layer, max(found.ratios.size, peak.layer))
    at = f"at step {peak.step} " if peak.step is not None else ""
    return (
        f"Steps too large: {at}{found.label} moved {layer} by {number(peak.norm)} times its "
        f"own weights' norm in a single step (update ratio ||ΔW||/||W||); a step that large "
        "replaces the weights instead of adjusting them."
    )


def small_steps_sentence(peak: Peak, found: Steps, names: LayerNames) -> str:
    """'Steps too small: SGD's largest step moved a layer by 2.6e-05 of its weights' norm
    ...': the net did not learn because it barely moved."""
    layer = names.weighted(peak.layer, max(found.ratios.size, peak.layer))
    return (
        f"Steps too small: {possessive(found.label)} largest step moved {layer} by "
        f"{number(peak.norm)} of its weights' norm (update ratio ||ΔW||/||W||), and no step "
        "of any layer moved more: the network barely changed."
    )


def born_dead_sentence(born: BornDead, names: LayerNames) -> str:
    """'Vanishing gradient in 5 of 8 seeds: no gradient reaches layer 1 at all, because a whole
    layer is dead at step 0 (layer 9 in 3 seeds, layer 12 in 2; zero for each of the 512 probe
    images); the factors here are the other 3 seeds'.'"""
    runs = born.unit
    where = [
        f"{names.hidden(layer)} in {count}"
        + (f" {runs[:-1] if count == 1 else runs}" if index == 0 else "")
        for index, (layer, count) in enumerate(born.layers.items())
    ]
    (only,) = born.layers if len(born.layers) == 1 else (None,)
    if only:
        cause = f"every unit of {names.hidden(only)} is dead at step 0"
    else:
        cause = f"a whole layer is dead at step 0 ({', '.join(where)})"
    rest = born.rest
    others = f"other {runs[:-1]}'s" if rest == 1 else f"other {rest} {runs}'"
    underflow = (
        f"; in {born.underflow} more the signal underflowed (too small for float32)"
        if born.underflow
        else ""
    )
    factors = f"; the factors here are the {others}" if rest else ""
    return (
        f"Vanishing gradient in {born.runs} of {born.of} {runs}: no gradient reaches "
        f"{names.hidden(1)} at all, because {cause}, zero for {born.probe}{underflow}{factors}."
    )


def fixed_point_sentence(point: Point, found: Profile) -> str:
    """Why a SELU net at lecun init grows, and why that is its design: the inputs are not at
    the fixed point (MNIST's raw [0, 1] pixels), so the first layers move towards it."""
    label, init = point.activation.label, point.activation.fixed_point_init
    scale = found.scale
    moved = (
        f" (the activations' std goes from {number(float(scale[0]))} at {found.names.hidden(1)}"
        f" to {number(float(scale[-1]))} at {found.names.hidden(found.layers)})"
        if scale.size >= 2 and np.isfinite(scale[[0, -1]]).all()
        else ""
    )
    return (
        f"{label} with {init} init is self-normalising (Klambauer et al. 2017): each layer pulls "
        "its activations towards mean 0, variance 1. The inputs here are raw pixels in [0, 1], "
        f"not at that point, so the first layers grow towards it{moved}; that is the design at "
        "work, not an init too large."
    )


def units_spared(point: Point) -> str:
    """' It learned regardless (97.78 %): they cost it little, and get no cure.', after the
    dead or saturated units of a net they do not hurt (`rules.units_hurt`)."""
    if point.regression:
        accuracy = f" (test MSE {mse(point.score.mean)})" if point.scores else ""
    else:
        accuracy = f" ({100 * point.accuracy.mean:.2f} %)" if point.accuracies else ""
    return f" It learned regardless{accuracy}: under half of any layer is lost, no cure needed."


def per_step(value: float) -> str:
    """A factor per step: '0.97', or '0.999' where two decimals would read as 1."""
    return f"{value:.3f}" if abs(value - 1) < 0.01 else f"{value:.2f}"


def in_layer(layer: TimeLayer, named: bool) -> str:
    """' in lstm 1' where the layers are named (a stacked network, a watched model), else ''."""
    return f" in {layer.name}" if named else ""


def reaching(layer: TimeLayer) -> str:
    """'the gradient reaching step 1 is 1.0e-09 of what reaches step 784 (0.97 per step)',
    or where it underflowed to 0 on its way back, how far back it reaches."""
    steps = layer.steps
    if layer.factor > 0:
        return (
            f"the gradient reaching step 1 is {times(layer.factor)} of what reaches step "
            f"{steps} ({per_step(layer.per_step)} per step)"
        )
    reached = layer.reached
    if layer.cut:
        each = f" ({per_step(layer.per_step)} per step)" if math.isfinite(layer.per_step) else ""
        return (
            f"no gradient reaches steps 1 to {reached - 1} (exactly 0, not an underflow: units "
            f"at rest there pass none back, as a ReLU at 0 does); from step {reached} the "
            f"gradient is {times(layer.reached_factor)} of what reaches step {steps}{each}"
        )
    if not reached or reached == steps:
        return "the gradient reaching step 1 is exactly 0, too small for float32"
    each = f" ({per_step(layer.per_step)} per step)" if math.isfinite(layer.per_step) else ""
    return (
        f"the gradient reaching step 1 is exactly 0, too small for float32: it reaches back "
        f"only to step {reached} of {steps}, which gets {times(layer.reached_factor)} of what "
        f"reaches step {steps}{each}"
    )


def short_factor(layer: TimeLayer) -> str:
    """'3.2e-12 (0.97 per step)', '0' where it underflowed."""
    each = f" ({per_step(layer.per_step)} per step)" if math.isfinite(layer.per_step) else ""
    if layer.cut:  # steps before `reached` cut off, not vanished: the factor over the rest
        return f"0 before step {layer.reached}, {times(layer.reached_factor)} from it{each}"
    return f"{times(layer.factor)}{each}"


def same_layer(layer: TimeLayer, found: TimeProfile) -> TimeLayer | None:
    """The layer of `found` that has `layer`'s name."""
    return next((other for other in found.layers if other.name == layer.name), None)


def vanishing_time_sentence(layer: TimeLayer, found: ThroughTime, named: bool) -> str:
    """'Vanishing through time: the gradient reaching step 1 is 1.0e-09 of what reaches step
    784 (0.97 per step) after training (last probe); 3.2e-12 at initialisation.'"""
    judged = found.judged
    sentence = f"Vanishing through time{in_layer(layer, named)}: {reaching(layer)} {judged.when}"
    first = same_layer(layer, found.first) if judged is not found.first else None
    if first is not None and first.factor >= 0:
        sentence += f"; {short_factor(first)} {found.first.when}"
    return sentence + "."


def exploding_time_sentence(peak: TimePeak, named: bool) -> str:
    """'Exploding through time: the gradient reaching step 1 is 3.4e+05 times what reaches step
    100 (1.14 per step) at step 600.', or where it became non-finite, when."""
    layer = peak.layer
    at = "at initialisation" if peak.first and peak.step in (0, None) else f"at step {peak.step}"
    where = in_layer(layer, named)
    if layer.nonfinite:
        return (
            f"Exploding through time{where}: the gradient on its way back through the "
            f"sequence is no longer a finite number {at}."
        )
    if layer.peak == 1 or layer.factor == layer.growth:
        return (
            f"Exploding through time{where}: the gradient reaching step 1 is "
            f"{times(layer.factor)} times what reaches step {layer.steps} "
            f"({per_step(layer.per_step)} per step) {at}."
        )
    # The steps before the peak cut it off (units at rest) or let it fade: its height says it.
    rise = layer.growth ** (1 / (layer.steps - layer.peak)) if layer.steps > layer.peak else 1
    return (
        f"Exploding through time{where}: the gradient reaching step {layer.peak} is "
        f"{times(layer.growth)} times what reaches step {layer.steps} ({per_step(rise)} per "
        f"step) {at}."
    )


def time_evidence_sentence(layer: TimeLayer, found: ThroughTime, named: bool) -> str:
    """A gradient through time that neither vanishes nor explodes, as evidence: 'Through
    time: the gradient reaching step 1 is 0.41 of what reaches step 28 (0.97 per step) after
    training (last probe); at initialisation only 1.4e-03 (0.78 per step): training opened the
    way back.'"""
    judged = found.judged
    sentence = f"Through time{in_layer(layer, named)}: {reaching(layer)} {judged.when}"
    first = same_layer(layer, found.first) if judged is not found.first else None
    if first is not None and first.factor >= 0:
        vanished = first.judged_factor < THRESHOLDS.time_vanishing  # steps cut off: not so
        only = "only " if vanished else ""
        opened = ": training opened the way back" if vanished else ""
        sentence += f"; {found.first.when} {only}{short_factor(first)}{opened}"
    return sentence + "."


GATE_WORDS = {"forget": ("forget", "the cell"), "update": ("update", "the state")}


def closed_gate_sentence(found: GateFinding, when: str, named: bool) -> str:
    """'Closed forget gates: the forget gates keep 0.50 of the cell per step on average at
    initialisation; over 28 steps the cell alone keeps 3.7e-09 of its content.'"""
    layer = found.layer
    gate, what = GATE_WORDS.get(found.gate, (found.gate, "the state"))
    of = f" of {layer.name}" if named else ""
    over = (
        f"; over {layer.steps} steps {what} alone keeps {number(found.value ** (layer.steps - 1))} "
        "of its content"
        if layer.steps > 1 and found.value > 0
        else ""
    )
    return (
        f"Closed {gate} gates: the {gate} gates{of} keep {found.value:.2f} of {what} per step "
        f"on average {when}{over}."
    )


def saturated_gate_sentence(found: GateFinding, when: str, named: bool) -> str:
    """'Saturated gates: 62 % of the input gate's values are below 0.05 or above 0.95 after
    training (last probe): ...'."""
    of = f" of {found.layer.name}" if named else ""
    return (
        f"Saturated gates: {percent(found.value)} of the {found.gate} gate's values{of} are "
        f"below 0.05 or above 0.95 {when}: a gate there passes under a fifth of a sigmoid's "
        "largest slope back to its weights, which learn slowly."
    )


def time_bound_sentence(layer: TimeLayer, subject: str, slope: str, bound: float, when: str) -> str:
    """'A Tanh RNN's step multiplies the gradient by at most Tanh's largest slope (1) times its
    recurrent weight's largest singular value (0.57 at initialisation): at most 0.57 per step,
    (0.57)^783 = 1.2e-190 over the sequence.' (the theory line of the figure)."""
    each = bound * layer.recurrent_norm
    span = layer.steps - 1
    over = (
        f", ({each:.3g})^{span} = {number(each**span)} over the sequence"
        if each < 1 and span > 0
        else ": a bound of 1 or more does not keep the gradient from growing"
    )
    return (
        f"{subject}'s step multiplies the gradient by at most {slope} ({bound:g}) times its "
        f"recurrent weight's largest singular value ({layer.recurrent_norm:.3g} {when}): at "
        f"most {each:.3g} per step{over}."
    )
