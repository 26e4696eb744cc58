"""Significance (lead.evaluation.significance), hand-checked: over queries, over seeds."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hostile import refused, run_stage
from run_files import write_parquet

from lead.__main__ import main
from lead.errors import DataError, LeadError
from lead.evaluation.significance import (
    MAX_SEEDS,
    compare,
    compare_seeds,
    detectable_difference,
)


def per_query_frame(values: list[float], measure: str = "nDCG@10") -> pd.DataFrame:
    return pd.DataFrame(
        {"query_id": [f"q{i}" for i in range(len(values))], "measure": measure, "value": values}
    )


def test_compare_identical_systems_gives_no_difference():
    frame = per_query_frame([0.2, 0.5, 0.9, 0.4])
    result = compare(frame, frame.sample(frac=1, random_state=1), "nDCG@10")
    assert (result["delta"], result["p_ttest"], result["p_permutation"]) == (0.0, 1.0, 1.0)
    assert result["n"] == 4


def test_compare_known_p_values_and_direction():
    base = [0.5, 0.1, 0.3, 0.2, 0.4]
    better = [b + d for b, d in zip(base, [0.1, 0.2, 0.3, 0.4, 0.5], strict=True)]
    result = compare(per_query_frame(better), per_query_frame(base), "nDCG@10")
    # differences 0.1..0.5: mean 0.3, sd = sqrt((.04+.01+0+.01+.04)/4) = sqrt(.025)
    # t = 0.3 / (sqrt(.025)/sqrt(5)) = 3*sqrt(2) = 4.2426 with 4 degrees of freedom.
    # Student t CDF, 4 dof: F(t) = 1/2 + 3/8 * u * (1 - v/12), u = t/sqrt(1+t²/4), v = t²/(1+t²/4)
    t = 3 * math.sqrt(2)
    u, v = t / math.sqrt(1 + t * t / 4), t * t / (1 + t * t / 4)
    p_two_sided = 2 * (1 - (0.5 + 3 / 8 * u * (1 - v / 12)))  # = 0.0132356
    assert result["t_statistic"] == pytest.approx(t)
    assert result["p_ttest"] == pytest.approx(p_two_sided)
    assert result["p_ttest"] == pytest.approx(0.0132356, abs=1e-7)
    # 5 queries -> all 2^5 = 32 sign flips enumerated; |mean| >= 0.3 only for all-plus and
    # all-minus (any flipped subset S gives |1.5 - 2 sum(S)| < 1.5) -> p = 2/32
    assert result["exact"] and result["p_permutation"] == pytest.approx(2 / 32)
    assert result["delta"] == pytest.approx(0.3)
    swapped = compare(per_query_frame(base), per_query_frame(better), "nDCG@10")
    assert swapped["delta"] == pytest.approx(-0.3)
    assert swapped["p_permutation"] == result["p_permutation"]


def test_compare_sampled_permutations_are_seeded_and_deterministic():
    # 20 queries -> 2^20 sign vectors > 10,000: sampled. All differences positive and distinct:
    # only the all-plus/all-minus vectors (chance 2/2^20 each draw) reach the observed mean,
    # so no draw hits it and p = (0 + 1) / (10,000 + 1).
    base = [0.05 * i for i in range(20)]
    better = [b + 0.01 * (i + 1) for i, b in enumerate(base)]
    first = compare(per_query_frame(better), per_query_frame(base), "nDCG@10", seed=3)
    again = compare(per_query_frame(better), per_query_frame(base), "nDCG@10", seed=3)
    assert first == again
    assert not first["exact"] and first["p_permutation"] == pytest.approx(1 / 10_001)


def test_compare_cli_and_query_set_mismatch(tmp_path):
    a = write_parquet(per_query_frame([0.5, 0.7, 0.9]), tmp_path / "a.parquet")
    b = write_parquet(per_query_frame([0.5, 0.6, 0.8]), tmp_path / "b.parquet")
    out = tmp_path / "cmp.parquet"
    argv = ["compare", "--per-query", str(a), str(b), "--measure", "nDCG@10", "--out", str(out)]
    assert main(argv) == 0
    row = pq.read_table(out).to_pylist()[0]
    assert row["n"] == 3 and row["delta"] == pytest.approx((0 + 0.1 + 0.1) / 3)
    short = write_parquet(per_query_frame([0.5, 0.6]), tmp_path / "short.parquet")
    with pytest.raises(DataError, match=r"short\.parquet.*'q2'"):
        compare(a, short, "nDCG@10")
    with pytest.raises(DataError, match="measure 'RR@10'"):
        compare(a, b, "RR@10")


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


# detectable_difference: the paired t-test's minimum detectable difference (noncentral t)
Z_NORMAL = 1.959963984540054 + 0.8416212335729143  # z_{0.975} + z_{0.8}


def test_detectable_difference_tends_to_the_normal_approximation_for_many_seeds():
    for n, tolerance in ((1000, 2e-3), (10_000, 2e-4)):
        normal = Z_NORMAL * 2.0 / math.sqrt(n)
        assert detectable_difference(2.0, n) == pytest.approx(normal, rel=tolerance)
    # with few seeds the t-test needs far more: 3.26 sd at n = 3 (normal: 1.62 sd)
    assert detectable_difference(1.0, 3) == pytest.approx(3.264, abs=1e-3)
    assert Z_NORMAL / math.sqrt(3) == pytest.approx(1.617, abs=1e-3)
    for n in (2, 3, 10, 100):
        assert detectable_difference(1.0, n) > Z_NORMAL / math.sqrt(n)


def test_detectable_difference_matches_published_sample_sizes():
    # G*Power (Faul et al. 2007) and R's pwr.t.test(type = "paired"), alpha 0.05 two-sided,
    # power 0.8: effect size dz = 0.5 needs n = 34 (pwr: 33.37), dz = 1 needs n = 10.
    assert detectable_difference(1.0, 33) > 0.5 > detectable_difference(1.0, 34)
    assert detectable_difference(1.0, 9) > 1.0 > detectable_difference(1.0, 10)
    # power 0.95: dz = 0.5 needs n = 54 (G*Power)
    assert (detectable_difference(1.0, 53, power=0.95) > 0.5
            > detectable_difference(1.0, 54, power=0.95))


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_paired_t_tests_at_the_detectable_difference_reject_with_the_asked_power(n):
    from scipy.stats import ttest_rel

    sd = 1.3
    delta = detectable_difference(sd, n)
    rng = np.random.default_rng(20240607 + n)
    experiments = 20_000  # the rejection rate's standard error: 0.003
    b = rng.normal(30.0, 1.0, size=(experiments, n))
    a = b + rng.normal(delta, sd, size=(experiments, n))
    rejected = ttest_rel(a, b, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.02)
    # half that difference is detected far less often
    half = ttest_rel(b + rng.normal(delta / 2, sd, size=(experiments, n)), b, axis=1).pvalue
    assert (half < 0.05).mean() < 0.6


def test_detectable_difference_shrinks_with_seeds_and_scales_with_the_sd():
    values = [detectable_difference(1.0, n) for n in range(2, 17)]
    assert all(later < earlier for earlier, later in itertools.pairwise(values))
    assert detectable_difference(2.5, 4) == pytest.approx(2.5 * detectable_difference(1.0, 4))
    assert detectable_difference(1.0, 4, power=0.9) > detectable_difference(1.0, 4)
    assert detectable_difference(1.0, 4, alpha=0.01) > detectable_difference(1.0, 4)
    assert detectable_difference(0.0, 3) == 0.0


def test_detectable_difference_refuses_what_has_no_answer():
    for args, match in (((1.0, 1), "n >= 2"), ((1.0, 2.5), "n >= 2"),
                        ((math.nan, 3), "finite"), ((-1.0, 3), "finite"),
                        ((1.0, 3, 0.05, 0.04), "alpha < power"),
                        ((1.0, 3, 0.05, 1.0), "alpha < power")):
        with pytest.raises(ValueError, match=match):
            detectable_difference(*args)


# Hostile input: each refusal is one line naming the culprit, and changes no file (hostile.py).


def _scored(capsys, work: Path, name: str, qrels: str, level: int = 1) -> Path:
    """per_query.parquet of one run scored by `lead evaluate` against `qrels` (TREC text)."""
    (work / f"{name}.qrels").write_text(qrels)
    run = work / "run.trec"
    run.write_text("".join(f"q{q} Q0 d{d} {d + 1} {10 - d} t\n" for q in range(3)
                           for d in range(3)))
    status, err = run_stage(capsys, "evaluate", "--run", run, "--qrels", work / f"{name}.qrels",
                            "--out", work / name, "--relevance-level", level, "--measures",
                            "RR@10")
    assert status == 0, err
    return work / name / "per_query.parquet"


QRELS = "q0 0 d0 2\nq1 0 d1 1\nq2 0 d2 2\n"


@pytest.mark.parametrize("other", ["other judgments", "another relevance level"])
def test_compare_refuses_files_scored_on_other_judgments(capsys, work, roots, other):
    """Per-query values against different qrels (or levels) agree on nothing a paired test
    measures; compare used to test them anyway."""
    a = _scored(capsys, work, "a", QRELS)
    if other == "other judgments":
        b = _scored(capsys, work, "b", QRELS.replace("d1 1", "d0 1"))
        expect = (f"{b}: was scored against other judgments ({work / 'b.qrels'}) than {a} "
                  f"({work / 'a.qrels'})",)
    else:
        b = _scored(capsys, work, "b", QRELS, level=2)
        expect = (f"{b}: was scored at relevance level 2, {a} at 1",)
    refused(capsys, roots, "compare", "--per-query", a, b, "--measure", "RR@10", "--out",
            work / "c.parquet", expect=expect)
    same = _scored(capsys, work, "same", QRELS)  # the same judgments from another file: fine
    status, err = run_stage(capsys, "compare", "--per-query", a, same, "--measure", "RR@10",
                            "--out", work / "c.parquet")
    assert status == 0, err


@pytest.mark.parametrize("which", [0, 1])
def test_compare_names_an_empty_per_query_file(capsys, work, roots, which):
    files = [_scored(capsys, work, "a", QRELS), work / "empty.parquet"]
    files[1].write_bytes(b"")
    files = files[::-1] if which else files
    refused(capsys, roots, "compare", "--per-query", *files, "--measure", "RR@10", "--out",
            work / "c.parquet", expect=(f"{work / 'empty.parquet'}: not a readable parquet file",))


def test_an_exact_test_over_many_queries_runs_in_bounded_memory():
    """Asking for 2^20 permutations over 20 queries enumerates every sign vector: all at once
    they took 170 MB (GBs from 22 queries, a MemoryError or a killed process); in chunks,
    the same p value in a few MB."""
    import tracemalloc

    rng = np.random.default_rng(0)
    a, b = per_query_frame(list(rng.random(20))), per_query_frame(list(rng.random(20)))
    tracemalloc.start()
    try:
        result = compare(a, b, "nDCG@10", permutations=2**20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result["exact"] and result["permutations"] == 2**20
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.0f} MB"
    differences = (a["value"] - b["value"]).to_numpy()
    signs = 1 - 2 * ((np.arange(2**20)[:, None] >> np.arange(20)) & 1)  # the unchunked count
    observed = abs(differences.mean())
    expected = np.count_nonzero(np.abs(signs @ differences) / 20 >= observed - 1e-12) / 2**20
    assert result["p_permutation"] == expected
