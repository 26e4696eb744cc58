"""Scoring with trec_eval's semantics (-M depth cut, -c missing queries, -l relevance level)
around pytrec_eval.

Conventions every evaluation follows (see docs/artifacts.md):
- Ranking order inside a query: lead/evaluation/runs.py (the run's `rank` column, which must
  agree with its scores, then score descending, then `doc_id` ascending). pytrec_eval (like
  trec_eval) re-sorts by score and breaks exact ties by docno *descending*, so it is never
  shown the real scores: it gets strictly decreasing scores derived from the tie-broken rank,
  and cannot reorder anything.
- Measures are named as ir_measures names them (lead/evaluation/measures.py): `RR@10`, `nDCG@10`,
  `R@1000`, `AP(rel=2)@1000`. Every measure is computed on the run cut at its cut-off (trec_eval
  -M; the whole run without one), so `RR@10` is MRR@10. Binary measures (P, R, RR, AP, Success,
  Rprec, Bpref) count grade >= their relevance level as relevant: `rel=` of the name, else the
  evaluation's level, carried in the name when it is not 1. nDCG always uses the graded
  judgments as gains (gain = grade, log2 discount, as trec_eval's ndcg) and keeps its name;
  Judged@k is the share of the (cut) run's documents that have a judgment of any grade.
- Which queries count: every qrels query with at least one document judged at or above the
  evaluation's relevance level. A counted query absent from the run scores 0 on every measure
  (trec_eval -c); run queries absent from the qrels are ignored. A qrels query whose judgments
  all lie below the level is NOT counted (trec_eval -c would average a 0 for it): no system can
  score on it, so it would only dilute the mean by an amount that depends on the judging, not
  the system. On MS MARCO and TREC DL every judged query has a relevant document, so the two
  rules agree there.
- A run that shares no query with the counted qrels is an error (ids that differ in spelling,
  "1.0" against "1", would otherwise score 0); partial coverage, and a cut-off deeper than the
  run (the documents it did not retrieve count as missed), are warnings, logged and written
  in summary.md.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from lead.errors import ConfigError, DataError
from lead.evaluation.measures import DEFAULT_MEASURES, Measure, parse_measures
from lead.evaluation.runs import Source, load_qrels, ranked, read_run
from lead.io import atomic_path, provenance, write_table
from lead.schemas import METRICS, PER_QUERY_METRICS

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Evaluation:
    """What `evaluate_run` returns, and the warnings that `write_evaluation` adds to summary.md."""

    summary: pd.DataFrame  # measure, value
    per_query: pd.DataFrame  # query_id, measure, value
    warnings: list[str]  # what the user should know about these numbers, in words
    qrels_sha256: str = ""  # the judgments scored against (`qrels_fingerprint`)


def qrels_fingerprint(qrels: pd.DataFrame) -> str:
    """A hash of a set of judgments, whatever their order: per-query files scored against
    different judgments must not be compared."""
    rows = sorted(zip(qrels["query_id"].astype(str), qrels["doc_id"].astype(str),
                      qrels["relevance"].astype(int), strict=True))
    digest = hashlib.sha256()
    for query_id, doc_id, grade in rows:
        digest.update(f"{query_id}\t{doc_id}\t{grade}\n".encode())
    return digest.hexdigest()


def _check_level(relevance_level: int) -> int:
    if isinstance(relevance_level, bool) or not isinstance(relevance_level, int | np.integer):
        raise ConfigError(f"relevance level must be an integer, got {relevance_level!r}")
    if relevance_level < 1:
        raise ConfigError(f"relevance level must be >= 1, got {relevance_level}")
    return int(relevance_level)


def _counted_qrels(qrels: pd.DataFrame, relevance_level: int) -> dict[str, dict[str, int]]:
    """Judgments of the counted queries: those with a document at or above the level."""
    counted = qrels.loc[qrels["relevance"] >= relevance_level, "query_id"].unique()
    kept = qrels[qrels["query_id"].isin(counted)]
    nested: dict[str, dict[str, int]] = {}
    for query_id, doc_id, grade in zip(
        kept["query_id"].tolist(), kept["doc_id"].tolist(), kept["relevance"].tolist(), strict=True
    ):
        nested.setdefault(query_id, {})[doc_id] = grade
    return nested


def _coverage(
    run_queries: set[str], counted: Sequence[str], run_label: str, qrels_label: str
) -> str | None:
    """The warning on partial coverage (None when complete); no common query is an error."""
    if not run_queries:
        raise DataError(run_label, None, "the run is empty; nothing to score")
    common = run_queries.intersection(counted)
    if not common:
        raise DataError(
            run_label, None,
            f"shares no query with {qrels_label}: run ids look like {min(run_queries)!r}, "
            f"counted qrels ids like {min(counted)!r}; nothing to score",
        )
    missing, unjudged = len(counted) - len(common), len(run_queries) - len(common)
    if not missing and not unjudged:
        return None
    return (
        f"{run_label} covers {len(common)} of the {len(counted)} counted queries of "
        f"{qrels_label}: {missing} missing (scored 0), {unjudged} run queries without "
        f"counted judgments (ignored)"
    )


def _query_slices(query_ids: np.ndarray) -> Iterator[tuple[str, int, int]]:
    """(query_id, start, stop) for each run of equal ids in an array sorted by query."""
    if len(query_ids) == 0:
        return
    starts = np.concatenate([[0], np.flatnonzero(query_ids[1:] != query_ids[:-1]) + 1])
    stops = np.concatenate([starts[1:], [len(query_ids)]])
    for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
        yield query_ids[start], start, stop


def _trec_run(ranking: pd.DataFrame, cutoff: int | None) -> dict[str, dict[str, float]]:
    """The run cut at `cutoff`, as pytrec_eval input with scores = -rank (strictly decreasing)."""
    cut = ranking if cutoff is None else ranking[ranking["rank"] <= cutoff]
    query_ids = cut["query_id"].to_numpy(dtype=object)
    doc_ids = cut["doc_id"].to_numpy(dtype=object)
    scores = (-cut["rank"].to_numpy(dtype=np.float64)).tolist()
    return {
        query_id: dict(zip(doc_ids[start:stop], scores[start:stop], strict=True))
        for query_id, start, stop in _query_slices(query_ids)
    }


def _score(
    ranking: pd.DataFrame, judged: dict[str, dict[str, int]], measures: list[Measure], level: int
) -> dict[Measure, dict[str, float]]:
    """Per-query values of each measure over the counted queries, one pytrec_eval pass per
    (cut-off, relevance level, judgments); Judged counts every judgment as relevant."""
    import pytrec_eval

    groups: dict[tuple[int, int, bool], list[Measure]] = {}
    for measure in measures:
        any_grade = measure.family == "Judged"
        cutoff = measure.cutoff or 0  # 0: the whole run (cut-offs are >= 1)
        key = (cutoff, 1 if any_grade else measure.level(level), any_grade)
        groups.setdefault(key, []).append(measure)
    values: dict[Measure, dict[str, float]] = {}
    runs: dict[int, dict[str, dict[str, float]]] = {}
    for (cutoff, rel, any_grade), group in sorted(groups.items()):
        if cutoff not in runs:
            runs[cutoff] = _trec_run(ranking, cutoff or None)
        judgments = {q: dict.fromkeys(d, 1) for q, d in judged.items()} if any_grade else judged
        evaluator = pytrec_eval.RelevanceEvaluator(
            judgments,
            {request for measure in group for request in measure.trec_requests()},
            relevance_level=rel,
        )
        scored = evaluator.evaluate(runs[cutoff])
        for measure in group:
            values[measure] = {
                query_id: float(measure.value(scored[query_id])) if query_id in scored else 0.0
                for query_id in judged
            }
    return values


def _evaluate(
    run: Source, qrels: Source, relevance_level: int, measures: Sequence[str]
) -> Evaluation:
    level = _check_level(relevance_level)
    parsed = parse_measures(measures, level)
    run_table = read_run(run)
    ranking = ranked(run_table)
    qrels_label = "<qrels DataFrame>" if isinstance(qrels, pd.DataFrame) else str(qrels)
    loaded = load_qrels(qrels)
    judged = _counted_qrels(loaded, level)
    if not judged:
        raise DataError(
            qrels_label, None,
            f"no query has a document with relevance >= {level}; nothing to score",
        )
    query_ids = sorted(judged)
    warnings = []
    coverage = _coverage(set(ranking["query_id"].unique()), query_ids, run_table.label, qrels_label)
    if coverage:
        warnings.append(coverage)
    run_depth = int(ranking["rank"].max())
    shallow = [m.name(level) for m in parsed if m.cutoff is not None and m.cutoff > run_depth]
    if shallow:
        warnings.append(
            f"{', '.join(shallow)} cut deeper than the run ({run_depth} deep at most): the "
            f"documents it did not retrieve count as missed"
        )
    for warning in warnings:
        log.warning("%s", warning)
    values = _score(ranking, judged, parsed, level)
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
    return Evaluation(summary, per_query, warnings, qrels_fingerprint(loaded))


def evaluate_run(
    run: Source,
    qrels: Source,
    *,
    relevance_level: int = 1,
    measures: Sequence[str] = DEFAULT_MEASURES,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score a run: (summary[measure, value], per_query[query_id, measure, value]).

    `run` and `qrels` are DataFrames, parquet artifacts or TREC files. The summary is the
    plain mean of the per-query values over the counted queries (module docstring); per-query
    rows are sorted by query_id, measures in the requested order, named canonically.
    """
    evaluation = _evaluate(run, qrels, relevance_level, measures)
    return evaluation.summary, evaluation.per_query


def _scorer_version() -> str:
    return f"pytrec-eval-terrier {metadata.version('pytrec-eval-terrier')}"


def _summary_markdown(evaluation: Evaluation, num_queries: int, relevance_level: int) -> str:
    summary = evaluation.summary
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
    lines += [f"\nWarning: {warning}." for warning in evaluation.warnings]
    return "\n".join(lines) + "\n"


def write_evaluation(out_dir: str | Path, run: Source, qrels: Source, **options: Any
                     ) -> pd.DataFrame:
    """The `evaluate` stage: out_dir/{per_query.parquet, summary.md, summary.parquet}, landing
    as one set (the folder is built aside and renamed into place, an earlier evaluation of the
    same folder replaced whole). `options` are `evaluation_files`'. Returns the summary."""
    with atomic_path(out_dir, directory=True, made_by="evaluate") as tmp:
        tmp.mkdir()
        return evaluation_files(tmp, run, qrels, **options)


def evaluation_files(
    folder: str | Path,
    run: Source,
    qrels: Source,
    *,
    relevance_level: int = 1,
    measures: Sequence[str] = DEFAULT_MEASURES,
    recorded: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The evaluation's three files, written into `folder`, a folder the caller builds aside
    and renames into place itself (evaluate-model's). Returns the summary.

    The provenance names the run and qrels files, or what `recorded` says they are (a caller
    that scores temporary files names their lasting counterparts), the qrels' fingerprint and
    the relevance level, which `compare` checks.
    """
    evaluation = _evaluate(run, qrels, relevance_level, measures)
    folder = Path(folder)
    num_queries = evaluation.per_query["query_id"].nunique()
    prov = provenance(
        "evaluate",
        {"relevance_level": relevance_level, "measures": list(measures)},
        **{"run": str(run) if not isinstance(run, pd.DataFrame) else None,
           "qrels": str(qrels) if not isinstance(qrels, pd.DataFrame) else None,
           **(recorded or {})},
        qrels_sha256=evaluation.qrels_sha256,
        num_queries=num_queries,
        scorer=_scorer_version(),
    )
    per_query_table = pa.Table.from_pydict(evaluation.per_query.to_dict("list"), PER_QUERY_METRICS)
    write_table(per_query_table, folder / "per_query.parquet", prov)
    (folder / "summary.md").write_text(
        _summary_markdown(evaluation, num_queries, relevance_level), encoding="utf-8")
    summary_table = pa.Table.from_pydict(evaluation.summary.to_dict("list"), METRICS)
    write_table(summary_table, folder / "summary.parquet", prov)
    return evaluation.summary
