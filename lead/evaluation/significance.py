"""Paired significance tests of system A against system B: over the queries of one run
(`compare`, from per-query metrics) and over training seeds (`compare_seeds`, from one value
per seed). Both give Student's paired t-test and a paired sign-flip randomisation test, two-
sided; delta is always A - B. `detectable_difference` says how large a true difference the
paired t-test over n seeds would detect with a given power.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from lead.errors import ConfigError, DataError, LeadError
from lead.evaluation.runs import Source, read_source
from lead.io import provenance, read_provenance, write_table
from lead.schemas import PER_QUERY_METRICS

DEFAULT_PERMUTATIONS = 10_000
COMPARISON = pa.schema(
    [
        ("measure", pa.string()),
        ("n", pa.int64()),
        ("mean_a", pa.float64()),
        ("mean_b", pa.float64()),
        ("delta", pa.float64()),
        ("t_statistic", pa.float64()),
        ("p_ttest", pa.float64()),
        ("p_permutation", pa.float64()),
        ("permutations", pa.int64()),
        ("exact", pa.bool_()),
        ("seed", pa.int64()),
    ]
)
MAX_SEEDS = 16  # compare_seeds enumerates all 2^n sign vectors
_PERMUTATION_CHUNK = 1000
_ENUMERATION_CHUNK = 1 << 16  # sign vectors enumerated at a time


def _per_query_values(per_query: Source, measure: str) -> tuple[pd.Series, str]:
    table = read_source(per_query, "per-query metrics", PER_QUERY_METRICS.names)
    frame = table.frame
    selected = frame["measure"] == measure
    if not selected.any():
        available = sorted(frame["measure"].unique().tolist())
        raise DataError(table.label, f"measure {measure!r}", f"absent; the file has {available}")
    values = pd.Series(
        table.numbers("value", integral=False)[selected.to_numpy()],
        index=table.ids("query_id")[selected].to_numpy(),
    )
    if values.index.has_duplicates:
        query_id = values.index[values.index.duplicated()][0]
        raise DataError(table.label, f"query {query_id!r}", f"has two {measure} values")
    return values.sort_index(), table.label


def _permutation_p(
    differences: np.ndarray, permutations: int, seed: int
) -> tuple[float, int, bool]:
    """Two-sided paired randomisation test by sign flips of the paired differences.

    Enumerates all 2^n sign vectors when that is no more than `permutations` (exact p);
    otherwise draws `permutations` seeded vectors and uses (hits + 1) / (permutations + 1).
    """
    n = len(differences)
    observed = abs(differences.mean())
    tolerance = 1e-12 * max(1.0, observed)  # equal means must not miss by a rounding error
    if 2**n <= permutations:
        # In chunks: all 2^n sign vectors at once take 8 n 2^n bytes (GBs from n = 22).
        hits = 0
        for start in range(0, 2**n, _ENUMERATION_CHUNK):
            rows = np.arange(start, min(start + _ENUMERATION_CHUNK, 2**n), dtype=np.int64)
            bits = (rows[:, None] >> np.arange(n)) & 1
            means = np.abs((1 - 2 * bits) @ differences) / n
            hits += int(np.count_nonzero(means >= observed - tolerance))
        return float(hits / 2**n), 2**n, True
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, permutations, _PERMUTATION_CHUNK):
        size = min(_PERMUTATION_CHUNK, permutations - start)
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(size, n))
        hits += int(np.count_nonzero(np.abs(signs @ differences) / n >= observed - tolerance))
    return (hits + 1) / (permutations + 1), permutations, False


def _paired_t(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """scipy's paired t-test, with the zero-variance cases it leaves undefined made explicit."""
    from scipy.stats import ttest_rel

    differences = a - b
    if len(differences) < 2:
        return math.nan, math.nan
    # Equal up to float rounding (e.g. one model's scores shifted by a constant): scipy would
    # divide by a variance of rounding errors.
    if np.ptp(differences) <= 1e-12 * max(1.0, float(np.max(np.abs(differences)))):
        if abs(differences[0]) <= 1e-12:
            return 0.0, 1.0
        return math.copysign(math.inf, differences[0]), 0.0
    result = ttest_rel(a, b)
    return float(result.statistic), float(result.pvalue)


def compare(
    per_query_a: Source,
    per_query_b: Source,
    measure: str,
    *,
    permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired significance of system A against system B on one measure, over queries.

    Both per-query tables must cover the same queries (they do when both runs were scored on
    the same qrels, since missing queries are scored 0). Returns the fields of the COMPARISON
    schema.
    """
    if permutations < 1:
        raise ConfigError(f"permutations must be >= 1, got {permutations}")
    _check_same_judgments(per_query_a, per_query_b)
    a, label_a = _per_query_values(per_query_a, measure)
    b, label_b = _per_query_values(per_query_b, measure)
    only_a, only_b = a.index.difference(b.index), b.index.difference(a.index)
    if len(only_a) or len(only_b):
        label, query_id, other = (
            (label_b, only_a[0], label_a) if len(only_a) else (label_a, only_b[0], label_b)
        )
        raise DataError(
            label, f"query {query_id!r}",
            f"missing; both systems must be scored on the same queries (it is in {other})",
        )
    values_a, values_b = a.to_numpy(), b.loc[a.index].to_numpy()
    t_statistic, p_ttest = _paired_t(values_a, values_b)
    p_permutation, drawn, exact = _permutation_p(values_a - values_b, permutations, seed)
    mean_a, mean_b = math.fsum(values_a) / len(a), math.fsum(values_b) / len(b)
    return {
        "measure": measure,
        "n": len(a),
        "mean_a": mean_a,
        "mean_b": mean_b,
        "delta": mean_a - mean_b,
        "t_statistic": t_statistic,
        "p_ttest": p_ttest,
        "p_permutation": p_permutation,
        "permutations": drawn,
        "exact": exact,
        "seed": seed,
    }


def _check_same_judgments(a: Source, b: Source) -> None:
    """Per-query files scored against different judgments, or at different relevance levels,
    agree on nothing a paired test could measure: refused, naming both. Their provenance
    (lead.evaluation.evaluate) records the qrels' fingerprint and the level."""
    if not all(isinstance(source, str | Path) for source in (a, b)):
        return
    scored = []
    for source in (a, b):
        try:
            prov = read_provenance(source)
        except DataError:  # not a parquet file: _per_query_values names the problem
            return
        scored.append((prov.get("qrels_sha256"), (prov.get("settings") or {}).get(
            "relevance_level"), prov.get("qrels")))
    (qrels_a, level_a, name_a), (qrels_b, level_b, name_b) = scored
    if qrels_a and qrels_b and qrels_a != qrels_b:
        raise DataError(b, None, f"was scored against other judgments ({name_b}) than {a} "
                                 f"({name_a}); compare runs scored on the same qrels")
    if level_a is not None and level_b is not None and level_a != level_b:
        raise DataError(b, None, f"was scored at relevance level {level_b}, {a} at {level_a}; "
                                 "compare runs scored at the same level")


def write_comparison(result: dict[str, Any], out_path: str | Path, sources: Sequence[str]) -> None:
    """Write one `compare` result as a one-row parquet (COMPARISON schema)."""
    settings = {key: result[key] for key in ("measure", "permutations", "seed")}
    prov = provenance("compare", settings, inputs=[str(source) for source in sources])
    write_table(pa.Table.from_pylist([result], COMPARISON), out_path, prov)


def _mean_sd(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; NaN for one value)."""
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(math.fsum((values - mean) ** 2) / (len(values) - 1))


def compare_seeds(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, Any]:
    """Paired significance of method A against method B over training seeds.

    `a` and `b` map each seed to the method's metric value for that seed; the seeds must be
    the same. The permutation p is exact: all 2^n sign flips of the paired differences.
    Returns n, mean_a, sd_a, mean_b, sd_b (sample sds), delta and sd_delta (mean and sample
    sd of the differences A - B), t_statistic, p_ttest and p_permutation.
    """
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise LeadError(
            f"seeds must match to pair the runs: only A has {only_a}, only B has {only_b}"
        )
    seeds = sorted(a)
    if not 1 <= len(seeds) <= MAX_SEEDS:
        raise LeadError(f"compare_seeds takes 1 to {MAX_SEEDS} seeds, got {len(seeds)}")
    values_a = np.array([a[seed] for seed in seeds], dtype=np.float64)
    values_b = np.array([b[seed] for seed in seeds], dtype=np.float64)
    if not (np.isfinite(values_a).all() and np.isfinite(values_b).all()):
        raise LeadError(f"seed values must be finite numbers: A {a}, B {b}")
    differences = values_a - values_b
    (mean_a, sd_a), (mean_b, sd_b) = _mean_sd(values_a), _mean_sd(values_b)
    delta, sd_delta = _mean_sd(differences)
    t_statistic, p_ttest = _paired_t(values_a, values_b)
    p_permutation, _, _ = _permutation_p(differences, 2 ** len(seeds), seed=0)
    return {
        "n": len(seeds),
        "mean_a": mean_a,
        "sd_a": sd_a,
        "mean_b": mean_b,
        "sd_b": sd_b,
        "delta": delta,
        "sd_delta": sd_delta,
        "t_statistic": t_statistic,
        "p_ttest": p_ttest,
        "p_permutation": p_permutation,
    }


def detectable_difference(
    sd_differences: float, n: int, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest true mean paired difference that a two-sided paired t-test at level
    `alpha` over `n` seeds detects with probability `power`, when the paired differences have
    standard deviation `sd_differences`.

    With n paired differences d_i ~ N(delta, sd²), t = mean(d) / (sd(d) / sqrt(n)) follows the
    noncentral t distribution with n - 1 degrees of freedom and noncentrality
    lambda = delta sqrt(n) / sd. The test rejects when |t| > c = t_{1-alpha/2, n-1}, so its
    power is

        P(lambda) = 1 - F_{n-1, lambda}(c) + F_{n-1, lambda}(-c)

    (F: the noncentral t CDF, scipy.stats.nct; F_{n-1, lambda}(-c) = 1 - F_{n-1, -lambda}(c)
    is computed as that upper tail), which grows with lambda from alpha at 0. The
    function solves P(lambda*) = power numerically (Brent's method) and returns

        delta* = lambda* sd / sqrt(n).

    For large n this tends to the normal approximation (z_{1-alpha/2} + z_power) sd / sqrt(n)
    (2.80 sd / sqrt(n) at alpha 0.05 and power 0.8); with few seeds it is far larger (the t
    quantile and the noncentral t's spread): 3.26 sd at n = 3 against 1.62 sd by the normal
    approximation, 0.996 sd at n = 10 against 0.886 sd. `sd_differences` is usually estimated
    from the same few seeds, so the answer is an estimate too. Needs n >= 2; a zero sd gives 0.
    """
    from scipy.optimize import brentq
    from scipy.stats import nct
    from scipy.stats import t as student_t

    if int(n) != n or n < 2:
        raise ValueError(f"a paired t-test needs n >= 2 paired values, got n = {n}")
    if not 0 < alpha < power < 1:
        raise ValueError(f"need 0 < alpha < power < 1, got alpha = {alpha}, power = {power}")
    if not (math.isfinite(sd_differences) and sd_differences >= 0):
        raise ValueError(f"sd_differences must be a finite number >= 0, got {sd_differences}")
    if sd_differences == 0:
        return 0.0
    df = int(n) - 1
    critical = float(student_t.ppf(1 - alpha / 2, df))

    def shortfall(noncentrality: float) -> float:
        # F(-c) as the upper tail of -t ~ nct(df, -lambda): scipy's nct.cdf far in the lower
        # tail returns NaN (df 1, lambda 8), its sf there a tiny number or 0.
        rejected = nct.sf(critical, df, noncentrality) + nct.sf(critical, df, -noncentrality)
        if not math.isfinite(rejected):
            raise LeadError(f"the noncentral t power at lambda = {noncentrality} is not finite")
        return float(rejected) - power

    upper = 1.0
    while shortfall(upper) < 0:  # power(0) = alpha < power: bracket the root from above
        upper *= 2
    noncentrality = brentq(shortfall, 0.0, upper, xtol=1e-12, rtol=1e-12, maxiter=200)
    return noncentrality * sd_differences / math.sqrt(n)
