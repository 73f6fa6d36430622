"""The diagnosis: plain-language findings computed from the groups, every threshold they use
in one place (`Thresholds`), the t-tests that judge accuracy gaps and the rule for the depth at
which an activation stops learning."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vanishing import stats
from vanishing.activations import SATURATION_FRACTION
from vanishing.data import DATASETS
from vanishing.report.formats import MISSING, UNDERFLOW, number, percent, percent2
from vanishing.report.results import DepthSeries, Group, by_setting, depth_series


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
CHANCE_CLASSES = 10  # the chance level's class count for a data set missing from the registry


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
        mean, std = group.accuracy.mean, group.accuracy.std
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
    epochs = len(group.ok[0].finished.get("history", []))
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
        return {"paired t-test": "paired", "Welch's t-test": "Welch"}.get(self.test, MISSING)


def gap_test(a: Group, b: Group, thresholds: Thresholds = THRESHOLDS) -> Gap:
    """A paired t-test when both groups ran the same seeds, Welch's t-test otherwise."""
    if b.accuracy.mean > a.accuracy.mean:
        a, b = b, a
    by_seed_a, by_seed_b = dict(a.seed_accuracies), dict(b.seed_accuracies)
    n_a, n_b = len(a.accuracies), len(b.accuracies)
    seeds = f"{n_a} seeds" if n_a == n_b else f"{n_a} and {n_b} seeds"
    difference = a.accuracy.mean - b.accuracy.mean
    if min(n_a, n_b) < 2:
        return Gap(a, b, difference, "", seeds, math.nan, False)
    # Same seeds, each once: the same initial weights and batch order, so pair them.
    if len(by_seed_a) == n_a and len(by_seed_b) == n_b and by_seed_a.keys() == by_seed_b.keys():
        shared = sorted(by_seed_a, key=str)
        test: stats.PairedTest | stats.WelchTest = stats.paired_test(
            [by_seed_a[s] for s in shared], [by_seed_b[s] for s in shared]
        )
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
    best = max(scored, key=lambda g: g.accuracy.mean)
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


def stop_rules(groups: Sequence[Group], thresholds: Thresholds = THRESHOLDS) -> list[StopRule]:
    """Per data set, the accuracy below which a depth counts as not learning."""
    rules = []
    for dataset in dict.fromkeys(g.setting.get("dataset") for g in groups):
        scored = [g for g in groups if g.setting.get("dataset") == dataset and g.accuracies]
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
                "missing": UNDERFLOW if group.ratio_underflow else MISSING,
            }
        )
    return rows
