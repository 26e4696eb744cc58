"""Benchmark: peak memory of the BM25 index the negatives stage builds, lead's streaming
`lead.data.bm25.build_index` beside bm25s's own `BM25.index`, on the same passages.

bm25s indexes a corpus from its token ids as Python lists (one Python int per token), which
at MS MARCO's 8,841,823 passages is about 20 GB; lead tokenizes a batch at a time and keeps
only numpy postings (equal to bm25s's index to the bit: tests/data/test_bm25.py).

1. Takes the first `--passages` passages of `--corpus` (a CORPUS parquet; by default the
   rehearsal's generated MS MARCO, results/rehearsal/data/corpus.parquet), and a tenth of
   them, into temporary parquets.
2. Builds the index in a fresh process for each way, one after the other, and reads the
   process's peak RSS and wall time: (a) lead's `build_index`; (b) bm25s: the same tokenizer
   over the whole corpus, then `BM25(k1, b).index((ids, vocab))`, as lead did before.
3. Prints both, their ratio, the postings count, the memory each posting costs (the slope
   between the two sizes: the interpreter and libraries, ~0.3 GB, do not grow), and each
   peak extrapolated along that slope to MS MARCO's size.

    .venv/bin/python benchmarks/bm25_index_memory.py --passages 300000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MS_MARCO_PASSAGES = 8_841_823

CHILD = """
import json, sys, time
import resource
from lead.data import bm25
corpus, way = sys.argv[1], sys.argv[2]
start = time.perf_counter()
if way == "lead":
    index = bm25.build_index(corpus, k1=0.9, b=0.4)
    postings = len(index.retriever.scores["data"])
else:
    import bm25s
    import pyarrow.compute as pc
    from bm25s.tokenization import Tokenizer
    from lead import schemas
    from lead.io import iter_batches
    tokenizer = Tokenizer(lower=True, stopwords=bm25.STOPWORDS, stemmer=None)
    ids = []
    for batch in iter_batches(corpus, schemas.CORPUS):
        titles = pc.fill_null(batch.column("title"), "")
        texts = pc.binary_join_element_wise(titles, pc.fill_null(batch.column("text"), ""), " ")
        ids.extend(tokenizer.tokenize(texts.to_pylist(), update_vocab=True, return_as="ids",
                                      show_progress=False, allow_empty=False))
    retriever = bm25s.BM25(k1=0.9, b=0.4)
    retriever.index((ids, tokenizer.get_vocab_dict()), create_empty_token=False,
                    show_progress=False)
    postings = len(retriever.scores["data"])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak, "postings": postings}))
"""


def measure(corpus: Path, way: str) -> dict:
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(corpus), way], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path,
                        default=Path("results/rehearsal/data/corpus.parquet"))
    parser.add_argument("--passages", type=int, default=300_000)
    args = parser.parse_args()
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lead import schemas
    from lead.io import write_table

    sizes = (args.passages // 10, args.passages)
    results: dict[tuple[str, int], dict] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            subset = Path(folder) / f"corpus-{size}.parquet"
            batch = next(pq.ParquetFile(args.corpus).iter_batches(batch_size=size))
            write_table(pa.Table.from_batches([batch]).cast(schemas.CORPUS), subset)
            for way in ("lead", "bm25s"):
                results[way, size] = measure(subset, way)
    print(f"first {sizes[0]:,} and {sizes[1]:,} passages of {args.corpus}")
    at_full = {}
    for way in ("lead", "bm25s"):
        small, large = results[way, sizes[0]], results[way, sizes[1]]
        per_posting = ((large["peak_mb"] - small["peak_mb"]) * 2**20
                       / (large["postings"] - small["postings"]))
        at_full[way] = (large["peak_mb"] + (MS_MARCO_PASSAGES - sizes[1]) / sizes[1]
                        * large["postings"] * per_posting / 2**20) / 1024
        print(f"{way:6s} {large['seconds']:7.1f} s  peak {small['peak_mb']:6.0f} MB -> "
              f"{large['peak_mb']:6.0f} MB  postings {large['postings']:,}  "
              f"{per_posting:.1f} B/posting  at MS MARCO's size ~{at_full[way]:.1f} GB")
    lead, ref = results["lead", sizes[1]], results["bm25s", sizes[1]]
    print(f"at {sizes[1]:,} passages, bm25s / lead: peak {ref['peak_mb'] / lead['peak_mb']:.2f}x, "
          f"time {ref['seconds'] / lead['seconds']:.2f}x; at MS MARCO's size, peak "
          f"{at_full['bm25s'] / at_full['lead']:.2f}x "
          f"(all runs {time.perf_counter() - started:.0f} s)")

if __name__ == "__main__":
    main()
