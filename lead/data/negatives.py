"""Training groups: each training query's positives and its hard negatives, best first (GROUPS).

Three sources: BM25 over the corpus (bm25s), a qidpidtriples-style file, or a run mined by a
trained dense retriever (the paper's recipe). Every source follows one rule: candidates in rank
order, every positive removed, duplicates removed, the first `depth` kept. Ids are compared as
strings: the original release compared a string with an integer, so "7" never matched 7 and
gold passages stayed among the negatives.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lead import schemas
from lead.data.corpus import known_ids
from lead.data.tsv import CORRUPT_GZIP, open_binary
from lead.errors import DataError
from lead.io import iter_batches, provenance, read_table, write_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupCounts:
    """What a negatives run kept and dropped (also stored in the artifact's provenance)."""

    groups: int
    without_positive: int
    without_negatives: int
    unknown_documents: int = 0  # given triples dropped: their negative is not in the corpus


def read_positives(qrels: str | Path) -> dict[str, list[str]]:
    """Each judged query's relevant passages (relevance > 0), sorted, in qrels order."""
    table = read_table(qrels, schemas.QRELS)
    table = table.filter(pc.greater(table.column("relevance"), 0))
    positives: dict[str, set[str]] = {}
    for query_id, doc_id in zip(
        table.column("query_id").to_pylist(), table.column("doc_id").to_pylist(), strict=True
    ):
        positives.setdefault(query_id, set()).add(doc_id)
    return {query_id: sorted(docs) for query_id, docs in positives.items()}


def first_negatives(candidates: Iterable[str], positives: Iterable[str], depth: int | None):
    """The first `depth` distinct candidates that are not positives, in candidate order."""
    excluded = set(positives)
    negatives: list[str] = []
    for doc_id in candidates:
        if doc_id not in excluded:
            excluded.add(doc_id)
            negatives.append(doc_id)
            if len(negatives) == depth:
                break
    return negatives


def _write_groups(
    out: str | Path,
    groups: list[tuple[str, list[str], list[str]]],
    counts: GroupCounts,
    settings: dict[str, Any],
) -> GroupCounts:
    query_ids, positives, negatives = zip(*groups, strict=True) if groups else ((), (), ())
    table = pa.table(
        [pa.array(query_ids, pa.string()), pa.array(positives, pa.list_(pa.string())),
         pa.array(negatives, pa.list_(pa.string()))],
        schema=schemas.GROUPS,
    )
    write_table(table, out, provenance("negatives", settings, counts=asdict(counts)))
    return counts


def _assemble(
    ranked: Iterable[tuple[str, list[str]]],
    positives: dict[str, list[str]],
    depth: int | None,
    *,
    source: Path,
    strict: bool,
) -> tuple[list[tuple[str, list[str], list[str]]], GroupCounts]:
    """Groups from (query, candidates in rank order), dropping and counting the unusable.

    A query with no positive cannot be trained on (a DataError when `strict`); one with no
    negative left would be an empty group, which training refuses.
    """
    groups, without_positive, without_negatives = [], [], 0
    for query_id, candidates in ranked:
        if query_id not in positives:
            without_positive.append(query_id)
            continue
        negatives = first_negatives(candidates, positives[query_id], depth)
        if negatives:
            groups.append((query_id, positives[query_id], negatives))
        else:
            without_negatives += 1
    if without_positive:
        message = f"{len(without_positive)} queries have no positive in the qrels"
        if strict:
            raise DataError(source, f"query {without_positive[0]!r}", f"{message}; e.g. this one")
        log.warning("%s: %s; dropped", source, message)
    if without_negatives:
        log.warning("%s: %d queries have no negative left after removing their positives; "
                    "dropped", source, without_negatives)
    return groups, GroupCounts(len(groups), len(without_positive), without_negatives)


# --- BM25 -----------------------------------------------------------------------------------


def bm25_groups(
    corpus: str | Path,
    queries: str | Path,
    qrels: str | Path,
    out: str | Path,
    *,
    depth: int,
    retrieve_depth: int,
    k1: float,
    b: float,
    strict: bool = False,
    threads: int | None = None,
) -> GroupCounts:
    """BM25 hard negatives: the top `retrieve_depth` per training query, positives removed,
    the first `depth` kept. Groups follow the queries file's order.

    Retrieval runs on `threads` threads (default: every available core); the groups do not
    depend on their number.
    """
    from lead.data import bm25  # numba compiles on first use: only for this source

    positives = read_positives(qrels)
    query_table = read_table(queries, schemas.QUERIES)
    started = time.perf_counter()
    index = bm25.build_index(Path(corpus), k1, b)
    log.info("BM25 index: %d passages, %d postings, in %.0f s", len(index.doc_ids),
             len(index.retriever.scores["data"]), time.perf_counter() - started)
    query_ids = query_table.column("query_id").to_pylist()
    query_tokens = index.tokenize(pc.fill_null(query_table.column("text"), "").to_pylist())
    # Only judged queries with a known word are searched; the others have no candidates.
    searched = [bool(tokens) and query_id in positives
                for query_id, tokens in zip(query_ids, query_tokens, strict=True)]
    found = bm25.top_k(index, [tokens for tokens, s in zip(query_tokens, searched, strict=True)
                               if s], retrieve_depth, threads)
    ranked = ((query_id, index.doc_ids[next(found)].tolist() if s else [])
              for query_id, s in zip(query_ids, searched, strict=True))
    started = time.perf_counter()
    groups, counts = _assemble(ranked, positives, depth, source=Path(queries), strict=strict)
    log.info("BM25 search: %d queries, top %d, in %.0f s", sum(searched), retrieve_depth,
             time.perf_counter() - started)
    settings = {"source": "bm25", "depth": depth, "retrieve_depth": retrieve_depth,
                "bm25": {"k1": k1, "b": b, "stopwords": bm25.STOPWORDS, "stemmer": None}}
    return _write_groups(out, groups, counts, settings)


# --- qidpidtriples --------------------------------------------------------------------------


def _triples(path: Path) -> Iterator[tuple[int, str, str, str]]:
    """(line number, qid, positive pid, negative pid) of a `qid\\tpos\\tneg` file, streamed."""
    try:
        with open_binary(path) as lines:
            for number, raw in enumerate(lines, start=1):
                try:
                    fields = raw.decode("utf-8").rstrip("\r\n").split("\t")
                except UnicodeDecodeError as err:
                    raise DataError(path, number, f"not UTF-8 ({err.reason})") from err
                if len(fields) != 3 or not all(fields):
                    raise DataError(
                        path, number,
                        f"expected 3 non-empty tab-separated fields (qid, positive pid, "
                        f"negative pid), got {raw[:80]!r}",
                    )
                yield number, fields[0], fields[1], fields[2]
    except CORRUPT_GZIP as err:
        raise DataError(path, None, f"truncated or corrupt gzip file: {err}") from err


def _given_candidates(
    path: Path, positives: dict[str, list[str]], depth: int | None, excluded: frozenset[str]
) -> tuple[dict[str, dict[str, None] | tuple[str, ...]], int, int, int | None]:
    """Per query, distinct negatives in file order, skipping those in `excluded` (for the
    queries that have positives).

    Only as many as can still matter are kept: the first `depth` negatives lie among the
    first `depth + #positives` distinct pids. Returns the candidates, the number of triples
    whose positive the qrels do not know, the number skipped, and the first skipped line.
    """
    candidates: dict[str, dict[str, None] | tuple[str, ...]] = {}
    foreign_positives = skipped = 0
    first_skipped = None
    for number, query_id, positive, negative in _triples(path):
        known = positives.get(query_id)
        if negative in excluded and known is not None:
            skipped += 1
            first_skipped = first_skipped or number
            continue
        foreign_positives += known is not None and positive not in known
        bucket = candidates.setdefault(query_id, {})
        cap = 1 if known is None else None if depth is None else depth + len(known)
        if isinstance(bucket, dict):
            # Interned: the same pid recurs across the queries of a 400-million-line file.
            bucket[sys.intern(negative)] = None
            if len(bucket) == cap:
                candidates[query_id] = tuple(bucket)
    return candidates, foreign_positives, skipped, first_skipped


def _not_in_corpus(corpus: Path, candidates: Iterable[Iterable[str]]) -> frozenset[str]:
    wanted = pc.unique(pa.array(itertools.chain.from_iterable(candidates), pa.string()))
    present = known_ids(corpus, wanted)
    return frozenset(wanted.filter(pc.invert(pc.is_in(wanted, value_set=present))).to_pylist())


def given_groups(
    triples_path: str | Path,
    qrels: str | Path,
    out: str | Path,
    *,
    corpus: str | Path,
    depth: int | None = None,
    strict: bool = False,
) -> GroupCounts:
    """Negatives from a qidpidtriples-style file: each query's negatives in file order,
    deduplicated, positives (from the qrels) removed, the first `depth` kept (all if None).
    Groups follow the order in which queries first appear in the file.

    A negative that is not in `corpus` (a CORPUS parquet) is an error naming the triples
    file and line when `strict`; otherwise its triples are dropped as if absent from the
    file, and counted.
    """
    triples_path, corpus = Path(triples_path), Path(corpus)
    positives = read_positives(qrels)
    excluded: frozenset[str] = frozenset()
    while True:  # lenient: re-read without the unknown pids until none is left
        candidates, foreign_positives, skipped, first_skipped = _given_candidates(
            triples_path, positives, depth, excluded
        )
        # Queries without a positive are dropped whatever their negatives: not checked.
        unknown = _not_in_corpus(corpus, (bucket for query_id, bucket in candidates.items()
                                          if query_id in positives))
        if not unknown:
            break
        if strict:
            line, pid = next((number, negative) for number, query_id, _, negative
                             in _triples(triples_path)
                             if negative in unknown and query_id in positives)
            raise DataError(triples_path, line,
                            f"negative {pid!r} is not in the corpus ({corpus}); "
                            f"{len(unknown)} such documents: is the file for another corpus?")
        excluded |= unknown
    if skipped:
        log.warning("%s: %d triples (first at line %d) name %d documents that are not in the "
                    "corpus (%s); dropped", triples_path, skipped, first_skipped, len(excluded),
                    corpus)
    if foreign_positives:
        log.warning("%s: %d triples name a positive that the qrels do not; the qrels decide",
                    triples_path, foreign_positives)
    ranked = ((query_id, list(bucket)) for query_id, bucket in candidates.items())
    groups, counts = _assemble(ranked, positives, depth, source=triples_path, strict=strict)
    counts = replace(counts, unknown_documents=skipped)
    return _write_groups(out, groups, counts, {"source": "given", "depth": depth})


# --- dense run ------------------------------------------------------------------------------


def _run_candidates(
    run_path: Path, positives: dict[str, list[str]], depth: int, retrieve_depth: int | None
) -> pa.Table:
    """The run rows that can become negatives, read batch by batch.

    After removing a query's positives, its first `depth` negatives lie within rank
    `depth + #positives`: deeper rows are dropped as they are read, which bounds memory by
    the groups' size rather than the run's.
    """
    judged = pa.array(list(positives), pa.string())
    bound = np.array([depth + len(docs) for docs in positives.values()] + [depth])
    kept = []
    for batch in iter_batches(run_path, schemas.RUN, columns=["query_id", "doc_id", "rank"]):
        slot = pc.index_in(batch.column("query_id"), value_set=judged)
        limit = bound[pc.fill_null(slot, len(judged)).to_numpy()]
        if retrieve_depth is not None:
            limit = np.minimum(limit, retrieve_depth)
        mask = batch.column("rank").to_numpy(zero_copy_only=False) <= limit
        kept.append(batch.filter(pa.array(mask)))
    schema = pa.schema([schemas.RUN.field(name) for name in ("query_id", "doc_id", "rank")])
    return pa.Table.from_batches(kept, schema)


def dense_groups(
    run_path: str | Path,
    qrels: str | Path,
    out: str | Path,
    *,
    depth: int,
    retrieve_depth: int | None = None,
    strict: bool = False,
) -> GroupCounts:
    """Negatives mined by a dense retriever: a RUN's passages in rank order (ranks above
    `retrieve_depth` ignored), positives removed, the first `depth` kept. Groups follow the
    order in which queries first appear in the run."""
    run_path = Path(run_path)
    positives = read_positives(qrels)
    run = _run_candidates(run_path, positives, depth, retrieve_depth)
    queries = pc.unique(run.column("query_id"))
    run = run.append_column("slot", pc.index_in(run.column("query_id"), value_set=queries))
    run = run.sort_by([("slot", "ascending"), ("rank", "ascending"), ("doc_id", "ascending")])
    slots = run.column("slot").to_numpy()
    starts = np.searchsorted(slots, np.arange(len(queries) + 1))
    doc_ids = run.column("doc_id").to_pylist()
    ranked = (
        (query_id, doc_ids[starts[i] : starts[i + 1]])
        for i, query_id in enumerate(queries.to_pylist())
    )
    groups, counts = _assemble(ranked, positives, depth, source=run_path, strict=strict)
    settings = {"source": "dense", "depth": depth, "retrieve_depth": retrieve_depth}
    return _write_groups(out, groups, counts, settings)
