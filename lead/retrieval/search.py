"""Dense retrieval: inner-product top-k of query embeddings over sharded corpus embeddings.

Memory stays bounded however large the corpus or the query set: only one shard's index is held
at a time, and queries go through in blocks whose running top-k fits a fixed budget; each
block's per-shard top-k lists are merged into it as the shards go by. A shard is re-read for
every query block, so a single block (the usual case for evaluation splits) reads each shard
once, and one shard is never re-read at all.

Ranking is fully specified so that sharding never changes a run: score descending, then doc_id
ascending. faiss's own order among equal scores is arbitrary, so rows with tied scores are
re-sorted, and for the exact (flat) index a tie across the depth cut-off is resolved against
every passage of the shard.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lead.errors import ConfigError, DataError
from lead.io import check_schema, open_parquet, parquet_writer, provenance
from lead.schemas import RUN, embeddings

log = logging.getLogger(__name__)

# Running top-k entries (query x candidate) held per query block: 8 Mi entries, about 100 MB
# of scores and ordinals, plus the merge's temporaries of one query batch.
RUNNING_TOPK_BUDGET = 1 << 23
# Rows read from an embeddings file at a time when building an index.
READ_ROWS = 1 << 15
# Seeds the sample an IVF-PQ index is trained on (faiss's k-means has its own fixed seed).
TRAINING_SAMPLE_SEED = 20240304
# Query batches at least this large go through BLAS in exact search (see `_blas_batches`).
BLAS_MIN_QUERIES = 20
_MISSING = np.float32(-np.inf)
# A cluster job's time limit for an exhaustive search: per (query, passage) pair and thread,
# PAIR_NS plus DIM_NS per dimension. About 3 times what lead's flat search took on one thread
# of a busy AVX-512 core (5.7-6.5 ns a pair at 32-d, 27-28 ns at 768-d, top 500:
# benchmarks/search_runtime.py), so that a slower or shared node still finishes; approximate
# indexes take less.
PAIR_NS = 15.0
DIM_NS = 0.1
# Start-up, reading and writing: minutes added to every search's limit, and its least limit.
SEARCH_OVERHEAD_MINUTES = 10
SEARCH_MIN_MINUTES = 60


@dataclass(frozen=True)
class EmbeddingsInfo:
    """What an embeddings file holds, read from its parquet metadata alone."""

    path: Path
    dim: int
    dtype: str
    num_rows: int


def inspect_embeddings(path: str | Path) -> EmbeddingsInfo:
    """Check that `path` is an embeddings artifact and return its dimension, type and size."""
    path = Path(path)
    file = open_parquet(path)
    schema = file.schema_arrow
    index = schema.get_field_index("embedding")
    kind = schema.field(index).type if index >= 0 else None
    if not (
        kind is not None
        and pa.types.is_fixed_size_list(kind)
        and (pa.types.is_float32(kind.value_type) or pa.types.is_float16(kind.value_type))
    ):
        raise DataError(
            path, "column 'embedding'", f"expected fixed_size_list<float32|float16>, got {kind}"
        )
    dtype = "float16" if pa.types.is_float16(kind.value_type) else "float32"
    check_schema(path, schema, embeddings(kind.list_size, dtype))
    return EmbeddingsInfo(path, kind.list_size, dtype, file.metadata.num_rows)


def search_minutes(queries: str | Path, corpus: Sequence[str | Path], threads: int) -> int:
    """The time limit, in minutes, to request for searching `queries` over `corpus` on
    `threads` threads, from the files' sizes. A fixed limit either kills the MS MARCO mining
    search (502,939 x 8,841,823 pairs) or holds every small search in the queue as if it
    were that one."""
    query_info = inspect_embeddings(queries)
    passages = sum(inspect_embeddings(shard).num_rows for shard in corpus)
    return limit_minutes(query_info.num_rows * passages, query_info.dim, threads)


def limit_minutes(pairs: int, dim: int, threads: int) -> int:
    """The exhaustive search's cost of `pairs` (query, passage) pairs of `dim` dimensions at
    PAIR_NS and DIM_NS a pair and thread, as a time limit in minutes."""
    seconds = pairs * (PAIR_NS + DIM_NS * dim) * 1e-9
    minutes = SEARCH_OVERHEAD_MINUTES + seconds / 60 / max(1, threads)
    return max(SEARCH_MIN_MINUTES, int(np.ceil(minutes)))


def iter_embeddings(
    info: EmbeddingsInfo, rows: int = READ_ROWS
) -> Iterator[tuple[pa.Array, np.ndarray]]:
    """Stream (ids, float32 matrix) blocks of an embeddings file; float16 is upcast."""
    position = 0
    for batch in pq.ParquetFile(info.path).iter_batches(batch_size=rows):
        ids, vectors = batch.column("id"), batch.column("embedding")
        for name, column in (("id", ids), ("embedding", vectors)):
            if column.null_count:
                row = position + column.is_null().to_numpy(zero_copy_only=False).argmax()
                raise DataError(info.path, f"row {row}, column {name!r}", "is null")
        matrix = vectors.flatten().to_numpy(zero_copy_only=False).reshape(-1, info.dim)
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        finite = np.isfinite(matrix).all(axis=1)
        if not finite.all():
            row = int(np.argmin(finite))
            raise DataError(info.path, f"row {position + row}, id {ids[row].as_py()!r}",
                            "embedding is not finite (NaN or inf): was the model broken?")
        yield ids, matrix
        position += batch.num_rows


def check_inputs(queries: EmbeddingsInfo, shards: Sequence[EmbeddingsInfo]) -> None:
    """Refuse empty inputs and dimensions that do not agree, naming the files."""
    if not shards:
        raise ConfigError("search needs at least one corpus embeddings file")
    if queries.num_rows == 0:
        raise DataError(queries.path, None, "no query embeddings")
    if sum(shard.num_rows for shard in shards) == 0:
        names = ", ".join(str(shard.path) for shard in shards)
        raise DataError(names, None, "no corpus embeddings in any shard")
    for shard in shards:
        if shard.dim != queries.dim:
            raise DataError(
                shard.path,
                "column 'embedding'",
                f"dimension {shard.dim} does not match the queries' {queries.dim} "
                f"in {queries.path}",
            )


@dataclass(frozen=True)
class Corpus:
    """Every shard's doc ids, in shard order, and each doc's position in doc_id order.

    Candidates are carried as ordinals into `doc_ids` (shard offset + row); `id_rank` turns an
    ordinal into a sort key that orders like the doc_id string, so tie-breaking is numeric.
    """

    doc_ids: pa.Array
    id_rank: np.ndarray
    offsets: tuple[int, ...]


def load_corpus_ids(shards: Sequence[EmbeddingsInfo]) -> Corpus:
    """Read only the id columns of all shards and rank them; duplicated ids are an error."""
    columns, offsets, total = [], [], 0
    for shard in shards:
        ids = pq.read_table(shard.path, columns=["id"]).column("id").combine_chunks()
        if ids.null_count:
            row = ids.is_null().to_numpy(zero_copy_only=False).argmax()
            raise DataError(shard.path, f"row {row}, column 'id'", "is null")
        columns.append(ids.cast(pa.large_string()))
        offsets.append(total)
        total += len(ids)
    doc_ids = pa.concat_arrays(columns)
    order = pc.sort_indices(doc_ids).to_numpy()
    sorted_ids = doc_ids.take(order)
    duplicate = pc.equal(sorted_ids[1:], sorted_ids[:-1]) if total > 1 else pa.array([], pa.bool_())
    if pc.any(duplicate).as_py():
        # The sort is stable, so the second of the pair is the later occurrence.
        repeated = order[pc.index(duplicate, True).as_py() + 1]
        shard = shards[int(np.searchsorted(offsets, repeated, side="right")) - 1]
        raise DataError(
            shard.path, f"id {doc_ids[repeated].as_py()!r}", "appears more than once in the corpus"
        )
    id_rank = np.empty(total, dtype=np.int64)
    id_rank[order] = np.arange(total)
    return Corpus(doc_ids, id_rank, tuple(offsets))


def build_index(info: EmbeddingsInfo, settings: Mapping[str, Any]) -> faiss.Index:
    """A faiss inner-product index over one shard, built deterministically."""
    kind = settings["index"]
    if kind == "flat":
        index = faiss.IndexFlatIP(info.dim)
        _add_all(index, info)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(info.dim, settings["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = settings["hnsw_ef_search"]
        # Parallel insertion makes the graph depend on thread timing: build on one thread.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            _add_all(index, info)
        finally:
            faiss.omp_set_num_threads(threads)
    else:
        index = _ivfpq_index(info, settings)
    return index


def _add_all(index: faiss.Index, info: EmbeddingsInfo) -> None:
    for _, matrix in iter_embeddings(info):
        index.add(matrix)


def _ivfpq_index(info: EmbeddingsInfo, settings: Mapping[str, Any]) -> faiss.Index:
    lists, subquantizers = settings["ivf_lists"], settings["pq_subquantizers"]
    if info.dim % subquantizers:
        raise ConfigError(
            f"search.pq_subquantizers={subquantizers} must divide the embedding dimension "
            f"{info.dim} of {info.path}"
        )
    # 8-bit PQ codebooks need 256 training vectors; IVF needs one per list.
    needed = max(lists, 256)
    if info.num_rows < needed:
        raise ConfigError(
            f"search.index=ivfpq needs at least {needed} vectors per shard "
            f"(ivf_lists={lists}, 256 per PQ codebook); {info.path} has {info.num_rows}: "
            "lower search.ivf_lists or use index=flat"
        )
    quantizer = faiss.IndexFlatIP(info.dim)
    index = faiss.IndexIVFPQ(
        quantizer, info.dim, lists, subquantizers, 8, faiss.METRIC_INNER_PRODUCT
    )
    index.train(_training_sample(info, size=256 * max(lists, 256)))
    _add_all(index, info)
    index.nprobe = settings["ivf_probe"]
    return index


def _training_sample(info: EmbeddingsInfo, size: int) -> np.ndarray:
    """A seeded uniform sample of at most `size` rows, gathered in one streaming pass."""
    if info.num_rows <= size:
        return np.concatenate([matrix for _, matrix in iter_embeddings(info)])
    rng = np.random.default_rng(TRAINING_SAMPLE_SEED)
    rows = np.sort(rng.choice(info.num_rows, size=size, replace=False))
    parts, position = [], 0
    for _, matrix in iter_embeddings(info):
        lo, hi = np.searchsorted(rows, [position, position + len(matrix)])
        parts.append(matrix[rows[lo:hi] - position])
        position += len(matrix)
    return np.concatenate(parts)


def search_shard(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    id_rank: np.ndarray,
    *,
    exact: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, shard rows) of one shard for a batch of queries, in ranking order.

    Missing results (approximate indexes, short shards) are score -inf, row -1. With `exact`
    (a flat index), one extra result is fetched to see whether the k-th score is tied beyond
    the cut; such rows are re-scored against the whole shard so the kept ties are the
    smallest doc_ids. `id_rank` is the shard's slice of the corpus ranking.
    """
    fetch = min(k + 1, index.ntotal) if exact else min(k, index.ntotal)
    with _blas_batches(index.d):
        scores, rows = index.search(queries, fetch)
    scores[rows < 0] = _MISSING
    if exact and fetch > k:
        cut = np.flatnonzero(scores[:, k - 1] == scores[:, k])
        if cut.size:
            scores, rows = scores[:, :k].copy(), rows[:, :k].copy()
            scores[cut], rows[cut] = _exhaustive_topk(index, queries[cut], k, id_rank)
        else:
            scores, rows = scores[:, :k], rows[:, :k]
    return _order_ties(scores, rows, id_rank)


@contextlib.contextmanager
def _blas_batches(dim: int) -> Iterator[None]:
    """Let flat search use BLAS from BLAS_MIN_QUERIES queries on.

    faiss 1.15 scores a batch with its per-query SIMD loop until the batch holds 128,000
    floats (333 queries at d=384), which makes batches of a few hundred queries 3-4x slower
    than one big call; its older rule switched at 20 queries.
    """
    threshold = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = min(threshold, BLAS_MIN_QUERIES * dim)
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = threshold


def _exhaustive_topk(
    index: faiss.IndexFlat, queries: np.ndarray, k: int, id_rank: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k with doc_id tie-breaking by scoring every stored vector (rare rows only)."""
    stored = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d)
    all_scores = queries @ stored.reshape(index.ntotal, index.d).T
    kth = np.partition(all_scores, -k, axis=1)[:, -k]
    scores = np.empty((len(queries), k), dtype=np.float32)
    rows = np.empty((len(queries), k), dtype=np.int64)
    for i, row_scores in enumerate(all_scores):
        candidates = np.flatnonzero(row_scores >= kth[i])
        order = np.lexsort((id_rank[candidates], -row_scores[candidates]))[:k]
        rows[i] = candidates[order]
        scores[i] = row_scores[rows[i]]
    return scores, rows


def _order_ties(
    scores: np.ndarray, candidates: np.ndarray, id_rank: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Re-sort by (score desc, doc_id asc) the rows of a score-sorted list that hold ties."""
    tied = np.flatnonzero(
        ((scores[:, 1:] == scores[:, :-1]) & (scores[:, 1:] > _MISSING)).any(axis=1)
    )
    if tied.size:
        keys = np.where(candidates[tied] >= 0, id_rank[candidates[tied]], len(id_rank))
        order = np.lexsort((keys, -scores[tied]), axis=-1)
        scores[tied] = np.take_along_axis(scores[tied], order, axis=1)
        candidates[tied] = np.take_along_axis(candidates[tied], order, axis=1)
    return scores, candidates


def merge_topk(
    scores_a: np.ndarray,
    ordinals_a: np.ndarray,
    scores_b: np.ndarray,
    ordinals_b: np.ndarray,
    k: int,
    id_rank: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge two ranked candidate lists per query, keeping the top k in ranking order.

    Both inputs are already ranked, so a stable sort on the score is a linear merge; only
    rows with equal scores need the doc_id key.
    """
    scores = np.concatenate([scores_a, scores_b], axis=1)
    ordinals = np.concatenate([ordinals_a, ordinals_b], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, : k + 1]
    scores = np.take_along_axis(scores, order, axis=1)
    ordinals = np.take_along_axis(ordinals, order, axis=1)
    if scores.shape[1] > k:
        # A tie across the cut must be resolved among all candidates, not just the first k+1.
        cut = np.flatnonzero((scores[:, k - 1] == scores[:, k]) & (scores[:, k] > _MISSING))
        scores, ordinals = scores[:, :k].copy(), ordinals[:, :k].copy()
        for row in cut:
            scores[row], ordinals[row] = _full_sort_row(
                scores_a[row], ordinals_a[row], scores_b[row], ordinals_b[row], k, id_rank
            )
    return _order_ties(scores, ordinals, id_rank)


def _full_sort_row(
    scores_a: np.ndarray,
    ordinals_a: np.ndarray,
    scores_b: np.ndarray,
    ordinals_b: np.ndarray,
    k: int,
    id_rank: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    scores = np.concatenate([scores_a, scores_b])
    ordinals = np.concatenate([ordinals_a, ordinals_b])
    keys = np.where(ordinals >= 0, id_rank[ordinals], len(id_rank))
    order = np.lexsort((keys, -scores))[:k]
    return scores[order], ordinals[order]


def query_block_size(k: int, batch_size: int) -> int:
    """Queries per block so that the block's running top-k stays within the budget."""
    return max(batch_size, RUNNING_TOPK_BUDGET // k)


class _ShardCache:
    """Holds at most one shard's index: the last one built, reused when asked again."""

    def __init__(self, settings: Mapping[str, Any]):
        self.settings = settings
        self.key: int | None = None
        self.index: faiss.Index | None = None

    def get(self, number: int, info: EmbeddingsInfo) -> faiss.Index:
        if self.key != number:
            self.index = None  # free the previous shard before building the next
            self.index = build_index(info, self.settings)
            self.key = number
        return self.index


def search_block(
    queries: np.ndarray,
    shards: Sequence[EmbeddingsInfo],
    corpus: Corpus,
    settings: Mapping[str, Any],
    index_of: Callable[[int, EmbeddingsInfo], faiss.Index],
) -> tuple[np.ndarray, np.ndarray]:
    """Ranked (scores, corpus ordinals), each (queries, k), of a block over every shard.

    `index_of(number, info)` gives shard `number`'s index (built, or kept from the last block).
    """
    k = min(settings["depth"], len(corpus.id_rank))
    scores = np.full((len(queries), k), _MISSING, dtype=np.float32)
    ordinals = np.full((len(queries), k), -1, dtype=np.int64)
    batch = settings["batch_size"]
    nonempty = [number for number, info in enumerate(shards) if info.num_rows]
    for number in nonempty:
        info, offset = shards[number], corpus.offsets[number]
        index = index_of(number, info)
        shard_rank = corpus.id_rank[offset : offset + info.num_rows]
        for begin in range(0, len(queries), batch):
            rows = slice(begin, begin + batch)
            found, found_rows = search_shard(
                index, queries[rows], k, shard_rank, exact=settings["index"] == "flat"
            )
            found_ordinals = np.where(found_rows >= 0, found_rows + offset, -1)
            if number == nonempty[0]:
                # The first shard's list is the running list (it may be shorter than k).
                width = found.shape[1]
                scores[rows, :width], ordinals[rows, :width] = found, found_ordinals
            else:
                scores[rows], ordinals[rows] = merge_topk(
                    scores[rows], ordinals[rows], found, found_ordinals, k, corpus.id_rank
                )
    return scores, ordinals


def run_table(
    query_ids: pa.Array, scores: np.ndarray, ordinals: np.ndarray, doc_ids: pa.Array
) -> pa.Table:
    """The RUN rows of a block: per query its valid candidates, rank 1..n."""
    valid = ordinals >= 0
    counts = valid.sum(axis=1)
    ranks = np.broadcast_to(np.arange(1, ordinals.shape[1] + 1, dtype=np.int32), ordinals.shape)
    return pa.table(
        {
            "query_id": pc.take(query_ids, np.repeat(np.arange(len(query_ids)), counts)),
            "doc_id": doc_ids.take(ordinals[valid]).cast(pa.string()),
            "rank": ranks[valid],
            "score": scores[valid],
        },
        schema=RUN,
    )


def search(
    queries_path: str | Path,
    corpus_paths: Sequence[str | Path],
    out_path: str | Path,
    settings: Mapping[str, Any],
) -> int:
    """Retrieve the top `depth` passages of every query and write the run; returns its rows.

    `settings` is the resolved `search` config section.
    """
    queries = inspect_embeddings(queries_path)
    shards = [inspect_embeddings(path) for path in corpus_paths]
    check_inputs(queries, shards)
    corpus = load_corpus_ids(shards)
    k = min(settings["depth"], len(corpus.id_rank))
    cache = _ShardCache(settings)
    prov = provenance("search", settings, shards=len(shards))
    written = 0
    with parquet_writer(out_path, RUN, prov) as writer:
        for query_ids, matrix in iter_embeddings(
            queries, rows=query_block_size(k, settings["batch_size"])
        ):
            scores, ordinals = search_block(matrix, shards, corpus, settings, cache.get)
            table = run_table(query_ids, scores, ordinals, corpus.doc_ids)
            writer.write_table(table)
            written += table.num_rows
            log.info("searched %d queries, %d run rows so far", len(query_ids), written)
    return written
