"""Dev evaluation during training: the signal that picks the best checkpoint.

Every dev query is ranked against one candidate pool: every judged dev passage plus a fixed,
seeded sample of the corpus (the whole corpus when it is smaller than the pool size). The pool
is the same at every evaluation, so the metric moves only with the model, and what does not
change between evaluations is prepared once: the pool's and the queries' tokens are read,
length-sorted and padded into batches when the dev set is loaded. Dual encoders and ColBERT
score the whole pool with the model's own similarity (inner product / MaxSim); a cross-encoder
cannot score Q x pool pairs cheaply, so it reranks, per query, its judged passages plus a seeded
sample of the pool (a random-negatives proxy: cheap, and monotone enough to compare checkpoints
of one run). Under data parallelism each process scores a slice and the top candidates are
gathered, so every process sees the same metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from lead import distributed, schemas
from lead.errors import DataError
from lead.evaluation.evaluate import evaluate_run
from lead.io import read_table
from lead.training.data import TokenTable, file_ids, file_rows, keep_rows


@dataclass(frozen=True)
class DevSet:
    queries: TokenTable
    corpus: TokenTable  # the pool's rows only
    judged: dict[int, np.ndarray]  # query row -> corpus rows of its judged passages
    qrels: pd.DataFrame

    @property
    def pool(self) -> np.ndarray:
        return np.arange(len(self.corpus), dtype=np.int64)


def load_dev_set(
    query_tokens: str | Path, qrels_path: str | Path, corpus_tokens: str | Path,
    pool_size: int, seed: int, scratch: Path | None = None,
) -> DevSet:
    """Dev queries, qrels and the candidate pool, with every id checked against the tokens.

    Two streaming passes over the corpus tokens (ids, then the pool's rows): memory depends on
    the pool, not on the corpus.
    """
    qrels = read_table(qrels_path, schemas.QRELS)
    if qrels.num_rows == 0:
        raise DataError(qrels_path, None, "no dev judgments")
    judged_ids = pc.unique(qrels.column("doc_id").combine_chunks())
    judged_rows, first = [], 0
    for ids in file_ids(corpus_tokens):
        found = pc.is_in(ids, value_set=judged_ids).to_numpy(zero_copy_only=False)
        judged_rows.append(first + np.flatnonzero(found))
        first += len(ids)
    pool = candidate_pool(file_rows(corpus_tokens), np.concatenate(judged_rows), pool_size, seed)
    corpus = TokenTable.read(corpus_tokens, keep_rows(pool), scratch)
    queries = TokenTable.read(query_tokens)
    query_rows = queries.rows(qrels.column("query_id").combine_chunks(), qrels_path)
    doc_rows = corpus.rows(qrels.column("doc_id").combine_chunks(), qrels_path)
    judged = {
        int(query): np.unique(doc_rows[query_rows == query]) for query in np.unique(query_rows)
    }
    return DevSet(queries=queries, corpus=corpus, judged=judged, qrels=qrels.to_pandas())


def candidate_pool(corpus_size: int, judged: np.ndarray, pool_size: int, seed: int) -> np.ndarray:
    """Judged rows plus a seeded sample of the others, `pool_size` in all (sorted rows).

    The sample is drawn among the non-judged row numbers without listing them, so memory is
    that of the pool, not of the corpus.
    """
    if corpus_size <= pool_size:
        return np.arange(corpus_size, dtype=np.int64)
    judged = np.unique(judged.astype(np.int64))
    extra = max(pool_size - len(judged), 0)
    picks = np.sort(
        np.random.default_rng(seed).choice(corpus_size - len(judged), size=extra, replace=False)
    )
    # The k-th non-judged row is k plus the number of judged rows at or before it.
    shift = np.searchsorted(judged - np.arange(len(judged)), picks, side="right")
    return np.sort(np.concatenate([judged, picks + shift]))


@dataclass(frozen=True)
class Scoring:
    """How to run the model during evaluation (device, autocast) and in what chunks."""

    device: torch.device
    autocast: Callable[[], AbstractContextManager]
    batch_size: int
    rank: int = 0
    world_size: int = 1


class DevBatches:
    """The dev queries and this process's slice of the pool, length-sorted and padded once."""

    def __init__(self, dev: DevSet, pad_id: int, scoring: Scoring):
        self.query_rows = np.asarray(sorted(dev.judged), dtype=np.int64)
        mine = np.array_split(dev.pool, scoring.world_size)[scoring.rank]
        self.pool_rows = mine[np.argsort(dev.corpus.lengths(mine), kind="stable")]
        self.queries = _padded(dev.queries, self.query_rows, pad_id, scoring.batch_size)
        self.passages = _padded(dev.corpus, self.pool_rows, pad_id, scoring.batch_size)


def _padded(table: TokenTable, rows: np.ndarray, pad_id: int, batch_size: int):
    from lead.modeling.encoders import collate

    batches = []
    for start in range(0, len(rows), batch_size):
        chosen = rows[start : start + batch_size]
        batch = collate(table.token_ids(chosen), pad_id)
        batches.append((chosen, {k: v.to(torch.int32) for k, v in batch.items()}))
    return batches


def dev_metrics(
    encoder, dev: DevSet, *, depth: int, measures: Sequence[str], scoring: Scoring, seed: int,
    batches: DevBatches | None = None,
) -> dict[str, float]:
    """Rank the pool for every dev query and score the run; the model is left in eval mode.

    `batches` are the dev set's prepared batches for this model (built when absent).
    """
    encoder.eval()
    with torch.no_grad():
        if encoder.kind == "cross":
            query_idx, pool_rows, scores = _rerank(encoder, dev, depth, scoring, seed)
        else:
            batches = batches or DevBatches(dev, encoder.pad_id, scoring)
            query_idx, pool_rows, scores = _retrieve(encoder, batches, depth, scoring)
    query_idx, pool_rows, scores = _gather(query_idx, pool_rows, scores, scoring)
    query_rows = np.asarray(sorted(dev.judged), dtype=np.int64)
    run = pd.DataFrame(
        {
            "query_id": np.asarray(dev.queries.ids.take(pa.array(query_rows[query_idx]))),
            "doc_id": np.asarray(dev.corpus.ids.take(pa.array(pool_rows))),
            "score": scores.astype(np.float64),
        }
    )
    run = _top(run, depth)
    summary, _ = evaluate_run(run, dev.qrels, relevance_level=1, measures=list(measures))
    return dict(zip(summary["measure"], summary["value"].astype(float), strict=True))


def _on(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: t.to(device).long() for name, t in batch.items()}


def _retrieve(encoder, batches: DevBatches, depth: int, scoring: Scoring):
    """Score every query against this process's slice of the pool; keep the top `depth`."""
    queries = []
    for _, batch in batches.queries:
        with scoring.autocast():
            reps = encoder.encode_query(_on(batch, scoring.device))
        queries.append((reps.final, reps.mask))
    count = len(batches.query_rows)
    best_scores = torch.full((count, 0), -torch.inf, device=scoring.device)
    best_rows = torch.zeros((count, 0), dtype=torch.long, device=scoring.device)
    for rows, batch in batches.passages:
        with scoring.autocast():
            reps = encoder.encode_passage(_on(batch, scoring.device))
        scores = torch.cat(
            [encoder.compute_similarity(q, reps.final, q_mask, reps.mask) for q, q_mask in queries]
        )
        candidates = torch.as_tensor(rows, device=scoring.device).expand(count, -1)
        best_scores = torch.cat([best_scores, scores], dim=1)
        best_rows = torch.cat([best_rows, candidates], dim=1)
        keep = min(depth, best_scores.shape[1])
        best_scores, top = best_scores.topk(keep, dim=1)
        best_rows = best_rows.gather(1, top)
    query_idx = np.repeat(np.arange(count), best_rows.shape[1])
    return query_idx, best_rows.cpu().numpy().ravel(), best_scores.cpu().numpy().ravel()


def _device_batch(table: TokenTable, rows: np.ndarray, pad_id: int, device: torch.device):
    from lead.modeling.encoders import collate

    return {name: t.to(device) for name, t in collate(table.token_ids(rows), pad_id).items()}


def _rerank(encoder, dev: DevSet, depth: int, scoring: Scoring, seed: int):
    """Cross-encoder: each query of this process's slice reranks `depth` candidates of its own."""
    query_rows = np.asarray(sorted(dev.judged), dtype=np.int64)
    mine = np.array_split(np.arange(len(query_rows)), scoring.world_size)[scoring.rank]
    rng = np.random.default_rng(seed)
    query_idx, pool_rows, scores = [], [], []
    for index in range(len(query_rows)):
        judged = dev.judged[int(query_rows[index])]
        others = np.setdiff1d(dev.pool, judged, assume_unique=True)
        sample = rng.choice(others, size=min(max(depth - len(judged), 0), len(others)),
                            replace=False)
        if index not in mine:  # every process draws every sample, so slices stay seeded alike
            continue
        candidates = np.concatenate([judged, sample])
        query = _device_batch(dev.queries, query_rows[[index]], encoder.pad_id, scoring.device)
        for start in range(0, len(candidates), scoring.batch_size):
            rows = candidates[start : start + scoring.batch_size]
            passages = _device_batch(dev.corpus, rows, encoder.pad_id, scoring.device)
            with scoring.autocast():
                final, _ = encoder.score_groups(query, passages, len(rows))
            query_idx.append(np.full(len(rows), index))
            pool_rows.append(rows)
            scores.append(final.float().cpu().numpy().ravel())
    return np.concatenate(query_idx), np.concatenate(pool_rows), np.concatenate(scores)


def _gather(query_idx: np.ndarray, pool_rows: np.ndarray, scores: np.ndarray, scoring: Scoring):
    """Every process's candidates, on every process (a no-op in a single process)."""
    if scoring.world_size == 1:
        return query_idx, pool_rows, scores
    parts = distributed.gather_objects((query_idx, pool_rows, scores))
    return tuple(np.concatenate([part[i] for part in parts]) for i in range(3))


def _top(run: pd.DataFrame, depth: int) -> pd.DataFrame:
    """The best `depth` per query, ties broken by doc id (the project's ranking order)."""
    run = run.sort_values(
        ["query_id", "score", "doc_id"], ascending=[True, False, True], kind="stable"
    )
    return run.groupby("query_id", sort=False).head(depth).reset_index(drop=True)
