"""BM25 retrieval for hard-negative mining: a bm25s index, searched in batches on threads.

bm25s scores one query at a time into a dense array over the whole corpus, then selects the
best over it: O(corpus) work per query, hours for MS MARCO's 502,939 training queries on
8.8M passages. Here a query touches only the passages that share a term with it: the
postings of its terms are added into a small accumulator one block of passages at a time
(so that it stays in cache), and the best `k` are kept behind a running threshold. Chunks of
queries run in compiled code (numba) on threads, without the GIL. On a CPU with AVX-512 the
inner loops take 16 postings or candidates at a time (`lead.data.avx512`).

The results are bm25s's to the bit: a passage's contributions are added in float32 in the
query's token order (a repeated token counts twice), as bm25s adds them; ties are broken by
corpus order (score descending, then index ascending); a passage that shares no term with
the query (score 0) is never retrieved. Each query is computed on its own, so the results do
not depend on the number of threads.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lead import schemas
from lead.data import avx512
from lead.io import iter_batches

STOPWORDS = "en"
BLOCK = 1 << 13  # passages per accumulator block: 32 KB of float32, inside L1
CHUNK = 256  # queries per task


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
    """Index a CORPUS parquet with bm25s (Lucene's BM25, English stop words, no stemmer)."""
    import bm25s
    from bm25s.tokenization import Tokenizer

    # No stemmer: PyStemmer is not a dependency, and scores must not depend on what else is
    # installed.
    tokenizer = Tokenizer(lower=True, stopwords=STOPWORDS, stemmer=None)
    doc_ids: list[pa.Array] = []
    token_ids: list[list[int]] = []
    for batch in iter_batches(corpus, schemas.CORPUS):
        titles = pc.fill_null(batch.column("title"), "")
        texts = pc.binary_join_element_wise(titles, pc.fill_null(batch.column("text"), ""), " ")
        token_ids.extend(tokenizer.tokenize(
            texts.to_pylist(), update_vocab=True, return_as="ids", show_progress=False,
            allow_empty=False,
        ))
        doc_ids.append(batch.column("doc_id"))
    retriever = bm25s.BM25(k1=k1, b=b)  # method "lucene": no score for absent terms
    retriever.index((token_ids, tokenizer.get_vocab_dict()), create_empty_token=False,
                    show_progress=False)
    ids = pa.chunked_array(doc_ids, pa.string()).to_numpy(zero_copy_only=False)
    return Index(tokenizer, retriever, ids)


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a SLURM allocation)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def top_k(
    index: Index, queries: Sequence[Sequence[int]], k: int, threads: int | None = None,
    vector: bool = avx512.AVAILABLE,
) -> Iterator[np.ndarray]:
    """For each query (token ids), in order: the corpus indices of its `k` best passages,
    best first (fewer when fewer passages share a term with it).

    `threads` (default: every available core) run chunks of queries in parallel; at most two
    chunks per thread are held at once, so memory does not grow with the number of queries.
    `vector` takes the AVX-512 kernel (the default where the CPU has it); the results are
    the same either way.
    """
    threads = threads or available_cores()
    scores = index.retriever.scores
    postings = (np.ascontiguousarray(scores["indptr"], np.int64),
                np.ascontiguousarray(scores["indices"], np.int32),
                np.ascontiguousarray(scores["data"], np.float32), int(scores["num_docs"]))

    def run(chunk: Sequence[Sequence[int]]) -> list[np.ndarray]:
        return _top_k_chunk(postings, chunk, k, vector)

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
    k: int, vector: bool,
) -> list[np.ndarray]:
    offsets = np.zeros(len(queries) + 1, np.int64)
    offsets[1:] = np.cumsum([len(query) for query in queries])
    tokens = np.fromiter((t for query in queries for t in query), np.int64, int(offsets[-1]))
    best = np.empty((len(queries), k), np.int32)
    counts = np.empty(len(queries), np.int64)
    longest = max(1, int(np.diff(offsets).max(initial=0)))
    search = _search_avx512 if vector else _search_scalar
    search(*postings, offsets, tokens, k, BLOCK, np.zeros(BLOCK, np.float32),
           np.empty(BLOCK + avx512.LANES, np.int32), np.empty(longest, np.int64),
           np.empty(max(4 * k, 64) + avx512.LANES, np.uint64), best, counts)
    return [best[i, : counts[i]] for i in range(len(queries))]


_LOW32 = np.uint64(0xFFFFFFFF)


@numba.njit(nogil=True, cache=True)
def _cut(keys, kept, k):
    """Keep the `k` best of keys[:kept] at its front; returns `k` and the new threshold."""
    keys[:k] = np.partition(keys[:kept], kept - k)[kept - k :]
    return k, keys[:k].min()


def _kernel(vector: bool):
    """The kernel of `top_k` for one chunk of queries (see the module doc), with its inner
    loops 16 lanes wide (`vector`, AVX-512) or one posting at a time.

    A passage's rank is the key (float32 bits of its score << 32 | ~index): positive floats
    order as their bits do, so the largest key is the best passage and ties go to the lower
    index. Keys above the running threshold are buffered; a full buffer is cut back to its
    `k` best, which raises the threshold. The vector steps buffer every key whose score is
    at least the threshold's (a few more than needed, never fewer).
    """
    lanes = avx512.LANES

    @numba.njit(nogil=True, cache=True)
    def search(indptr, indices, data, num_docs, offsets, tokens, k, block, acc, touched, cursor,
               keys, best, counts):
        capacity = len(keys) - lanes
        size = len(indices)
        bits = acc.view(np.uint32)
        for q in range(len(offsets) - 1):
            first, last = offsets[q], offsets[q + 1]
            for j in range(first, last):
                cursor[j - first] = indptr[tokens[j]]
            kept = 0
            threshold = np.uint64(0)
            for start in range(0, num_docs, block):
                end = start + block
                found = 0
                for j in range(first, last):  # token order: bm25s's order of additions
                    p, stop = cursor[j - first], indptr[tokens[j] + 1]
                    if vector:
                        # 16 at a time, p advanced apart from the lanes' work so that the
                        # next loads need not wait for it; then the block's last few.
                        if j == first:  # the block's accumulator is all zeros yet
                            while p + lanes <= stop and indices[p + lanes - 1] < end:
                                found, _ = avx512.put_postings(acc, indices, data, p, stop,
                                                               start, end, touched, found)
                                p += lanes
                        while p + lanes <= stop and indices[p + lanes - 1] < end:
                            found, _ = avx512.add_postings(acc, indices, data, p, stop, start,
                                                           end, touched, found)
                            p += lanes
                        if p < stop and indices[p] < end and p + lanes <= size:
                            found, p = avx512.add_postings(acc, indices, data, p, stop, start,
                                                           end, touched, found)
                    while p < stop and indices[p] < end:
                        slot = indices[p] - start
                        before = acc[slot]
                        touched[found] = slot
                        found += (before == 0) & (data[p] > 0)
                        acc[slot] = before + data[p]
                        p += 1
                    cursor[j - first] = p
                i = 0
                if vector:
                    while i < found:
                        kept = avx512.take_candidates(acc, touched, i, found,
                                                      np.uint32(threshold >> np.uint64(32)),
                                                      start, keys, kept)
                        i += lanes
                        if kept >= capacity:
                            kept, threshold = _cut(keys, kept, k)
                while i < found:
                    slot = touched[i]
                    key = ((np.uint64(bits[slot]) << np.uint64(32))
                           | (_LOW32 - np.uint64(start + slot)))
                    acc[slot] = 0
                    if key > threshold:
                        keys[kept] = key
                        kept += 1
                        if kept >= capacity:
                            kept, threshold = _cut(keys, kept, k)
                    i += 1
            if kept > k:
                kept, threshold = _cut(keys, kept, k)
            ranked = np.sort(keys[:kept])[::-1]
            for i in range(len(ranked)):
                best[q, i] = np.int64(_LOW32 - (ranked[i] & _LOW32))
            counts[q] = len(ranked)

    return search


# Compiled on first use, and the vector one only where the CPU has AVX-512.
_search_scalar = _kernel(vector=False)
_search_avx512 = _kernel(vector=True)
