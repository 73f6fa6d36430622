"""The diagnosis: each point's findings (`verdict`, where every threshold lives), the tests that
judge accuracy gaps and the rule for the depth at which an activation stops learning."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vanishing import stats
from vanishing.reporting.formats import MISSING, UNDERFLOW, Table, fixed, number, percent2
from vanishing.reporting.results import DepthSeries, Point, by_condition, depth_series
from vanishing.reporting.verdict import (
    THRESHOLDS,
    Thresholds,
    Verdict,
    at_chance,
    chance_level,
    judge,
)


def diagnose(point: Point, thresholds: Thresholds = THRESHOLDS) -> list[str]:
    """Plain-language findings for one point: its verdict's headline first, the evidence next,
    the cure last (`verdict.judge`)."""
    return list(judge(point, thresholds).sentences)


@dataclass(frozen=True)
class Spread:
    """The largest seed spread measured in a report: the std of test accuracy over seeds of the
    point (2 or more finished seeds) where it is largest; what a one-seed gap is set against."""

    std: float  # a fraction; nan when no point has two seeds
    point: Point | None = None


def measured_spread(points: Sequence[Point]) -> Spread:
    """The largest std over seeds among the points with at least two finished seeds."""
    spreads = [(g.accuracy.std, g) for g in points if len(g.accuracies) >= 2]
    spreads = [(std, g) for std, g in spreads if math.isfinite(std)]
    if not spreads:
        return Spread(math.nan)
    std, point = max(spreads, key=lambda item: item[0])
    return Spread(std, point)


@dataclass(frozen=True)
class Gap:
    """The test-accuracy gap between two points, and the test that judges it."""

    better: Point  # the higher mean accuracy
    worse: Point
    difference: float  # better's mean accuracy minus worse's (a fraction)
    test: str  # "paired t-test" on the same seeds, "Welch's t-test" otherwise, "" if none ran
    seeds: str  # "3 seeds", or "3 and 2 seeds" when the points differ
    p: float  # two-sided; nan when the gap cannot be judged by a t-test
    significant: bool
    # With one seed a side, what judged it instead of a t-test: "chance" (the worse did not
    # learn, the better did), "spread" (beyond the seed spread measured elsewhere), or "".
    basis: str = ""
    spread: Spread = Spread(math.nan)
    t: float = math.nan  # the t-test's statistic (better minus worse); nan when none ran

    @property
    def test_name(self) -> str:
        """The short name for a table: 'paired', 'Welch', 'vs chance', 'vs spread' or '–'."""
        names = {"paired t-test": "paired", "Welch's t-test": "Welch"}
        return names.get(self.test, f"vs {self.basis}" if self.basis else MISSING)

    @property
    def judged(self) -> bool:
        """Whether anything judged the gap: a t-test with a p-value, or a one-seed basis."""
        return bool(self.basis) or (bool(self.test) and not math.isnan(self.p))


def gap_test(
    a: Point, b: Point, thresholds: Thresholds = THRESHOLDS, spread: Spread = Spread(math.nan)
) -> Gap:
    """A paired t-test when both points ran the same seeds, Welch's t-test otherwise; with one
    seed on a side, the chance level or the seed `spread` measured elsewhere in the report."""
    if b.accuracy.mean > a.accuracy.mean:
        a, b = b, a
    by_seed_a, by_seed_b = dict(a.seed_accuracies), dict(b.seed_accuracies)
    n_a, n_b = len(a.accuracies), len(b.accuracies)
    seeds = f"{n_a} seeds" if n_a == n_b else f"{n_a} and {n_b} seeds"
    difference = a.accuracy.mean - b.accuracy.mean
    if min(n_a, n_b) < 2:
        chance = chance_level(a.condition.get("dataset"))
        far = chance + thresholds.far_above_chance * (1 - chance)
        if at_chance(b, thresholds) and a.accuracy.mean >= far:
            return Gap(a, b, difference, "", seeds, math.nan, True, "chance", spread)
        if spread.std > 0 and difference > thresholds.spread_multiple * spread.std:
            return Gap(a, b, difference, "", seeds, math.nan, True, "spread", spread)
        return Gap(a, b, difference, "", seeds, math.nan, False, "", spread)
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
    significant = bool(test.p < thresholds.p_value)
    return Gap(a, b, difference, name, seeds, test.p, significant, t=test.t)


def p_text(p: float) -> str:
    """'p = 0.031', or 'p < 0.0001' where two digits would read as zero or as 1e-31."""
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.2g}"


def one_seed(gap: Gap) -> str:
    """'each ran one seed', 'ReLU ran one seed', or '' when both sides ran several."""
    single = [g.label for g in (gap.better, gap.worse) if len(g.accuracies) < 2]
    if not single:
        return ""
    return "each ran one seed" if len(single) == 2 else f"{single[0]} ran one seed"


def verdict(gap: Gap, thresholds: Thresholds = THRESHOLDS) -> str:
    """One plain sentence on a gap: larger than the seed spread, within it, or not judgeable."""
    prefix = (
        f"The accuracy gap between {gap.better.label} and {gap.worse.label} "
        f"({100 * gap.difference:.2f} points)"
    )
    spread, multiple = gap.spread, f"{thresholds.spread_multiple:g}"
    though = one_seed(gap)
    if gap.basis == "chance":
        return (
            f"{prefix} is no seed effect, though {though}: {gap.worse.label} stayed at "
            f"chance level ({percent2(gap.worse.accuracy.mean)}) and did not learn, while "
            f"{gap.better.label} reached {percent2(gap.better.accuracy.mean)}."
        )
    if gap.basis == "spread" and spread.point is not None:
        return (
            f"{prefix} is beyond the seed spread, though {though}: over {multiple} "
            f"times the largest spread measured in this report ({100 * spread.std:.2f} points, "
            f"std over {len(spread.point.accuracies)} seeds of {spread.point.label})."
        )
    if not gap.test:
        if spread.point is not None and spread.std > 0:
            return (
                f"{prefix} cannot be judged: {though}, and the gap is within {multiple} times "
                f"the largest seed spread measured in this report ({100 * spread.std:.2f} points, "
                f"{spread.point.label}): run --seeds 0,1,2."
            )
        if spread.point is not None:
            return (
                f"{prefix} cannot be judged: {though}, and the seeds measured in this report "
                f"({spread.point.label}) all gave the same accuracy, no spread to compare with: "
                "run --seeds 0,1,2."
            )
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


def significance(points: Sequence[Point], thresholds: Thresholds = THRESHOLDS) -> list[str]:
    """Is the best activation's accuracy lead over each other one larger than the seed spread?"""
    scored = [g for g in points if g.accuracies]
    if len(scored) < 2:
        return []
    best = max(scored, key=lambda g: g.accuracy.mean)
    spread = measured_spread(scored)
    return [
        verdict(gap_test(best, other, thresholds, spread), thresholds)
        for other in scored
        if other is not best
    ]


def condition_gaps(points: Sequence[Point], thresholds: Thresholds = THRESHOLDS) -> list[Gap]:
    """Every pair of activations at the same condition, with its test; conditions shallowest first,
    then the larger gaps first."""
    gaps = []
    spread = measured_spread([g for g in points if g.accuracies])
    for members in by_condition(points).values():
        scored = [g for g in members if g.accuracies]
        pairs = [
            gap_test(a, b, thresholds, spread)
            for i, a in enumerate(scored)
            for b in scored[i + 1 :]
        ]
        gaps += sorted(pairs, key=lambda gap: -gap.difference)
    return gaps


def gap_sentences(gaps: Sequence[Gap], thresholds: Thresholds = THRESHOLDS) -> list[str]:
    """How many gaps between activations at one condition are significant, and by which test."""
    if not gaps:
        return []
    judged = [g for g in gaps if g.judged]
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
    welch = sum(g.test == "Welch's t-test" for g in judged)
    chance = sum(g.basis == "chance" for g in judged)
    beyond = sum(g.basis == "spread" for g in judged)
    tests = [f"a paired t-test on the shared seeds ({paired} pairs)"] if paired else []
    if welch:
        tests.append(f"Welch's t-test where the seeds differ ({welch} pairs)")
    if chance:
        tests.append(f"with one seed, one side at chance level and the other far above ({chance})")
    if beyond:
        tests.append(
            f"with one seed, a gap over {thresholds.spread_multiple:g} times the largest seed "
            f"spread measured here ({beyond})"
        )
    if tests:
        sentences.append(f"Each gap is judged by {' and '.join(tests)}.")
    if any(g.test == "paired t-test" and g.seeds == "2 seeds" for g in judged):
        sentences.append(
            "With 2 seeds a paired t-test has 1 degree of freedom: only a gap that is large and "
            "nearly the same at both seeds is significant."
        )
    return sentences


@dataclass(frozen=True)
class StopRule:
    """Below which mean accuracy an activation counts as not learning, on one data set."""

    dataset: Any
    chance: float
    best: Point
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


def stop_rules(points: Sequence[Point], thresholds: Thresholds = THRESHOLDS) -> list[StopRule]:
    """Per data set, the accuracy below which a depth counts as not learning."""
    rules = []
    for dataset in dict.fromkeys(g.condition.get("dataset") for g in points):
        scored = [g for g in points if g.condition.get("dataset") == dataset and g.accuracies]
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
        accuracies = series.points[i].accuracies
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
    points: Sequence[Point], thresholds: Thresholds = THRESHOLDS
) -> tuple[list[str], list[str]]:
    """(the stop rule per data set, one stop-depth sentence per line of the depth figures);
    empty unless the points span more than one depth."""
    if len({g.depth for g in points}) < 2:
        return [], []
    rules = {rule.dataset: rule for rule in stop_rules(points, thresholds)}
    sentences = [
        stop_sentence(series, rules[series.dataset])
        for series in depth_series(points)
        if series.dataset in rules
    ]
    return [rule.sentence(thresholds) for rule in rules.values()], sentences


ATTENUATION_HEADER = ("activation", "max slope", "L", "slope bound (max f')^L", "measured at init")
CURE_HEADER = (
    "setting",
    "test acc (%)",
    "signal factor, layer 1 / L",
    "forward scale, layer L / 1",
    "verdict",
)


def attenuation_rows(points: Sequence[Point]) -> list[dict[str, Any]]:
    """Per point: the slope bound (max f')^L next to the measured ratio at initialisation."""
    rows = []
    for point in points:
        depth = len(point.hidden)
        bound = point.activation.derivative_bound**depth
        measured = point.vanishing_ratio_init
        rows.append(
            {
                "label": point.label,
                "max_slope": point.activation.derivative_bound,
                "depth": depth,
                "bound": bound,
                "measured": measured,
                "missing": UNDERFLOW if point.ratio_underflow else MISSING,
            }
        )
    return rows


def attenuation_cells(row: dict[str, Any]) -> tuple[str, ...]:
    """One row of the slope-bound table."""
    measured, bound = row["measured"], row["bound"]
    return (
        row["label"],
        f"{row['max_slope']:.3g}",
        str(row["depth"]),
        f"({row['max_slope']:.3g})^{row['depth']} = {number(bound)}",
        number(measured) if math.isfinite(measured) else row["missing"],
    )


def attenuation_table(points: Sequence[Point]) -> Table:
    """The slope-bound table drawn under its figure."""
    rows = tuple(attenuation_cells(row) for row in attenuation_rows(points))
    return Table(ATTENUATION_HEADER, rows, "attenuation")


def cure_cells(point: Point, found: Verdict) -> tuple[str, ...]:
    """One row of the cure table: the label, accuracy, the two factors at init, the verdict."""
    summary = point.accuracy
    accuracy = fixed(100 * summary.mean, 2)
    if math.isfinite(summary.std):
        accuracy += f" ± {100 * summary.std:.2f}"
    profile = found.profile
    return (
        point.label,
        accuracy,
        number(profile.signal_factor) if math.isfinite(profile.signal_factor) else MISSING,
        number(profile.scale_factor) if math.isfinite(profile.scale_factor) else MISSING,
        found.word or MISSING,
    )


def cure_table(points: Sequence[Point], thresholds: Thresholds = THRESHOLDS) -> Table:
    """Per point: test accuracy, signal and forward scale factors at init, the verdict."""
    rows = tuple(cure_cells(g, judge(g, thresholds)) for g in points)
    return Table(CURE_HEADER, rows, "cures")
