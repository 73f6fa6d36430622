"""Statistics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vanishing import stats


def test_summary_of_four_values():
    s = stats.summarize([1.0, 2.0, 3.0, 4.0])
    assert (s.n, s.mean) == (4, 2.5)
    assert s.std == pytest.approx(math.sqrt(5 / 3))  # sum of squares 5, n - 1 = 3
    # t(0.975, 3) = 3.182446305; half width = 3.182446305 * 1.290994449 / 2 = 2.0542603
    assert s.ci_low == pytest.approx(2.5 - 2.0542603, abs=1e-6)
    assert s.ci_high == pytest.approx(2.5 + 2.0542603, abs=1e-6)


def test_summary_edge_cases():
    assert stats.summarize([]).n == 0 and math.isnan(stats.summarize([]).mean)
    one = stats.summarize([0.9])
    assert one.mean == 0.9 and math.isnan(one.std) and math.isnan(one.ci_low)
    assert stats.summarize([1.0, float("nan"), None, 3.0]).mean == 2.0  # non-finite skipped


def test_paired_test_by_hand():
    # Differences 0.5, 1.0, 0.5: mean 2/3, sd 0.288675, t = (2/3) / (0.288675 / sqrt 3) = 4.
    # For df = 2, P(T > t) = (1 - t / sqrt(t^2 + 2)) / 2, so p = 1 - 4 / sqrt(18) = 0.057191.
    test = stats.paired_test([1.0, 2.0, 3.0], [0.5, 1.0, 2.5])
    assert test.n == 3
    assert test.mean_difference == pytest.approx(2 / 3)
    assert test.t == pytest.approx(4.0)
    assert test.p == pytest.approx(1 - 4 / math.sqrt(18), rel=1e-6)
    assert not test.significant  # 0.057 > 0.05


def test_paired_test_significant_and_degenerate():
    clear = stats.paired_test([0.98, 0.981, 0.979, 0.982], [0.90, 0.902, 0.899, 0.901])
    assert clear.significant and clear.p < 1e-4
    assert stats.paired_test([1.0, 2.0], [1.0, 2.0]).p == 1.0
    assert math.isnan(stats.paired_test([1.0], [0.0]).p)
    with pytest.raises(ValueError, match="differ in length"):
        stats.paired_test([1.0], [1.0, 2.0])


def test_welch_test_by_hand():
    # Means 2 and 5, sample variances 2 and 2, n = 2 each: squared standard error 2/2 + 2/2 = 2,
    # t = -3 / sqrt 2; df = 2^2 / (1^2 / 1 + 1^2 / 1) = 2, where P(T > t) = (1 - t / sqrt(t^2 + 2))
    # / 2, so p = 1 - (3 / sqrt 2) / sqrt(4.5 + 2) = 0.167950.
    test = stats.welch_test([1.0, 3.0], [4.0, 6.0])
    assert (test.n_a, test.n_b, test.mean_difference) == (2, 2, -3.0)
    assert test.t == pytest.approx(-3 / math.sqrt(2))
    assert test.df == pytest.approx(2.0)
    assert test.p == pytest.approx(1 - (3 / math.sqrt(2)) / math.sqrt(6.5), rel=1e-6)
    assert not test.significant


def test_welch_test_matches_scipy_on_unequal_samples():
    from scipy import stats as reference

    a, b = [0.981, 0.980, 0.979, 0.984], [0.90, 0.93, 0.91]
    expected = reference.ttest_ind(a, b, equal_var=False)
    test = stats.welch_test(a, b)
    assert test.t == pytest.approx(expected.statistic)
    assert test.df == pytest.approx(expected.df)
    assert test.p == pytest.approx(expected.pvalue)
    assert test.significant


def test_welch_test_degenerate():
    assert math.isnan(stats.welch_test([0.9], [0.8, 0.7]).p)  # one value: no spread to judge by
    assert math.isnan(stats.welch_test([0.9, 0.9], [0.9, 0.9]).p)
    constant = stats.welch_test([0.9, 0.9], [0.8, 0.8])  # as scipy: t infinite, p 0
    assert constant.t == math.inf and constant.p == 0.0


def test_summary_interval_is_scipys_t_interval():
    from scipy import stats as reference

    values = [0.981, 0.975, 0.990, 0.968, 0.979]
    s = stats.summarize(values)
    low, high = reference.t.interval(0.95, len(values) - 1, loc=s.mean, scale=reference.sem(values))
    assert s.std == pytest.approx(reference.tstd(values))
    assert (s.ci_low, s.ci_high) == (pytest.approx(low), pytest.approx(high))


def test_summary_without_spread():
    same = stats.summarize([0.5, 0.5, 0.5])
    assert (same.std, same.ci_low, same.ci_high) == (0.0, 0.5, 0.5)
    one = stats.summarize([0.5, None, math.nan])  # one run left: no spread, no interval
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.std) and math.isnan(one.ci_high)


def test_paired_test_matches_scipy_and_drops_missing_pairs():
    from scipy import stats as reference

    a, b = [0.97, 0.981, 0.975, 0.99, 0.96], [0.95, 0.96, 0.97, 0.962, 0.958]
    expected = reference.ttest_rel(a, b)
    test = stats.paired_test([*a, None, 0.9], [*b, 0.9, math.nan])  # seeds 5, 6: one side lost
    assert test.n == 5
    assert test.t == pytest.approx(expected.statistic)
    assert test.p == pytest.approx(expected.pvalue)
    assert test.mean_difference == pytest.approx(sum(a) / 5 - sum(b) / 5)


def test_paired_test_without_spread():
    same = stats.paired_test([0.9, 0.8, 0.7], [0.9, 0.8, 0.7])  # identical samples
    assert (same.t, same.p, same.mean_difference) == (0.0, 1.0, 0.0)
    shifted = stats.paired_test([1.5, 2.5], [1.0, 2.0])  # every seed 0.5 apart
    assert shifted.p == 0.0 and shifted.t == math.inf
    lost = stats.paired_test([0.9, None], [0.8, 0.7])  # one pair left: no test
    assert lost.n == 1 and lost.mean_difference == pytest.approx(0.1) and math.isnan(lost.p)


def test_welch_test_drops_missing_values():
    from scipy import stats as reference

    a, b = [0.981, 0.980, 0.979, 0.984], [0.90, 0.93, 0.91]
    expected = reference.ttest_ind(a, b, equal_var=False)
    test = stats.welch_test([*a, None], [math.nan, *b])
    assert (test.n_a, test.n_b) == (4, 3)
    assert test.p == pytest.approx(expected.pvalue) and test.df == pytest.approx(expected.df)


def test_geometric_mean_skips_what_has_no_logarithm():
    assert stats.geometric_mean([1e-4, 1e-2]) == pytest.approx(1e-3)
    assert stats.geometric_mean([1e-4, 0.0, None, math.nan, 1e-2]) == pytest.approx(1e-3)
    assert math.isnan(stats.geometric_mean([0.0, 0.0]))  # underflowed at every seed


def test_mean_over_runs_per_column():
    stack = np.array([[1.0, 4.0, math.nan], [3.0, math.inf, math.nan]])
    assert stats.mean_over_runs(stack)[:2].tolist() == [2.0, 4.0]
    assert math.isnan(stats.mean_over_runs(stack)[2])
    geometric = stats.mean_over_runs(np.array([[1e-4, 0.0], [1e-2, 0.0]]), geometric=True)
    assert geometric[0] == pytest.approx(1e-3) and math.isnan(geometric[1])


def test_percent_of_units_weights_layers_by_width():
    # 10 % of 60 units and 50 % of 20: 16 of 80 units, 20 %.
    assert stats.percent_of_units([0.1, 0.5], [60, 20]) == pytest.approx(20.0)
    for broken in (None, [], [0.1], [0.1, None], [0.1, math.nan], [0.1, 0.5, 0.2]):
        assert math.isnan(stats.percent_of_units(broken, [60, 20])), broken
