"""Significance across training seeds, hand-checked (the per-query `compare` is tested in
test_evaluate.py)."""

from __future__ import annotations

import math

import pytest

from lead.errors import LeadError
from lead.evaluation.significance import MAX_SEEDS, compare_seeds


def test_three_seeds_by_hand():
    a = {1: 0.30, 2: 0.34, 3: 0.32}
    b = {3: 0.31, 1: 0.28, 2: 0.31}  # paired by seed, not by position
    result = compare_seeds(a, b)
    # A: mean 0.32; deviations -0.02, 0.02, 0 -> sd = sqrt(0.0008 / 2) = 0.02
    # B: mean 0.30; deviations -0.02, 0.01, 0.01 -> sd = sqrt(0.0006 / 2) = 0.0173205
    # differences (seeds 1, 2, 3) 0.02, 0.03, 0.01: mean 0.02, sd = sqrt(0.0002 / 2) = 0.01
    # t = 0.02 / (0.01 / sqrt(3)) = 2 sqrt(3) = 3.4641016 with 2 degrees of freedom.
    # Student t with 2 dof: P(|T| >= t) = 1 - t / sqrt(2 + t²) = 1 - 2 sqrt(3) / sqrt(14)
    #   = 1 - 3.4641016 / 3.7416574 = 0.0741799
    # Sign flips: |±0.02 ± 0.03 ± 0.01| reaches 0.06 only for all-plus and all-minus -> 2/8.
    assert result["n"] == 3
    assert result["mean_a"] == pytest.approx(0.32)
    assert result["sd_a"] == pytest.approx(0.02)
    assert result["mean_b"] == pytest.approx(0.30)
    assert result["sd_b"] == pytest.approx(0.0173205, abs=1e-7)
    assert result["delta"] == pytest.approx(0.02)
    assert result["sd_delta"] == pytest.approx(0.01)
    assert result["t_statistic"] == pytest.approx(3.4641016, abs=1e-6)
    assert result["p_ttest"] == pytest.approx(0.0741799, abs=1e-6)
    assert result["p_permutation"] == pytest.approx(0.25)
    swapped = compare_seeds(b, a)
    assert swapped["delta"] == pytest.approx(-0.02)
    assert swapped["t_statistic"] == pytest.approx(-3.4641016, abs=1e-6)
    assert (swapped["p_ttest"], swapped["p_permutation"]) == pytest.approx((0.0741799, 0.25))


def test_zero_variance_differences_are_explicit():
    # Every seed exactly 0.25 better: no spread, t = +inf, p = 0; flips: all-plus/all-minus.
    better = compare_seeds({1: 0.75, 2: 0.5, 3: 1.0}, {1: 0.5, 2: 0.25, 3: 0.75})
    assert better["t_statistic"] == math.inf and better["p_ttest"] == 0.0
    assert (better["delta"], better["sd_delta"]) == (0.25, 0.0)
    assert better["p_permutation"] == pytest.approx(2 / 8)
    # Identical methods: t = 0, p = 1; every flip gives mean 0 >= 0 -> p = 1.
    same = compare_seeds({7: 0.5, 8: 0.6}, {7: 0.5, 8: 0.6})
    assert (same["t_statistic"], same["p_ttest"], same["p_permutation"]) == (0.0, 1.0, 1.0)
    # One seed: no spread to estimate -> sd and t undefined; both flips reach |mean| -> p = 1.
    single = compare_seeds({0: 0.4}, {0: 0.3})
    assert math.isnan(single["sd_a"]) and math.isnan(single["t_statistic"])
    assert math.isnan(single["p_ttest"]) and single["p_permutation"] == 1.0


def test_seeds_must_match():
    with pytest.raises(LeadError, match=r"only A has \[3\], only B has \[4\]"):
        compare_seeds({1: 0.3, 2: 0.3, 3: 0.3}, {1: 0.2, 2: 0.2, 4: 0.2})
    with pytest.raises(LeadError, match="1 to 16 seeds, got 0"):
        compare_seeds({}, {})
    many = {seed: 0.1 * seed for seed in range(MAX_SEEDS + 1)}
    with pytest.raises(LeadError, match="got 17"):
        compare_seeds(many, many)
    with pytest.raises(LeadError, match="finite"):
        compare_seeds({1: math.nan, 2: 0.3}, {1: 0.2, 2: 0.2})
