"""The statistics on constructed numbers, checked against values worked out by hand."""

import math

import pytest

from rethink.report import stats, words

# Two-sided 95% Student t quantiles t(0.975, df) from the standard table.
T_975 = {1: 12.706204736174696, 2: 4.302652729911275, 3: 3.182446305284263}


def test_mean_std_uses_n_minus_1_and_skips_nan():
    result = stats.mean_std([1.0, 2.0, 3.0, 4.0, float("nan"), None])
    assert result["n"] == 4
    assert result["mean"] == pytest.approx(2.5)
    # sum of squared deviations 5.0 over n-1 = 3
    assert result["std"] == pytest.approx(math.sqrt(5.0 / 3.0))


def test_mean_std_one_value_has_no_std_and_empty_has_nothing():
    assert stats.mean_std([7.5]) == {"mean": 7.5, "std": None, "n": 1}
    assert stats.mean_std([]) == {"mean": None, "std": None, "n": 0}


def test_paired_difference_interval_by_hand():
    # differences 2.0, 2.1, 2.1, 1.9: mean 2.025, squared deviations sum 0.0275, std sqrt(0.0275/3)
    a = [5.0, 5.5, 6.0, 5.2]
    b = [3.0, 3.4, 3.9, 3.3]
    result = stats.paired_difference(a, b)
    std = math.sqrt(0.0275 / 3)
    half = T_975[3] * std / 2.0  # sqrt(n) = 2
    assert result["n"] == 4
    assert result["mean"] == pytest.approx(2.025)
    assert result["std"] == pytest.approx(std)
    assert result["ci_low"] == pytest.approx(2.025 - half)
    assert result["ci_high"] == pytest.approx(2.025 + half)
    assert result["ci_low"] == pytest.approx(1.87265, abs=1e-4)
    assert result["significant"] is True


def test_paired_difference_interval_containing_zero_is_not_significant():
    # differences 1, 2, 3: mean 2, std 1, half width t(0.975, 2) / sqrt(3)
    result = stats.paired_difference([10.0, 12.0, 14.0], [9.0, 10.0, 11.0])
    half = T_975[2] / math.sqrt(3)
    assert result["mean"] == pytest.approx(2.0)
    assert result["std"] == pytest.approx(1.0)
    assert result["ci_low"] == pytest.approx(2.0 - half)
    assert result["ci_high"] == pytest.approx(2.0 + half)
    assert result["ci_low"] < 0 < result["ci_high"]
    assert result["significant"] is False


def test_paired_difference_pairs_by_position_not_by_sorting():
    # the same values paired differently give a different answer: the pairing is what matters
    paired = stats.paired_difference([1.0, 2.0], [1.0, 2.0])
    crossed = stats.paired_difference([1.0, 2.0], [2.0, 1.0])
    assert paired["mean"] == 0.0 and paired["std"] == 0.0
    assert crossed["mean"] == 0.0 and crossed["std"] == pytest.approx(math.sqrt(2.0))
    assert crossed["ci_high"] == pytest.approx(T_975[1] * math.sqrt(2.0) / math.sqrt(2.0))


def test_paired_difference_one_seed_has_no_interval():
    result = stats.paired_difference([40.3], [36.8])
    assert result["n"] == 1
    assert result["mean"] == pytest.approx(3.5)
    assert result["std"] is None
    assert result["ci_low"] is None and result["ci_high"] is None
    assert result["significant"] is None
    assert words.fmt_ci(result) == "n=1"


def test_paired_difference_drops_pairs_with_nan_and_rejects_unequal_lengths():
    result = stats.paired_difference([1.0, float("nan"), 3.0], [0.0, 5.0, 1.0])
    assert result["n"] == 2
    assert result["mean"] == pytest.approx(1.5)
    with pytest.raises(ValueError):
        stats.paired_difference([1.0], [1.0, 2.0])


def test_iters_to_fraction_first_iteration_at_90_percent_of_best():
    iters = [500, 100, 200, 300, 400]  # order of the input does not matter
    values = [100.0, 10.0, 50.0, 89.0, 91.0]
    assert stats.iters_to_fraction(iters, values) == 400
    assert stats.iters_to_fraction(iters, values, fraction=0.5) == 200  # reaching includes equality
    assert stats.iters_to_fraction([100, 200], [0.0, 0.0]) is None
    assert stats.iters_to_fraction([100, 200], [float("nan"), 4.0]) == 200
    assert stats.iters_to_fraction([], []) is None


def _diff(mean, n, low=None, high=None):
    return {"mean": mean, "n": n, "ci_low": low, "ci_high": high}


def test_ahead_status_rules():
    margin = 1.0
    assert stats.ahead_status(_diff(1.5, 1), margin) == stats.HOLDS
    assert stats.ahead_status(_diff(0.9, 1), margin) == stats.DOES_NOT_HOLD
    # with several seeds the whole interval must clear the margin, not just 0
    assert stats.ahead_status(_diff(3.0, 3, 1.2, 4.8), margin) == stats.HOLDS
    assert stats.ahead_status(_diff(3.0, 3, 1.0, 5.0), margin) == stats.NOT_ENOUGH
    assert stats.ahead_status(_diff(2.0, 3, 0.4, 3.6), margin) == stats.NOT_ENOUGH  # significant, inside the margin
    assert stats.ahead_status(_diff(3.0, 3, -0.5, 6.5), margin) == stats.NOT_ENOUGH
    assert stats.ahead_status(_diff(0.5, 3, 0.1, 0.9), margin) == stats.DOES_NOT_HOLD
    assert stats.ahead_status(_diff(None, 0), margin) == stats.NOT_ENOUGH


def test_within_status_rules():
    margin = 1.0
    assert stats.within_status(_diff(0.9, 1), margin) == stats.HOLDS
    assert stats.within_status(_diff(-2.0, 1), margin) == stats.HOLDS
    assert stats.within_status(_diff(1.1, 1), margin) == stats.DOES_NOT_HOLD
    assert stats.within_status(_diff(0.2, 3, -0.3, 0.7), margin) == stats.HOLDS
    assert stats.within_status(_diff(0.2, 3, -0.8, 1.2), margin) == stats.NOT_ENOUGH
    assert stats.within_status(_diff(3.0, 3, 2.0, 4.0), margin) == stats.DOES_NOT_HOLD
    # random ahead by more than the margin is within it a fortiori (one-sided: random not worse by > margin)
    assert stats.within_status(_diff(-3.0, 3, -4.0, -2.0), margin) == stats.HOLDS
    # the two rules are mirror images on every shape
    for d in (_diff(0.9, 1), _diff(1.5, 1), _diff(0.2, 3, -0.8, 1.2), _diff(3.0, 3, 2.0, 4.0), _diff(None, 0)):
        mirror = {stats.HOLDS: stats.DOES_NOT_HOLD, stats.DOES_NOT_HOLD: stats.HOLDS}
        expected = mirror.get(stats.ahead_status(d, margin), stats.NOT_ENOUGH)
        assert stats.within_status(d, margin) == expected


def _sample(mean, std, n):
    """n values with exactly this mean and sample standard deviation."""
    z = [i - (n - 1) / 2 for i in range(n)]
    scale = math.sqrt(sum(v * v for v in z) / (n - 1))
    return [mean + std * v / scale for v in z]


def test_seeds_to_settle_by_hand():
    # leads 4.8, 2.0, 6.3 AP over three seeds: mean 4.367, sd 2.183; interval [-1.06, +9.79] straddles 2.
    # The low end passes 2 when t(0.975, n-1) * 2.183 / sqrt(n) < 2.367: n=5 gives 2.71, n=6 gives 2.29.
    diff = stats.paired_difference([4.8, 2.0, 6.3], [0.0, 0.0, 0.0])
    assert stats.ahead_status(diff, 2.0) == stats.NOT_ENOUGH
    assert stats.seeds_to_settle(diff, 2.0) == 6
    # the projection agrees with the rule itself: the same mean and spread over 6 seeds holds, over 5 does not
    for n, status in ((5, stats.NOT_ENOUGH), (6, stats.HOLDS)):
        more = stats.paired_difference(_sample(diff["mean"], diff["std"], n), [0.0] * n)
        assert more["std"] == pytest.approx(diff["std"]) and more["mean"] == pytest.approx(diff["mean"])
        assert stats.ahead_status(more, 2.0) == status


def test_seeds_to_settle_below_the_margin_and_where_it_cannot_be_said():
    margin = 2.0
    # gap -0.2, sd 1.65 (about the 3-seed demo's AP75 gap): the high end falls to the margin when
    # t(0.975, n-1) * 1.65 / sqrt(n) <= 2.2: n=4 gives 2.63, n=5 gives 2.05
    diff = stats.paired_difference(_sample(-0.2, 1.65, 3), [0.0] * 3)
    assert stats.within_status(diff, margin) == stats.NOT_ENOUGH
    assert stats.seeds_to_settle(diff, margin) == 5
    settled = stats.paired_difference(_sample(-0.2, 1.65, 5), [0.0] * 5)
    assert stats.within_status(settled, margin) == stats.HOLDS
    # a mean 0.1 AP from the margin with sd 2 would need ~1,500 seeds: beyond the projection
    assert stats.seeds_to_settle(stats.paired_difference(_sample(1.9, 2.0, 3), [0.0] * 3), margin) is None
    assert stats.seeds_to_settle(stats.paired_difference(_sample(1.9, 2.0, 3), [0.0] * 3), margin,
                                 max_seeds=2000) > 1000
    # already clear of the margin: its own number of seeds
    assert stats.seeds_to_settle(stats.paired_difference(_sample(6.0, 0.5, 3), [0.0] * 3), margin) == 3
    # nothing to project from
    assert stats.seeds_to_settle(stats.paired_difference([3.0], [0.0]), margin) is None
    assert stats.seeds_to_settle(stats.paired_difference([3.0, 3.0], [1.0, 1.0]), margin) is None  # no spread
    assert stats.seeds_to_settle(stats.paired_difference(_sample(2.0, 1.0, 3), [0.0] * 3), margin) is None


def test_formatting_of_counts_and_intervals():
    assert words.fmt_count(1_280_000) == "1.28M"
    assert words.fmt_count(128_000_000) == "128M"
    assert words.fmt_count(4200) == "4.2k"
    assert words.fmt_count(950) == "950"
    assert words.fmt_ci({"n": 3, "ci_low": 2.94, "ci_high": 4.06, "confidence": 0.95}) == "95% CI [+2.9, +4.1], n=3"
    assert words.size_label("full", 8000) == "all 8,000 images"
    assert words.size_label(500, 500) == "500 images"
