"""Statistics over seeds, one rule for all: None and NaN are dropped, and one value has no spread.

Mean, sample std and a Student's t interval (`summarize`), paired and Welch t-tests through
scipy.stats, geometric means of ratios, means of per-layer values over runs, and the percent of
hidden units that a list of per-layer fractions amounts to.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95  # the usual two-sided level
ALPHA = 0.05  # a gap counts as significant below this p-value


def finite(values: Iterable[float | None]) -> list[float]:
    """The finite values, as floats; None and NaN (a diverged run's record) dropped, and what a
    damaged record holds instead of a number (a string, a table)."""
    return [
        float(v)
        for v in values
        if isinstance(v, (int, float, np.floating, np.integer))
        and not isinstance(v, bool)
        and math.isfinite(v)
    ]


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean; nan for no values."""
    return sum(values) / len(values) if values else math.nan


def sample_std(values: Sequence[float]) -> float:
    """The sample standard deviation (n - 1); nan for fewer than two values: no spread."""
    if len(values) < 2:
        return math.nan
    center = mean(values)
    return math.sqrt(sum((v - center) ** 2 for v in values) / (len(values) - 1))


@dataclass(frozen=True)
class Summary:
    """n values summarised; std and the interval are nan when n < 2."""

    n: int
    mean: float
    std: float  # sample standard deviation (n - 1)
    ci_low: float  # CONFIDENCE interval of the mean, Student's t
    ci_high: float


def summarize(values: Iterable[float | None]) -> Summary:
    """Mean, sample std and the t-based confidence interval of the mean of the finite values."""
    values = finite(values)
    n, center, std = len(values), mean(values), sample_std(values)
    if n < 2:
        return Summary(n, center, math.nan, math.nan, math.nan)
    half = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * std / math.sqrt(n)
    return Summary(n, center, std, center - half, center + half)


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t with df degrees of freedom."""
    from scipy import stats  # scipy loads only when statistics are computed

    return float(stats.t.ppf(q, df))


@dataclass(frozen=True)
class PairedTest:
    """A paired t-test of a - b over matched seeds."""

    n: int
    mean_difference: float
    t: float
    p: float  # two-sided; nan when it cannot be computed (n < 2)

    @property
    def significant(self) -> bool:
        return self.p < ALPHA


def paired_test(a: Sequence[float | None], b: Sequence[float | None]) -> PairedTest:
    """Two-sided paired t-test of the differences a_i - b_i (same seed, same setting), as
    scipy's ttest_rel; a pair with a missing value is dropped. Differences without spread give
    p = 1 when they are all 0 (identical samples), else p = 0."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    pairs = [finite(pair) for pair in zip(a, b, strict=True)]
    pairs = [pair for pair in pairs if len(pair) == 2]  # both values of the seed are there
    differences = [x - y for x, y in pairs]
    n, center = len(differences), mean(differences)
    if n < 2:
        return PairedTest(n, center, math.nan, math.nan)
    if sample_std(differences) == 0:
        t = 0.0 if center == 0 else math.copysign(math.inf, center)
        return PairedTest(n, center, t, 1.0 if center == 0 else 0.0)
    from scipy import stats

    with warnings.catch_warnings():  # near-identical samples: scipy warns, the answer stands
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_rel([x for x, _ in pairs], [y for _, y in pairs])
    return PairedTest(n, center, float(result.statistic), float(result.pvalue))


@dataclass(frozen=True)
class WelchTest:
    """Welch's t-test of mean(a) - mean(b): independent samples, variances not assumed equal."""

    n_a: int
    n_b: int
    mean_difference: float
    t: float
    df: float  # Welch-Satterthwaite degrees of freedom, in general not an integer
    p: float  # two-sided; nan when it cannot be computed (a sample of < 2, or no spread at all)

    @property
    def significant(self) -> bool:
        return self.p < ALPHA


def welch_test(a: Iterable[float | None], b: Iterable[float | None]) -> WelchTest:
    """Two-sided Welch's t-test, scipy's ttest_ind(a, b, equal_var=False), of the finite values.
    Neither sample with any spread: p = 0 when the means differ, nan when they do not."""
    a, b = finite(a), finite(b)
    n_a, n_b = len(a), len(b)
    difference = mean(a) - mean(b)
    if n_a < 2 or n_b < 2:
        return WelchTest(n_a, n_b, difference, math.nan, math.nan, math.nan)
    if sample_std(a) == 0 and sample_std(b) == 0:
        if difference == 0:
            return WelchTest(n_a, n_b, 0.0, math.nan, math.nan, math.nan)
        return WelchTest(n_a, n_b, difference, math.copysign(math.inf, difference), math.nan, 0.0)
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(a, b, equal_var=False)
    return WelchTest(
        n_a, n_b, difference, float(result.statistic), float(result.df), float(result.pvalue)
    )


def geometric_mean(values: Iterable[float | None]) -> float:
    """The geometric mean of the positive finite values, for ratios that span decades; nan when
    there are none (a ratio of 0, an underflow, has no logarithm)."""
    positive = [v for v in finite(values) if v > 0]
    if not positive:
        return math.nan
    return math.exp(sum(math.log(v) for v in positive) / len(positive))


def mean_over_runs(stack: np.ndarray, geometric: bool = False) -> np.ndarray:
    """Per column, the mean over runs (axis 0) of the finite values, geometric for norms and
    ratios (of the positive ones); nan for a column with none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-nan column is simply nan
        if geometric:
            return np.exp(np.nanmean(np.log(np.where(stack > 0, stack, np.nan)), axis=0))
        return np.nanmean(np.where(np.isfinite(stack), stack, np.nan), axis=0)


def percent_of_units(fractions: Sequence[float | None] | None, widths: Sequence[int]) -> float:
    """Per-layer fractions of units -> percent of all hidden units (weighted by layer width);
    nan when the list is missing, of another length, or holds a missing value."""
    values = finite(fractions or [])
    if not widths or len(values) != len(widths) or len(fractions or []) != len(widths):
        return math.nan
    return 100 * sum(f * w for f, w in zip(values, widths, strict=True)) / sum(widths)
