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
from vanishing.reporting.verdict.rules import learned_well, through_time, weakest
from vanishing.reporting.verdict.sentences import short_factor


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
    """The largest std over seeds among the points with at least two finished seeds (of their
    score: test accuracy, a regression's test loss; give points of one task)."""
    spreads = [(g.score.std, g) for g in points if len(g.scores) >= 2]
    spreads = [(std, g) for std, g in spreads if math.isfinite(std)]
    if not spreads:
        return Spread(math.nan)
    std, point = max(spreads, key=lambda item: item[0])
    return Spread(std, point)


@dataclass(frozen=True)
class Gap:
    """The gap in score between two points (test accuracy; a regression's test loss, its mean
    squared error), and the test that judges it."""

    better: Point  # the higher mean accuracy, the lower mean loss
    worse: Point
    difference: float  # by how much better's mean score is better (a fraction; a loss)
    test: str  # "paired t-test" on the same seeds, "Welch's t-test" otherwise, "" if none ran
    seeds: str  # "3 seeds", or "3 and 2 seeds" when the points differ
    p: float  # two-sided; nan when the gap cannot be judged by a t-test
    significant: bool
    # With one seed a side, what judged it instead of a t-test: "chance" (the worse did not
    # learn, the better did), "spread" (beyond the seed spread measured elsewhere), or "".
    basis: str = ""
    spread: Spread = Spread(math.nan)
    t: float = math.nan  # the t-test's statistic (better's scores minus worse's); nan: none ran

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
    seed on a side, the chance level (a regression's baseline) or the seed `spread` measured
    elsewhere in the report. Scores are test accuracy, higher is better, or a regression's
    test loss, lower is better."""
    if a.better(b.score.mean, a.score.mean):
        a, b = b, a
    by_seed_a, by_seed_b = dict(a.seed_scores), dict(b.seed_scores)
    n_a, n_b = len(a.scores), len(b.scores)
    seeds = f"{n_a} seeds" if n_a == n_b else f"{n_a} and {n_b} seeds"
    difference = abs(a.score.mean - b.score.mean)
    if min(n_a, n_b) < 2:
        if a.regression:
            far_enough = learned_well(a, thresholds)
        else:
            chance = chance_level(a.condition.get("dataset"))
            far_enough = a.accuracy.mean >= chance + thresholds.far_above_chance * (1 - chance)
        if at_chance(b, thresholds) and far_enough:
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
        test = stats.welch_test(a.scores, b.scores)
        name = "Welch's t-test"
    significant = bool(test.p < thresholds.p_value)
    return Gap(a, b, difference, name, seeds, test.p, significant, t=test.t)


def p_text(p: float) -> str:
    """'p = 0.031', or 'p < 0.0001' where two digits would read as zero or as 1e-31."""
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.2g}"


def one_seed(gap: Gap) -> str:
    """'each ran one seed', 'ReLU ran one seed', or '' when both sides ran several."""
    single = [g.label for g in (gap.better, gap.worse) if len(g.scores) < 2]
    if not single:
        return ""
    return "each ran one seed" if len(single) == 2 else f"{single[0]} ran one seed"


def size(point: Point, value: float) -> str:
    """A gap or a spread in a point's score: '2.00 points' of accuracy, a loss's '0.0150'."""
    return f"{value:.3g}" if point.regression else f"{100 * value:.2f} points"


def reached(point: Point, value: float) -> str:
    """A mean score as a gap's sentence says it: '97.24 %', 'test MSE 0.004'."""
    return f"test MSE {number(value)}" if point.regression else percent2(value)


def verdict(gap: Gap, thresholds: Thresholds = THRESHOLDS) -> str:
    """One plain sentence on a gap: larger than the seed spread, within it, or not judgeable."""
    better, worse = gap.better, gap.worse
    measure = "test MSE" if better.regression else "accuracy"
    prefix = (
        f"The {measure} gap between {better.label} and {worse.label} "
        f"({size(better, gap.difference)})"
    )
    spread, multiple = gap.spread, f"{thresholds.spread_multiple:g}"
    though = one_seed(gap)
    if gap.basis == "chance":
        stayed = (
            f"at the baseline ({reached(worse, worse.score.mean)}; always answering 1: "
            f"{number(worse.baseline)})"
            if worse.regression
            else f"at chance level ({percent2(worse.accuracy.mean)})"
        )
        return (
            f"{prefix} is no seed effect, though {though}: {worse.label} stayed "
            f"{stayed} and did not learn, while {better.label} reached "
            f"{reached(better, better.score.mean)}."
        )
    if gap.basis == "spread" and spread.point is not None:
        return (
            f"{prefix} is beyond the seed spread, though {though}: over {multiple} "
            f"times the largest spread measured in this report ({size(better, spread.std)}, "
            f"std over {len(spread.point.scores)} seeds of {spread.point.label})."
        )
    if not gap.test:
        if spread.point is not None and spread.std > 0:
            return (
                f"{prefix} cannot be judged: {though}, and the gap is within {multiple} times "
                f"the largest seed spread measured in this report ({size(better, spread.std)}, "
                f"{spread.point.label}): run --seeds 0,1,2."
            )
        if spread.point is not None:
            return (
                f"{prefix} cannot be judged: {though}, and the seeds measured in this report "
                f"({spread.point.label}) all gave the same {measure}, no spread to compare "
                "with: run --seeds 0,1,2."
            )
        return f"{prefix} cannot be judged: one seed: no spread to compare with, run --seeds 0,1,2."
    if math.isnan(gap.p):
        return f"{prefix} cannot be judged: every seed gave the same {measure}."
    if gap.significant:
        return (
            f"{prefix} is larger than the seed spread: significant at {gap.seeds} "
            f"({gap.test}, {p_text(gap.p)})."
        )
    return (
        f"{prefix} is within the seed spread: not significant at {gap.seeds} "
        f"({gap.test}, {p_text(gap.p)})."
    )


def best_of(points: Sequence[Point]) -> Point:
    """The point with the best mean score: the highest accuracy, a regression's lowest loss."""
    if points[0].regression:
        return min(points, key=lambda g: g.score.mean)
    return max(points, key=lambda g: g.score.mean)


def by_task(points: Sequence[Point]) -> list[list[Point]]:
    """The points with a score, per task (classification first): scores of two tasks are not
    compared."""
    scored = [g for g in points if g.scores]
    return [m for task in (False, True) if (m := [g for g in scored if g.regression == task])]


def significance(points: Sequence[Point], thresholds: Thresholds = THRESHOLDS) -> list[str]:
    """Is the best activation's lead (accuracy; a regression's loss) over each other one
    larger than the seed spread?"""
    sentences = []
    for scored in by_task(points):
        if len(scored) < 2:
            continue
        best = best_of(scored)
        spread = measured_spread(scored)
        sentences += [
            verdict(gap_test(best, other, thresholds, spread), thresholds)
            for other in scored
            if other is not best
        ]
    return sentences


def condition_gaps(points: Sequence[Point], thresholds: Thresholds = THRESHOLDS) -> list[Gap]:
    """Every pair of activations at the same condition, with its test; conditions shallowest first,
    then the larger gaps first."""
    gaps = []
    spreads = {task[0].regression: measured_spread(task) for task in by_task(points)}
    for members in by_condition(points).values():
        scored = [g for g in members if g.scores]
        spread = spreads.get(scored[0].regression, Spread(math.nan)) if scored else Spread(math.nan)
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
    regression = {g.better.regression for g in gaps}
    measure = {frozenset({False}): "accuracy", frozenset({True}): "test MSE"}.get(
        frozenset(regression), "score"
    )
    sentences = [
        f"{significant} of the {len(gaps)} {measure} gaps between two activations at the same "
        f"setting are larger than the seed spread (p below {thresholds.p_value:g}), listed below; "
        f"{len(judged) - significant} are within it: not significant."
    ]
    if len(judged) < len(gaps):
        sentences.append(
            f"{len(gaps) - len(judged)} cannot be judged: one seed, or the same {measure} at "
            "every seed."
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
    """Below which mean accuracy an activation counts as not learning, on one data set (a
    regression: above which mean test loss)."""

    dataset: Any
    chance: float  # a regression's: its baseline
    best: Point
    threshold: float

    @property
    def regression(self) -> bool:
        return self.best.regression

    def learns(self, score: float) -> bool:
        """Whether a mean score is on the learning side of the threshold (nan: never)."""
        return score <= self.threshold if self.regression else score >= self.threshold

    def shown(self, value: float) -> str:
        """A score as the rule's sentences write it: '97.24 %', a loss's '0.0042'."""
        return number(value) if self.regression else percent2(value)

    def sentence(self, thresholds: Thresholds = THRESHOLDS) -> str:
        how_far = "half" if thresholds.stop_fraction == 0.5 else f"{thresholds.stop_fraction:g}"
        if self.regression:
            return (
                f"An activation stops learning at the smallest depth (number of hidden layers) "
                f"whose mean test MSE on {self.dataset} is less than {how_far} way from the "
                f"baseline ({number(self.chance)}, always answering 1) to the best mean in this "
                f"report ({number(self.best.score.mean)}, {self.best.label}): above "
                f"{number(self.threshold)}."
            )
        return (
            f"An activation stops learning at the smallest depth (number of hidden layers) whose "
            f"mean test accuracy on {self.dataset} is less than {how_far} way from chance "
            f"({percent2(self.chance)}) to the best mean in this report "
            f"({percent2(self.best.accuracy.mean)}, {self.best.label}): below "
            f"{percent2(self.threshold)}."
        )


def stop_rules(points: Sequence[Point], thresholds: Thresholds = THRESHOLDS) -> list[StopRule]:
    """Per data set, the accuracy below which (a regression's test loss above which) a depth
    counts as not learning."""
    rules = []
    for dataset in dict.fromkeys(g.condition.get("dataset") for g in points):
        scored = [g for g in points if g.condition.get("dataset") == dataset and g.scores]
        if not scored:
            continue
        best = best_of(scored)
        chance = best.baseline if best.regression else chance_level(dataset)
        threshold = chance + thresholds.stop_fraction * (best.score.mean - chance)
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
    below = [i for i, m in enumerate(means) if not rule.learns(m)]  # nan: nothing trained
    measure = "test MSE" if rule.regression else "test accuracy"
    side = "above" if rule.regression else "below"

    def accuracy_at(i: int) -> str:
        if not math.isfinite(means[i]):
            return "every run diverged"
        text = f"mean {measure} {rule.shown(means[i])}, {side} {rule.shown(rule.threshold)}"
        scores = series.points[i].scores
        learned = [a for a in scores if rule.learns(a)]
        if learned:  # the mean hides seeds that did learn
            best = rule.shown(min(learned) if rule.regression else max(learned))
            other = "below" if rule.regression else "above"
            text += f" ({len(learned)} of {len(scores)} seeds {other} it, the best at {best})"
        return text

    if not below:
        worst = int(np.argmax(means) if rule.regression else np.argmin(means))
        most = "highest" if rule.regression else "lowest"
        return (
            f"{series.label} trains at every depth tried ({spoken(depths)}): its {most} mean "
            f"{measure} is {rule.shown(means[worst])}, at depth {depths[worst]}."
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


def score_cell(point: Point) -> str:
    """A point's score for a table: accuracy in % ('97.10 ± 0.20'), a regression's test MSE with
    its baseline and whether it beat it ('0.0040 ± 0.0010 (baseline 0.167: beaten)')."""
    summary = point.score
    if point.regression:
        cell = fixed(summary.mean, 4)
        if math.isfinite(summary.std):
            cell += f" ± {summary.std:.4f}"
        if math.isfinite(summary.mean):
            beaten = "not beaten" if at_chance(point) else "beaten"
            cell += f" (baseline {number(point.baseline)}: {beaten})"
        return cell
    cell = fixed(100 * summary.mean, 2)
    if math.isfinite(summary.std):
        cell += f" ± {100 * summary.std:.2f}"
    return cell


def score_header(points: Sequence[Point]) -> str:
    """The score column's name: 'test acc (%)', 'test MSE' for regressions only, both where
    the points mix them."""
    regression = {g.regression for g in points}
    if regression == {True}:
        return "test MSE"
    return "test acc (%) / MSE" if regression == {True, False} else "test acc (%)"


def time_cell(point: Point) -> str:
    """A point's gradient through time for a table: step 1's over step T's at the probe the
    verdict judges, in its weakest layer ('1.0e-09 (0.97 per step)'); MISSING without one."""
    found = through_time(point)
    layer = weakest(found.judged) if found else None
    return MISSING if layer is None else short_factor(layer)


def cure_cells(point: Point, found: Verdict, through: bool = False) -> tuple[str, ...]:
    """One row of the cure table: the label, the score, the two factors at init (and with
    `through`, the factor through time), the verdict."""
    profile = found.profile
    return (
        point.label,
        score_cell(point),
        number(profile.signal_factor) if math.isfinite(profile.signal_factor) else MISSING,
        number(profile.scale_factor) if math.isfinite(profile.scale_factor) else MISSING,
        *([time_cell(point)] if through else []),
        found.word or MISSING,
    )


def cure_table(points: Sequence[Point], thresholds: Thresholds = THRESHOLDS) -> Table:
    """Per point: its score, signal and forward scale factors at init, for recurrent networks
    the gradient through time (step 1 over step T, after training), the verdict."""
    through = any(through_time(g) is not None for g in points)
    header = (
        CURE_HEADER[0],
        score_header(points),
        *CURE_HEADER[2:4],
        *(["through time, step 1 / T"] if through else []),
        CURE_HEADER[4],
    )
    rows = tuple(cure_cells(g, judge(g, thresholds), through) for g in points)
    return Table(header, rows, "cures")
