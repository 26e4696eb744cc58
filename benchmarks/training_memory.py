"""Peak memory of a training process as the corpus grows: it must not grow with the corpus.

A training job keeps only the rows it needs (its groups' queries and passages, the dev pool),
streamed out of the tokens parquet and memory-mapped from its scratch folder. This benchmark
generates a tokens file of N and of 10 N passages (random token ids, 20-80 tokens each) with
the same training groups (2,000 queries x 30 negatives drawn from the first 100,000 passages)
and the same dev set, runs `python -m lead distill --method none` for a few steps on a tiny
random student in a child process, and prints each run's own peak RSS (ru_maxrss) and their
ratio, measured in one run.

    python benchmarks/training_memory.py [--passages 100000] [--factor 10] [--steps 5]
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pyarrow as pa

from lead import schemas
from lead.io import parquet_writer, write_table

CHILD = """
import resource, sys
from lead.__main__ import main
status = main(sys.argv[1:])
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
sys.exit(status)
"""
BLOCK = 100_000


def write_tokens(path: Path, count: int, vocab: int, seed: int, prefix: str) -> None:
    """`count` rows of [CLS] random ids [SEP], in blocks (memory independent of `count`)."""
    rng = np.random.default_rng(seed)
    with parquet_writer(path, schemas.TOKENS) as writer:
        for start in range(0, count, BLOCK):
            size = min(BLOCK, count - start)
            lengths = rng.integers(20, 81, size=size)
            offsets = np.zeros(size + 1, dtype=np.int32)
            np.cumsum(lengths, out=offsets[1:])
            values = rng.integers(5, vocab, size=int(offsets[-1]), dtype=np.int32)
            values[offsets[:-1]] = 2  # [CLS]
            values[offsets[1:] - 1] = 3  # [SEP]
            ids = pa.array([f"{prefix}{i}" for i in range(start, start + size)])
            column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
            writer.write_table(pa.table([ids, column], schemas.TOKENS))


def world(root: Path, passages: int, student: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    queries, reach = 2000, min(passages, 100_000)
    files = {"corpus": root / "corpus.tokens.parquet", "queries": root / "queries.parquet",
             "dev": root / "dev.parquet", "groups": root / "groups.parquet",
             "qrels": root / "qrels.parquet"}
    write_tokens(files["corpus"], passages, 100, 1, "d")
    write_tokens(files["queries"], queries, 100, 2, "q")
    write_tokens(files["dev"], 200, 100, 3, "v")
    groups = [{"query_id": f"q{i}", "positives": [f"d{rng.integers(reach)}"],
               "negatives": [f"d{j}" for j in rng.choice(reach, 30, replace=False)]}
              for i in range(queries)]
    write_table(pa.Table.from_pylist(groups, schemas.GROUPS), files["groups"])
    qrels = pa.table({"query_id": [f"v{i}" for i in range(200)],
                      "doc_id": [f"d{rng.integers(reach)}" for _ in range(200)],
                      "relevance": pa.array([1] * 200, pa.int32())}, schemas.QRELS)
    write_table(qrels, files["qrels"])
    files["student"] = student
    return files


def peak_rss_mb(files: dict[str, Path], out: Path, steps: int) -> tuple[float, float]:
    optimisation = {"steps": steps, "batch_size": 8, "negatives_per_query": 3,
                    "eval_every": steps, "checkpoint_every": steps, "dev_pool_size": 2000}
    argv = ["distill", "--method", "none",
            "--settings", json.dumps({"distillation": {"optimisation": optimisation}}),
            "--teacher", str(files["student"]), "--student", str(files["student"]),
            "--teacher-corpus-tokens", str(files["corpus"]),
            "--teacher-query-tokens", str(files["queries"]),
            "--student-corpus-tokens", str(files["corpus"]),
            "--student-query-tokens", str(files["queries"]), "--groups", str(files["groups"]),
            "--dev-query-tokens", str(files["dev"]), "--dev-qrels", str(files["qrels"]),
            "--out", str(out / "model"), "--log", str(out / "log.parquet"),
            "--checkpoint-dir", str(out / "checkpoints")]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    line = next(x for x in done.stdout.splitlines() if x.startswith("MAXRSS_KB"))
    return int(line.split()[1]) / 1024, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_models import make_model, make_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tokenizer = make_tokenizer(root / "tokenizer", vocab_size=120)
        student = make_model(root / "student", tokenizer, layers=2, hidden=32)
        results = {}
        for count in (args.passages, args.passages * args.factor):
            data = root / f"data-{count}"
            data.mkdir()
            started = time.perf_counter()
            files = world(data, count, student)
            size = files["corpus"].stat().st_size / 2**20
            print(f"{count:>10,} passages: tokens parquet {size:.0f} MB, generated in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
            results[count] = peak_rss_mb(files, data / "run", args.steps)
        small, large = results[args.passages], results[args.passages * args.factor]
        for count, (rss, seconds) in results.items():
            print(f"  distill on {count:>10,} passages: peak RSS {rss:7.1f} MB ({seconds:.0f} s)")
        print(f"  peak RSS {args.factor}x corpus / 1x corpus: {large[0] / small[0]:.3f} "
              "(target: within 10%, <= 1.10)")


if __name__ == "__main__":
    main()
