"""GPU check: bf16 LEAD distillation on CUDA, in one process and under a 1-GPU torchrun.

Teacher all-MiniLM-L6-v2 (6 x 384), student its blocks 0, 2, 4; random token ids (32 / 128
tokens), 32 queries x (1 + 7) passages per step. Both runs go through `python -m lead distill
--method lead` and print loss, step time and peak CUDA memory from their training logs; their
first-step losses should agree to bf16 precision. First it asserts that score matrices (dual
and ColBERT MaxSim, final and intermediate layers) come out of bf16 autocast on CUDA in fp32,
equal to scoring the same vectors with autocast off.

Without CUDA it prints "gpu_check: no GPU: skipped" and exits 0, so scripts can call it
anywhere; a failed run exits non-zero.

    python benchmarks/gpu_check.py [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lead import schemas
from lead.config import dumps
from lead.io import write_table

REPO = Path(__file__).resolve().parents[1]


def token_table(ids: list[str], rng: np.random.Generator, length: int, tokenizer) -> pa.Table:
    body = rng.integers(1000, len(tokenizer), size=(len(ids), length - 2))
    rows = [[tokenizer.cls_token_id, *row, tokenizer.sep_token_id] for row in body.tolist()]
    return pa.table({"id": ids, "input_ids": pa.array(rows, pa.list_(pa.int32()))}, schemas.TOKENS)


def write_data(root: Path, tokenizer, passages: int = 4096, queries: int = 512) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    doc_ids = [f"d{i}" for i in range(passages)]
    paths = {name: root / f"{name}.parquet" for name in ("corpus", "queries", "dev", "qrels",
                                                         "groups")}
    write_table(token_table(doc_ids, rng, 128, tokenizer), paths["corpus"])
    train_ids = [f"q{i}" for i in range(queries)]
    write_table(token_table(train_ids, rng, 32, tokenizer), paths["queries"])
    groups = []
    for query_id in train_ids:
        picked = rng.choice(passages, size=21, replace=False)
        groups.append({"query_id": query_id, "positives": [doc_ids[picked[0]]],
                       "negatives": [doc_ids[i] for i in picked[1:]]})
    write_table(pa.Table.from_pylist(groups, schemas.GROUPS), paths["groups"])
    dev_ids = [f"v{i}" for i in range(64)]
    write_table(token_table(dev_ids, rng, 32, tokenizer), paths["dev"])
    judged = rng.choice(passages, size=len(dev_ids), replace=False)
    write_table(pa.table({"query_id": dev_ids, "doc_id": [doc_ids[i] for i in judged],
                          "relevance": pa.array([1] * len(dev_ids), pa.int32())}, schemas.QRELS),
                paths["qrels"])
    return paths


def distill_argv(
    models: dict[str, Path], data: dict[str, Path], out: Path, steps: int
) -> list[str]:
    optimisation = {"steps": steps, "batch_size": 32, "negatives_per_query": 7, "precision": "bf16",
                    "eval_every": steps, "checkpoint_every": steps, "log_every": 1,
                    "dev_pool_size": 2048, "eval_depth": 100}
    settings = {"distillation": {"optimisation": optimisation, "layers": {"k": 3}}}
    return [
        "distill", "--method", "lead", "--settings", dumps(settings),
        "--teacher", str(models["teacher"]), "--student", str(models["student"]),
        # One tokenizer: teacher and student read the same tokens.
        "--teacher-corpus-tokens", str(data["corpus"]),
        "--teacher-query-tokens", str(data["queries"]),
        "--student-corpus-tokens", str(data["corpus"]),
        "--student-query-tokens", str(data["queries"]),
        "--groups", str(data["groups"]), "--dev-query-tokens", str(data["dev"]),
        "--dev-qrels", str(data["qrels"]), "--out", str(out / "model"),
        "--log", str(out / "log.parquet"), "--checkpoint-dir", str(out / "checkpoints"),
    ]


def summarise(name: str, log_path: Path, examples_per_step: int) -> float:
    log = pq.read_table(log_path).to_pandas()
    steady = log["examples_per_s"].iloc[1:] if len(log) > 1 else log["examples_per_s"]
    step_ms = examples_per_step / statistics.median(steady) * 1000
    dev = log["dev_RR@10"].dropna()
    print(f"  {name:16s} loss first {log['loss'].iloc[0]:.4f} last {log['loss'].iloc[-1]:.4f}  "
          f"step {step_ms:.1f} ms (median after the first)  peak CUDA memory "
          f"{log['memory_mb'].max():.0f} MB  dev RR@10 {dev.iloc[-1]:.4f}")
    return float(log["loss"].iloc[0])


def check_fp32_scores(model_dir: Path, rng: np.random.Generator) -> None:
    """The encoders run bf16 on CUDA; the scores LEAD's softmaxes read must not."""
    from lead.modeling.encoders import collate, load_encoder

    encoder = load_encoder(model_dir).cuda().eval()
    vocab = encoder.backbone.get_input_embeddings().num_embeddings

    def texts(n: int, length: int) -> dict[str, torch.Tensor]:
        rows = rng.integers(1000, vocab, size=(n, length)).tolist()
        return {k: v.cuda() for k, v in collate(rows, encoder.pad_id).items()}

    queries, passages = texts(4, 16), texts(8, 64)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        q = encoder.encode_query(queries, [2, encoder.num_layers])
        p = encoder.encode_passage(passages, [2, encoder.num_layers])
        final = encoder.compute_similarity(q.final, p.final, q.mask, p.mask)
        layer = encoder.layer_similarity(q.layers[2], p.layers[2], q.mask, p.mask)
    with torch.no_grad():
        exact = encoder.compute_similarity(q.final.float(), p.final.float(), q.mask, p.mask)
    assert final.dtype == layer.dtype == torch.float32, (final.dtype, layer.dtype)
    assert torch.equal(final, exact), "scores under autocast differ from fp32 scoring"
    print(f"  {encoder.kind}: encoder states under autocast {q.layers[2].dtype}, scores "
          f"{final.dtype} (final and layer 2): ok")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no GPU: skipped")
        return 0
    from lead.__main__ import main as lead_main
    from lead.modeling.encoders import load_encoder
    from lead.modeling.init import init_model

    print(f"gpu_check on {torch.cuda.get_device_name()} (bf16 supported: "
          f"{torch.cuda.is_bf16_supported()})")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = {"teacher": root / "teacher", "student": root / "student"}
        init_model({"init": "package:minilm", "pooling": "mean"}, models["teacher"])
        init_model({"init": "package:minilm", "pooling": "mean", "keep_layers": [0, 2, 4]},
                   models["student"])
        models["colbert"] = root / "colbert"
        init_model({"init": "package:minilm", "kind": "colbert"}, models["colbert"])
        print("scores under bf16 autocast:")
        for name in ("teacher", "colbert"):
            check_fp32_scores(models[name], np.random.default_rng(0))
        data = write_data(root, load_encoder(models["student"]).tokenizer)
        single = distill_argv(models, data, root / "single", args.steps)
        if lead_main(single) != 0:
            print("gpu_check: the single-process run failed")
            return 1
        launched = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
             "1", "-m", "--", "lead", *distill_argv(models, data, root / "torchrun", args.steps)],
            cwd=REPO,
        )
        if launched.returncode != 0:
            print(f"gpu_check: the torchrun run failed (exit {launched.returncode})")
            return 1
        print(f"lead distillation, {args.steps} steps of 32 queries x 8 passages, bf16:")
        first = summarise("one process", root / "single" / "log.parquet", 32)
        again = summarise("torchrun, 1 GPU", root / "torchrun" / "log.parquet", 32)
        print(f"  first-step loss difference {abs(first - again):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
