"""Benchmark: the time limit a search job asks a cluster for, beside what the search takes.

A search job's `runtime` (workflow/rules/search.smk) is `lead.retrieval.search.search_minutes`:
PAIR_NS + DIM_NS x dimension nanoseconds per (query, passage) pair and thread. This measures
lead's own `search` (flat index, top `--depth`, one thread, the run written) on random
embeddings of two widths, and prints per width the measured cost per pair, the assumed one and
their ratio (the limit's margin on this CPU), and both extrapolated to the MS MARCO mining
search (502,939 queries x 8,841,823 passages, 768-d) on 16 threads, the slurm profile's.

    .venv/bin/python benchmarks/search_runtime.py [--passages 100000] [--queries 2048]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa

from lead.config import resolve
from lead.io import write_table
from lead.retrieval import search as search_module
from lead.retrieval.encode import embeddings_table
from lead.schemas import embeddings

MINING_PAIRS = 502_939 * 8_841_823
MINING_THREADS = 16


def write_embeddings(path: Path, matrix: np.ndarray) -> Path:
    ids = pa.array([f"{path.stem}-{i}" for i in range(len(matrix))], pa.string())
    write_table(embeddings_table(ids, matrix, embeddings(matrix.shape[1])), path)
    return path


def seconds_per_pair(folder: Path, dim: int, passages: int, queries: int, depth: int) -> float:
    rng = np.random.default_rng(dim)
    corpus = write_embeddings(
        folder / f"corpus-{dim}.parquet", rng.standard_normal((passages, dim), np.float32)
    )
    asked = write_embeddings(
        folder / f"queries-{dim}.parquet", rng.standard_normal((queries, dim), np.float32)
    )
    start = time.perf_counter()
    search_module.search(asked, [corpus], folder / f"run-{dim}.parquet",
                         resolve("search", {"depth": depth}))
    return (time.perf_counter() - start) / (passages * queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2048)
    parser.add_argument("--depth", type=int, default=500)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    print(f"{args.queries} queries x {args.passages} passages, top {args.depth}, 1 thread")
    print("dim | measured ns/pair | assumed ns/pair | assumed / measured | "
          f"MS MARCO mining on {MINING_THREADS} threads: measured h | limit h")
    hours_per_ns = MINING_PAIRS * 1e-9 / MINING_THREADS / 3600
    with tempfile.TemporaryDirectory() as folder:
        for dim in (32, 768):
            measured = seconds_per_pair(Path(folder), dim, args.passages, args.queries,
                                        args.depth) * 1e9
            assumed = search_module.PAIR_NS + search_module.DIM_NS * dim
            limit = search_module.limit_minutes(MINING_PAIRS, dim, MINING_THREADS) / 60
            print(f"{dim} | {measured:.2f} | {assumed:.2f} | {assumed / measured:.2f} | "
                  f"{measured * hours_per_ns:.2f} | {limit:.2f}")

if __name__ == "__main__":
    main()
