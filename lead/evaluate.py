"""Scoring: trec_eval semantics (-M depth cut, -c missing queries, -l relevance level) around
pytrec_eval, a TREC run export, and paired significance tests between two systems.

Conventions every function here shares (see docs/artifacts.md):
- Ranking order inside a query: the run's `rank` column when present, then score descending,
  then `doc_id` ascending. pytrec_eval (like trec_eval) re-sorts by score and breaks exact ties
  by docno *descending*, so it is never shown the real scores: it gets strictly decreasing
  scores derived from the tie-broken rank, and cannot reorder anything.
- Measures are named as ir_measures names them: `RR@10`, `nDCG@10`, `R@1000`, `AP@1000`.
  Every measure is computed on the run cut at its depth (trec_eval -M), so `RR@10` is MRR@10.
  Binary measures (RR, AP, R) count grade >= relevance level as relevant and carry it in their
  name when it is not 1 (`AP(rel=2)@1000`); nDCG always uses the graded judgments as gains
  (gain = grade, log2 discount, as trec_eval's ndcg_cut) and keeps its name.
- Which queries count: every qrels query with at least one document judged at or above the
  relevance level. A counted query absent from the run scores 0 on every measure (trec_eval
  -c); run queries absent from the qrels are ignored. A qrels query whose judgments all lie
  below the level is NOT counted (trec_eval -c would average a 0 for it): no system can score
  on it, so it would only dilute the mean by an amount that depends on the judging, not the
  system. On MS MARCO and TREC DL every judged query has a relevant document, so the two
  rules agree there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lead.errors import ConfigError, DataError, LeadError
from lead.io import atomic_path, provenance, write_table
from lead.schemas import METRICS, PER_QUERY_METRICS

DEFAULT_MEASURES = ("RR@10", "nDCG@10", "R@50", "R@100", "R@1000", "AP@1000")
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

Frame = pd.DataFrame | str | Path
_MEASURE_PATTERN = re.compile(r"^(?P<family>RR|AP|R|nDCG)(?:\(rel=(?P<rel>\d+)\))?@(?P<depth>\d+)$")
# family -> (pytrec_eval measure to request, key of its per-query value); {d} = the depth.
_TREC_MEASURES = {
    "RR": ("recip_rank", "recip_rank"),
    "AP": ("map", "map"),
    "R": ("recall.{d}", "recall_{d}"),
    "nDCG": ("ndcg_cut.{d}", "ndcg_cut_{d}"),
}
_BINARY_FAMILIES = ("RR", "AP", "R")
_PERMUTATION_CHUNK = 1000


@dataclass(frozen=True)
class Measure:
    family: str
    depth: int

    def name(self, relevance_level: int) -> str:
        """The ir_measures name at a relevance level: `AP(rel=2)@1000`, `nDCG@10`."""
        if self.family in _BINARY_FAMILIES and relevance_level != 1:
            return f"{self.family}(rel={relevance_level})@{self.depth}"
        return f"{self.family}@{self.depth}"

    def trec_request(self) -> str:
        return _TREC_MEASURES[self.family][0].format(d=self.depth)

    def trec_key(self) -> str:
        return _TREC_MEASURES[self.family][1].format(d=self.depth)


def parse_measure(name: str) -> Measure:
    """Parse a base measure name (`RR@10`, `nDCG@10`, `R@1000`, `AP@1000`).

    The relevance level is an argument of the evaluation, not part of the requested name, so
    one evaluation has one set of counted queries.
    """
    match = _MEASURE_PATTERN.match(name)
    if match is None or int(match["depth"]) < 1:
        raise ConfigError(
            f"unknown measure {name!r}; expected RR@k, AP@k, R@k or nDCG@k with k >= 1"
        )
    if match["rel"] is not None:
        raise ConfigError(
            f"measure {name!r}: give the relevance level separately (relevance_level), "
            f"not in the measure name"
        )
    return Measure(match["family"], int(match["depth"]))


def measure_name(base: str, relevance_level: int) -> str:
    """The name under which `evaluate_run` reports `base` at `relevance_level`."""
    return parse_measure(base).name(relevance_level)


# --------------------------------------------------------------------------- input checks


def _load(source: Frame, what: str, required: Sequence[str], optional: Sequence[str] = ()):
    """Read a DataFrame or parquet file; return (frame, label naming it in errors)."""
    if isinstance(source, pd.DataFrame):
        label, frame = f"<{what} DataFrame>", source
        present = set(frame.columns)
    else:
        label = str(source)
        path = Path(source)
        if not path.exists():
            raise DataError(path, None, "file not found")
        try:
            present = set(pq.read_schema(path).names)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(path, None, f"not a readable parquet file: {err}") from err
    missing = [column for column in required if column not in present]
    if missing:
        raise DataError(
            label, f"column {missing[0]!r}", f"missing; a {what} needs columns {list(required)}"
        )
    columns = [*required, *(column for column in optional if column in present)]
    if not isinstance(source, pd.DataFrame):
        frame = pq.read_table(source, columns=columns).to_pandas()
    return frame[columns].reset_index(drop=True), label


def _ids(frame: pd.DataFrame, column: str, label: str) -> pd.Series:
    nulls = frame[column].isna().to_numpy()
    if nulls.any():
        row = int(np.flatnonzero(nulls)[0])
        raise DataError(label, f"row {row}, column {column!r}", "is null; expected an id")
    return frame[column].astype(str)


def _numbers(frame: pd.DataFrame, column: str, label: str, *, integral: bool) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if integral:
        bad |= np.isfinite(values) & (values != np.round(values))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        expected = "an integer" if integral else "a finite number"
        raise DataError(
            label, f"row {row}, column {column!r}", f"{frame[column].iloc[row]!r} is not {expected}"
        )
    return values


def _sorted_indices(frame: pd.DataFrame, keys: list[tuple[str, str]]) -> np.ndarray:
    """Row order under `keys` (Arrow's multi-key sort: stable, and much faster than pandas')."""
    columns = [name for name, _ in keys]
    table = pa.Table.from_pandas(frame[columns], preserve_index=False)
    return pc.sort_indices(table, sort_keys=keys).to_numpy()


def _no_duplicates(frame: pd.DataFrame, label: str) -> None:
    order = _sorted_indices(frame, [("query_id", "ascending"), ("doc_id", "ascending")])
    query_ids = frame["query_id"].to_numpy(dtype=object)[order]
    doc_ids = frame["doc_id"].to_numpy(dtype=object)[order]
    repeats = (query_ids[1:] == query_ids[:-1]) & (doc_ids[1:] == doc_ids[:-1])
    if repeats.any():
        row = int(order[1:][repeats].min())  # the stable sort puts later occurrences second
        query_id, doc_id = frame["query_id"].iloc[row], frame["doc_id"].iloc[row]
        raise DataError(
            label, f"row {row}", f"duplicate (query_id, doc_id) = ({query_id!r}, {doc_id!r})"
        )


def rank_run(run: Frame) -> pd.DataFrame:
    """Validate a run and put it in the project's ranking order.

    Returns columns query_id, doc_id, score (float64), rank (1-based, consecutive per query),
    sorted by query_id then rank. Order: the input `rank` when present, then score descending,
    then doc_id ascending, so the result never depends on the input row order.
    """
    frame, label = _load(run, "run", ("query_id", "doc_id", "score"), ("rank",))
    ranked = pd.DataFrame(
        {
            "query_id": _ids(frame, "query_id", label),
            "doc_id": _ids(frame, "doc_id", label),
            "score": _numbers(frame, "score", label, integral=False),
        }
    )
    _no_duplicates(ranked, label)
    keys = [("query_id", "ascending"), ("score", "descending"), ("doc_id", "ascending")]
    if "rank" in frame.columns:
        ranked["given_rank"] = _numbers(frame, "rank", label, integral=True)
        keys.insert(1, ("given_rank", "ascending"))
    ranked = ranked.take(_sorted_indices(ranked, keys)).reset_index(drop=True)
    query_ids = ranked["query_id"].to_numpy(dtype=object)
    starts = np.zeros(len(ranked), dtype=np.int64)
    for _, start, stop in _query_slices(query_ids):
        starts[start:stop] = start
    ranked["rank"] = np.arange(len(ranked), dtype=np.int64) - starts + 1
    return ranked[["query_id", "doc_id", "score", "rank"]]


def load_qrels(qrels: Frame) -> pd.DataFrame:
    """Validate qrels: string ids, integer grades, one judgment per (query_id, doc_id)."""
    frame, label = _load(qrels, "qrels", ("query_id", "doc_id", "relevance"))
    checked = pd.DataFrame(
        {
            "query_id": _ids(frame, "query_id", label),
            "doc_id": _ids(frame, "doc_id", label),
            "relevance": _numbers(frame, "relevance", label, integral=True).astype(np.int64),
        }
    )
    _no_duplicates(checked, label)
    return checked


# --------------------------------------------------------------------------- evaluation


def _query_slices(query_ids: np.ndarray):
    """(query_id, start, stop) for each run of equal ids in an array sorted by query."""
    if len(query_ids) == 0:
        return
    starts = np.concatenate([[0], np.flatnonzero(query_ids[1:] != query_ids[:-1]) + 1])
    stops = np.concatenate([starts[1:], [len(query_ids)]])
    for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
        yield query_ids[start], start, stop


def _trec_run(ranked: pd.DataFrame, depth: int) -> dict[str, dict[str, float]]:
    """The run cut at `depth`, as pytrec_eval input with scores = -rank (strictly decreasing)."""
    cut = ranked[ranked["rank"] <= depth]
    query_ids = cut["query_id"].to_numpy(dtype=object)
    doc_ids = cut["doc_id"].to_numpy(dtype=object)
    scores = (-cut["rank"].to_numpy(dtype=np.float64)).tolist()
    return {
        query_id: dict(zip(doc_ids[start:stop], scores[start:stop], strict=True))
        for query_id, start, stop in _query_slices(query_ids)
    }


def _trec_qrels(qrels: pd.DataFrame, relevance_level: int) -> dict[str, dict[str, int]]:
    """Judgments of the counted queries: those with a document at or above the level."""
    counted = qrels.loc[qrels["relevance"] >= relevance_level, "query_id"].unique()
    kept = qrels[qrels["query_id"].isin(counted)]
    nested: dict[str, dict[str, int]] = {}
    for query_id, doc_id, grade in zip(
        kept["query_id"].tolist(), kept["doc_id"].tolist(), kept["relevance"].tolist(), strict=True
    ):
        nested.setdefault(query_id, {})[doc_id] = grade
    return nested


def _check_level(relevance_level: int) -> int:
    if isinstance(relevance_level, bool) or not isinstance(relevance_level, int | np.integer):
        raise ConfigError(f"relevance level must be an integer, got {relevance_level!r}")
    if relevance_level < 1:
        raise ConfigError(f"relevance level must be >= 1, got {relevance_level}")
    return int(relevance_level)


def _parse_measures(measures: Sequence[str]) -> list[Measure]:
    if isinstance(measures, str) or not measures:
        raise ConfigError(f"measures must be a non-empty list of names, got {measures!r}")
    if len(set(measures)) != len(measures):
        raise ConfigError(f"measures are listed twice: {list(measures)}")
    return [parse_measure(name) for name in measures]


def evaluate_run(
    run: Frame,
    qrels: Frame,
    *,
    relevance_level: int = 1,
    measures: Sequence[str] = DEFAULT_MEASURES,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score a run: (summary[measure, value], per_query[query_id, measure, value]).

    The summary is the plain mean of the per-query values over the counted queries (module
    docstring); per-query rows are sorted by query_id, measures in the requested order.
    """
    import pytrec_eval

    level = _check_level(relevance_level)
    parsed = _parse_measures(measures)
    ranked = rank_run(run)
    judged = _trec_qrels(load_qrels(qrels), level)
    if not judged:
        label = str(qrels) if not isinstance(qrels, pd.DataFrame) else "<qrels DataFrame>"
        raise DataError(
            label, None, f"no query has a document with relevance >= {level}; nothing to score"
        )
    query_ids = sorted(judged)
    values: dict[Measure, dict[str, float]] = {}
    for depth in sorted({measure.depth for measure in parsed}):
        at_depth = [measure for measure in parsed if measure.depth == depth]
        evaluator = pytrec_eval.RelevanceEvaluator(
            judged, {measure.trec_request() for measure in at_depth}, relevance_level=level
        )
        scored = evaluator.evaluate(_trec_run(ranked, depth))
        for measure in at_depth:
            values[measure] = {
                query_id: float(scored[query_id][measure.trec_key()]) if query_id in scored else 0.0
                for query_id in query_ids
            }
    names = [measure.name(level) for measure in parsed]
    per_query = pd.DataFrame(
        {
            "query_id": np.repeat(query_ids, len(parsed)),
            "measure": names * len(query_ids),
            "value": [values[measure][q] for q in query_ids for measure in parsed],
        }
    )
    summary = pd.DataFrame(
        {
            "measure": names,
            "value": [math.fsum(values[m].values()) / len(query_ids) for m in parsed],
        }
    )
    return summary, per_query


def _scorer_version() -> str:
    return f"pytrec-eval-terrier {metadata.version('pytrec-eval-terrier')}"


def _summary_markdown(summary: pd.DataFrame, num_queries: int, relevance_level: int) -> str:
    lines = ["| measure | value |", "|---|---:|"]
    lines += [
        f"| {name} | {value:.4f} |"
        for name, value in zip(summary["measure"], summary["value"], strict=True)
    ]
    lines += [
        "",
        f"Mean over {num_queries} judged queries with a document of relevance >= "
        f"{relevance_level}; judged queries missing from the run count as 0.",
    ]
    return "\n".join(lines) + "\n"


def write_evaluation(
    out_dir: str | Path,
    run: Frame,
    qrels: Frame,
    *,
    relevance_level: int = 1,
    measures: Sequence[str] = DEFAULT_MEASURES,
) -> pd.DataFrame:
    """Evaluate and write out_dir/{per_query.parquet, summary.md, summary.parquet}.

    Each file lands atomically; summary.parquet is written last, so its presence means the
    other two are complete. Returns the summary.
    """
    summary, per_query = evaluate_run(
        run, qrels, relevance_level=relevance_level, measures=measures
    )
    out_dir = Path(out_dir)
    num_queries = per_query["query_id"].nunique()
    prov = provenance(
        "evaluate",
        {"relevance_level": relevance_level, "measures": list(measures)},
        run=str(run) if not isinstance(run, pd.DataFrame) else None,
        qrels=str(qrels) if not isinstance(qrels, pd.DataFrame) else None,
        num_queries=num_queries,
        scorer=_scorer_version(),
    )
    per_query_table = pa.Table.from_pydict(per_query.to_dict("list"), PER_QUERY_METRICS)
    write_table(per_query_table, out_dir / "per_query.parquet", prov)
    with atomic_path(out_dir / "summary.md") as tmp:
        tmp.write_text(_summary_markdown(summary, num_queries, relevance_level))
    summary_table = pa.Table.from_pydict(summary.to_dict("list"), METRICS)
    write_table(summary_table, out_dir / "summary.parquet", prov)
    return summary


# --------------------------------------------------------------------------- TREC export


def export_trec(run: Frame, out_path: str | Path, tag: str) -> int:
    """Write `qid Q0 docid rank score tag` lines in the project's ranking order; return lines.

    Ranks are 1-based after tie-breaking; scores are written as the shortest decimal that reads
    back to the same float. Caveat: trec_eval ignores the rank column and orders exact score
    ties by docno descending, so on tied scores it may rank differently from this file's ranks
    (and from `evaluate_run`).
    """
    if not tag or any(char.isspace() for char in tag):
        raise LeadError(f"run tag must be a non-empty word without spaces, got {tag!r}")
    ranked = rank_run(run)
    text = pa.large_string()  # 64-bit offsets: a large run can exceed 2 GiB of text
    query_ids = pa.array(ranked["query_id"]).cast(text)
    doc_ids = pa.array(ranked["doc_id"]).cast(text)
    spaced = pc.or_(
        pc.match_substring_regex(query_ids, r"\s"), pc.match_substring_regex(doc_ids, r"\s")
    )
    if pc.any(spaced).as_py():
        row = int(np.flatnonzero(spaced.to_numpy(zero_copy_only=False))[0])
        raise DataError(
            str(run) if not isinstance(run, pd.DataFrame) else "<run DataFrame>",
            f"query {ranked['query_id'].iloc[row]!r}, doc {ranked['doc_id'].iloc[row]!r}",
            "ids must not contain whitespace in the TREC run format",
        )
    scores = pa.array(_original_scores(run, ranked))
    lines = pc.binary_join_element_wise(
        query_ids,
        pa.scalar("Q0", text),
        doc_ids,
        pc.cast(pa.array(ranked["rank"].to_numpy()), text),
        pc.cast(scores, text),
        pa.scalar(tag, text),
        pa.scalar(" ", text),
    )
    with atomic_path(out_path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as handle:
        for start in range(0, len(lines), 100_000):
            chunk = lines.slice(start, 100_000).to_pylist()
            handle.write("\n".join(chunk) + "\n")
    return len(lines)


def _original_scores(run: Frame, ranked: pd.DataFrame) -> np.ndarray:
    """Scores in the run's own precision (float32 for pipeline runs), for a faithful export."""
    if isinstance(run, pd.DataFrame):
        dtype = run["score"].dtype if pd.api.types.is_float_dtype(run["score"]) else np.float64
    else:
        score_type = pq.read_schema(run).field("score").type
        dtype = np.float32 if pa.types.is_float32(score_type) else np.float64
    return ranked["score"].to_numpy().astype(dtype)


# --------------------------------------------------------------------------- significance


def _per_query_values(per_query: Frame, measure: str) -> tuple[pd.Series, str]:
    frame, label = _load(per_query, "per-query metrics", PER_QUERY_METRICS.names)
    rows = frame[frame["measure"] == measure]
    if rows.empty:
        available = sorted(frame["measure"].unique().tolist())
        raise DataError(label, f"measure {measure!r}", f"absent; the file has {available}")
    values = pd.Series(
        _numbers(rows, "value", label, integral=False),
        index=_ids(rows, "query_id", label).to_numpy(),
    )
    if values.index.has_duplicates:
        query_id = values.index[values.index.duplicated()][0]
        raise DataError(label, f"query {query_id!r}", f"has two {measure} values")
    return values.sort_index(), label


def _permutation_p(
    differences: np.ndarray, permutations: int, seed: int
) -> tuple[float, int, bool]:
    """Two-sided paired randomisation test by sign flips of the per-query differences.

    Enumerates all 2^n sign vectors when that is no more than `permutations` (exact p);
    otherwise draws `permutations` seeded vectors and uses (hits + 1) / (permutations + 1).
    """
    n = len(differences)
    observed = abs(differences.mean())
    tolerance = 1e-12 * max(1.0, observed)  # equal means must not miss by a rounding error
    if 2**n <= permutations:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        means = np.abs((1 - 2 * bits) @ differences) / n
        return float(np.count_nonzero(means >= observed - tolerance) / 2**n), 2**n, True
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
    if np.all(differences == differences[0]):
        if differences[0] == 0:
            return 0.0, 1.0
        return math.copysign(math.inf, differences[0]), 0.0
    result = ttest_rel(a, b)
    return float(result.statistic), float(result.pvalue)


def compare(
    per_query_a: Frame,
    per_query_b: Frame,
    measure: str,
    *,
    permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired significance of system A against system B on one measure.

    Both per-query tables must cover the same queries (they do when both runs were scored on
    the same qrels, since missing queries are scored 0). delta = mean_a - mean_b. Returns
    the fields of the COMPARISON schema.
    """
    if permutations < 1:
        raise ConfigError(f"permutations must be >= 1, got {permutations}")
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


def write_comparison(result: dict[str, Any], out_path: str | Path, sources: Sequence[str]) -> None:
    """Write one `compare` result as a one-row parquet (COMPARISON schema)."""
    settings = {key: result[key] for key in ("measure", "permutations", "seed")}
    prov = provenance("compare", settings, inputs=[str(source) for source in sources])
    write_table(pa.Table.from_pylist([result], COMPARISON), out_path, prov)

