"""Statistics over seeds: mean, sample std, a 95 % confidence interval, paired and Welch t-tests."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95  # the usual two-sided level
ALPHA = 0.05  # a paired gap counts as significant below this p-value


@dataclass(frozen=True)
class Summary:
    """n values summarised; std and the interval are nan when n < 2."""

    n: int
    mean: float
    std: float  # sample standard deviation (n - 1)
    ci_low: float  # CONFIDENCE interval of the mean, Student's t
    ci_high: float


def summarize(values: Sequence[float]) -> Summary:
    """Mean, sample std and the t-based confidence interval of the mean of finite values."""
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(values)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = sum(values) / n
    if n < 2:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


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


def paired_test(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Two-sided paired t-test of the differences a_i - b_i (same seed, same setting)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    differences = [x - y for x, y in zip(a, b, strict=True)]
    n = len(differences)
    if n < 2:
        return PairedTest(n, differences[0] if differences else math.nan, math.nan, math.nan)
    mean = sum(differences) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    if std == 0:
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
        return PairedTest(n, mean, t, 1.0 if mean == 0 else 0.0)
    t = mean / (std / math.sqrt(n))
    return PairedTest(n, mean, t, 2 * t_sf(abs(t), n - 1))


def t_sf(t: float, df: int) -> float:
    """P(T > t) for Student's t with df degrees of freedom (t >= 0)."""
    from scipy import stats  # scipy loads only when statistics are computed

    return float(stats.t.sf(t, df))


def t_quantile(q: float, df: int) -> float:
    """The q-quantile of Student's t with df degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(q, df))


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


def welch_test(a: Sequence[float], b: Sequence[float]) -> WelchTest:
    """Two-sided Welch's t-test, as scipy's ttest_ind(a, b, equal_var=False) computes it."""
    n_a, n_b = len(a), len(b)
    if n_a == 0 or n_b == 0:
        return WelchTest(n_a, n_b, math.nan, math.nan, math.nan, math.nan)
    mean_a, mean_b = sum(a) / n_a, sum(b) / n_b
    difference = mean_a - mean_b
    if n_a < 2 or n_b < 2:
        return WelchTest(n_a, n_b, difference, math.nan, math.nan, math.nan)
    # Squared standard errors of the two means.
    se_a = sum((x - mean_a) ** 2 for x in a) / (n_a - 1) / n_a
    se_b = sum((x - mean_b) ** 2 for x in b) / (n_b - 1) / n_b
    if se_a + se_b == 0:  # every value equal within each sample: scipy's t is +-inf or nan
        if difference == 0:
            return WelchTest(n_a, n_b, 0.0, math.nan, math.nan, math.nan)
        return WelchTest(n_a, n_b, difference, math.copysign(math.inf, difference), math.nan, 0.0)
    t = difference / math.sqrt(se_a + se_b)
    df = (se_a + se_b) ** 2 / (se_a**2 / (n_a - 1) + se_b**2 / (n_b - 1))
    return WelchTest(n_a, n_b, difference, t, df, 2 * t_sf(abs(t), df))
