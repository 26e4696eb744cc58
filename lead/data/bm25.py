"""BM25 retrieval for hard-negative mining: a bm25s index, searched in batches on threads.

bm25s scores one query at a time into a dense array over the whole corpus, then selects the
best over it: O(corpus) work per query, hours for MS MARCO's 502,939 training queries on
8.8M passages. Here a query touches only the passages that share a term with it:

- The corpus is taken in blocks of `BLOCK` passages. In each block, the postings (passage,
  weight) of the query's terms are added into an accumulator of `BLOCK` float32 scores,
  small enough to stay in the CPU's cache. A term's postings are sorted by passage, so one
  cursor per term walks them once across all the blocks.
- The passages a block's additions reach are listed as they are first reached, and only
  those are read back (and reset to 0) when the block is done: the work grows with the
  postings, not with the corpus.
- A passage becomes a candidate only if it beats a running threshold, the `k`-th best score
  kept so far; a full candidate buffer is cut back to its `k` best, which raises it.

Chunks of `CHUNK` queries run in one compiled call (numba, without the GIL) on threads.

The results are bm25s's to the bit: a passage's contributions are added in float32 in the
query's token order (a repeated token counts twice), as bm25s adds them; ties are broken by
corpus order (score descending, then index ascending); a passage that shares no term with
the query (score 0) is never retrieved. Each query is computed on its own, so the results do
not depend on the number of threads.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lead import schemas
from lead.io import iter_batches

STOPWORDS = "en"
# Passages per accumulator block: 64 KB of float32, in L2. 8k to 32k passages are within a
# few % of each other (benchmarks/bm25_negatives.py); 16k was the fastest, on both query sets.
BLOCK = 1 << 14
CHUNK = 256  # queries per task: 64 to 1,024 made no measurable difference


@dataclass(frozen=True)
class Index:
    """A bm25s index of a corpus's `title text`, and the doc ids in index order."""

    tokenizer: Any  # bm25s.tokenization.Tokenizer
    retriever: Any  # bm25s.BM25
    doc_ids: np.ndarray  # object array of str

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text; words the corpus does not have are left out."""
        return self.tokenizer.tokenize(texts, update_vocab=False, return_as="ids",
                                       show_progress=False, allow_empty=False)


def build_index(corpus: str | Path, k1: float, b: float) -> Index:
    """Index a CORPUS parquet as bm25s indexes it (method "lucene", English stop words, no
    stemmer), a batch of passages at a time.

    bm25s's own `BM25.index` takes the whole corpus's token ids as Python lists: about 36
    bytes a token, 20 GB for MS MARCO. Here each batch's tokens become its (term, count)
    postings in numpy at once; the scores, which need the document frequencies and the
    mean length of the whole corpus, are computed in a second pass over those postings and
    scattered into the index (CSC, postings sorted by passage, as bm25s builds it). Peak
    memory: about 8 bytes a posting held between the passes, plus the index's own 8.
    Every score is computed with bm25s's formula and operations, so the index is bm25s's
    to the bit (tests/data/test_bm25.py compares them).
    """
    import bm25s
    from bm25s.tokenization import Tokenizer

    # No stemmer: PyStemmer is not a dependency, and scores must not depend on what else is
    # installed.
    tokenizer = Tokenizer(lower=True, stopwords=STOPWORDS, stemmer=None)
    doc_ids: list[pa.Array] = []
    batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # terms, counts, per doc
    lengths: list[np.ndarray] = []
    for batch in iter_batches(corpus, schemas.CORPUS):
        titles = pc.fill_null(batch.column("title"), "")
        texts = pc.binary_join_element_wise(titles, pc.fill_null(batch.column("text"), ""), " ")
        tokens = tokenizer.tokenize(texts.to_pylist(), update_vocab=True, return_as="ids",
                                    show_progress=False, allow_empty=False)
        length = np.fromiter(map(len, tokens), np.int64, len(tokens))
        flat = np.fromiter(chain.from_iterable(tokens), np.int64, int(length.sum()))
        del tokens
        # One posting per (passage, term), sorted by passage: the key is passage << 32 | term.
        keys, counts = np.unique(np.repeat(np.arange(len(length), dtype=np.int64), length)
                                 << 32 | flat, return_counts=True)
        batches.append(((keys & 0xFFFFFFFF).astype(np.int32), counts.astype(np.float32),
                        np.bincount(keys >> 32, minlength=len(length))))
        lengths.append(length)
        doc_ids.append(batch.column("doc_id"))
    vocab = tokenizer.get_vocab_dict()
    doc_length = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    num_docs, mean_length = len(doc_length), doc_length.mean() if len(doc_length) else 0.0
    frequency = np.zeros(len(vocab), np.int64)
    for terms, _, _ in batches:
        frequency += np.bincount(terms, minlength=len(vocab))
    idf = _lucene_idf(frequency, num_docs)
    indptr = np.zeros(len(vocab) + 1, np.int64)
    np.cumsum(frequency, out=indptr[1:])
    indices = np.empty(int(indptr[-1]), np.int32)
    data = np.empty(int(indptr[-1]), np.float32)
    cursor, first = indptr[:-1].copy(), 0
    pending = deque(batches)
    del batches
    while pending:
        terms, counts, per_doc = pending.popleft()  # freed as it is scattered
        last = first + len(per_doc)
        # bm25s's term-frequency component, in its float64 operations and order.
        norm = k1 * ((1 - b) + b * doc_length[first:last].astype(np.float64) / mean_length)
        tf = counts.astype(np.float64)
        scores = (idf[terms] * (tf / (np.repeat(norm, per_doc) + tf))).astype(np.float32)
        docs = np.repeat(np.arange(first, last, dtype=np.int32), per_doc)
        _scatter(terms, docs, scores, cursor, indices, data)
        first = last
    # The attributes bm25s's BM25.index sets, so get_scores and retrieve work on this index.
    retriever = bm25s.BM25(k1=k1, b=b)  # method "lucene": no score for absent terms
    retriever.nonoccurrence_array = None
    retriever.scores = {"data": data, "indices": indices, "indptr": indptr,
                        "num_docs": num_docs}
    retriever.vocab_dict = vocab
    retriever.unique_token_ids_set = set(vocab.values())
    ids = pa.chunked_array(doc_ids, pa.string()).to_numpy(zero_copy_only=False)
    return Index(tokenizer, retriever, ids)


def _lucene_idf(frequency: np.ndarray, num_docs: int) -> np.ndarray:
    """bm25s's "lucene" idf, log(1 + (N - df + 0.5) / (df + 0.5)), with Python's math.log
    as bm25s computes it (numpy's log may differ in the last bit), once per distinct df."""
    distinct, where = np.unique(frequency, return_inverse=True)
    values = np.array([math.log(1 + (num_docs - df + 0.5) / (df + 0.5)) if df else 0.0
                       for df in distinct.tolist()], np.float32)
    return values[where]


@numba.njit(cache=True)
def _scatter(terms, docs, scores, cursor, indices, data):
    """Append each posting to its term's column; passages arrive in order, so each column
    stays sorted by passage."""
    for i in range(len(terms)):
        at = cursor[terms[i]]
        indices[at] = docs[i]
        data[at] = scores[i]
        cursor[terms[i]] = at + 1


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a SLURM allocation)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def top_k(
    index: Index, queries: Sequence[Sequence[int]], k: int, threads: int | None = None,
) -> Iterator[np.ndarray]:
    """For each query (token ids), in order: the corpus indices of its `k` best passages,
    best first (fewer when fewer passages share a term with it).

    `threads` (default: every available core) run chunks of queries in parallel; at most two
    chunks per thread are held at once, so memory does not grow with the number of queries.
    """
    threads = threads or available_cores()
    scores = index.retriever.scores
    postings = (np.ascontiguousarray(scores["indptr"], np.int64),
                np.ascontiguousarray(scores["indices"], np.int32),
                np.ascontiguousarray(scores["data"], np.float32), int(scores["num_docs"]))
    k = min(k, postings[3])  # no query has more: a deeper k would only allocate (CHUNK x k)

    def run(chunk: Sequence[Sequence[int]]) -> list[np.ndarray]:
        return _top_k_chunk(postings, chunk, k)

    with ThreadPoolExecutor(threads) as pool:
        pending: deque[Future] = deque()
        for start in range(0, len(queries), CHUNK):
            pending.append(pool.submit(run, queries[start : start + CHUNK]))
            if len(pending) >= 2 * threads:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


def _top_k_chunk(
    postings: tuple[np.ndarray, np.ndarray, np.ndarray, int], queries: Sequence[Sequence[int]],
    k: int,
) -> list[np.ndarray]:
    offsets = np.zeros(len(queries) + 1, np.int64)
    offsets[1:] = np.cumsum([len(query) for query in queries])
    tokens = np.fromiter((t for query in queries for t in query), np.int64, int(offsets[-1]))
    best = np.empty((len(queries), k), np.int32)
    counts = np.empty(len(queries), np.int64)
    longest = max(1, int(np.diff(offsets).max(initial=0)))
    # touched: one spare slot, written (and not counted) when a block is already all touched.
    _search(*postings, offsets, tokens, k, BLOCK, np.zeros(BLOCK, np.float32),
            np.empty(BLOCK + 1, np.int32), np.empty(longest, np.int64),
            np.empty(max(4 * k, 64), np.uint64), best, counts)
    return [best[i, : counts[i]] for i in range(len(queries))]


_LOW32 = np.uint64(0xFFFFFFFF)


@numba.njit(nogil=True, cache=True)
def _cut(keys, kept, k):
    """Keep the `k` best of keys[:kept] at its front; returns `k` and the new threshold."""
    keys[:k] = np.partition(keys[:kept], kept - k)[kept - k :]
    return k, keys[:k].min()


@numba.njit(nogil=True, cache=True)
def _search(indptr, indices, data, num_docs, offsets, tokens, k, block, acc, touched, cursor,
            keys, best, counts):
    """`top_k` for one chunk of queries (see the module doc): query q's tokens are
    tokens[offsets[q]:offsets[q + 1]]; its best passages go to best[q, :counts[q]].

    acc (`block` zeros, left zeros), touched (`block` + 1), cursor (one per token of the
    longest query) and keys (the candidate buffer, more than `k`) are scratch arrays.
    A passage's rank is its key, (float32 bits of its score) << 32 | ~index: positive floats
    order as their bits do, so the largest key is the best passage and ties go to the lower
    index.
    """
    bits = acc.view(np.uint32)
    for q in range(len(offsets) - 1):
        first, last = offsets[q], offsets[q + 1]
        for j in range(first, last):
            cursor[j - first] = indptr[tokens[j]]
        kept = 0
        threshold = np.uint64(0)  # keys at or below it cannot be among the k best
        for start in range(0, num_docs, block):
            end = start + block
            found = 0  # passages of this block reached so far: touched[:found]
            for j in range(first, last):  # token order: bm25s's order of additions
                p, stop = cursor[j - first], indptr[tokens[j] + 1]
                while p < stop and indices[p] < end:
                    slot = indices[p] - start
                    before = acc[slot]
                    touched[found] = slot  # kept only if the slot is new (no branch)
                    found += (before == 0) & (data[p] > 0)
                    acc[slot] = before + data[p]
                    p += 1
                cursor[j - first] = p
            for i in range(found):
                slot = touched[i]
                key = (np.uint64(bits[slot]) << np.uint64(32)) | (_LOW32 - np.uint64(start + slot))
                acc[slot] = 0
                if key > threshold:
                    keys[kept] = key
                    kept += 1
                    if kept == len(keys):
                        kept, threshold = _cut(keys, kept, k)
        if kept > k:
            kept, threshold = _cut(keys, kept, k)
        ranked = np.sort(keys[:kept])[::-1]
        for i in range(len(ranked)):
            best[q, i] = np.int64(_LOW32 - (ranked[i] & _LOW32))
        counts[q] = len(ranked)
