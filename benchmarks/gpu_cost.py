"""What the MS MARCO reproduction costs on GPUs, from FLOPs counted on the real model shapes.

No GPU is needed: the models of config/msmarco-passage.yaml are built at their real shapes
(student: DistilBERT, 6 blocks of 768; teacher: a 12-block, 768-wide BERT used as the release's
ColBERT) from their configs with random weights, and one step of each stage runs on the CPU
under torch's FlopCounterMode, which counts the floating-point operations of every matrix
product (forward and backward). The batches have the real shapes: 8 queries x (1 + 7)
passages, each batch padded to its longest row, with rows drawn from the rehearsal's token
files when they exist (`--tokens-root`, default results/rehearsal/tokens: the generated
collection tokenized as MS MARCO's titled corpus is, `title [SEP] text`, BERT's vocabulary),
else of `--passage-tokens` tokens. Per stage:

- a warm-up step (contrastive, one model), a distillation step of each method with the
  release's joint teacher (teacher forward and backward included), a dev evaluation (the
  model's own pool, `dev_pool_size` passages and 500 queries, MaxSim for ColBERT), and the
  encoding of one passage and one query by the student;
- then the whole reproduction: 20k warm-up steps of each model, 50k steps of each of the three
  distillations, the dev evaluations, five corpus encodings of 8,841,823 passages (the miner's
  and four scored models'), the training queries' encoding for mining; the faiss search
  (exhaustive, 768-d) is counted separately (CPU or GPU, as the user's faiss).

GPU hours divide the FLOPs by a sustained throughput per GPU (`--tflops`, default 100 TFLOP/s:
about a third of an H100's dense bf16 peak, or what tf32 sustains on an A100; the release
trained in fp32 on 8 GPUs). The FLOPs are measured; the throughput is an assumption, which
`benchmarks/gpu_check.py` measures on a real GPU.

    .venv/bin/python benchmarks/gpu_cost.py [--tflops 100] [--tokens-root results/rehearsal/tokens]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.flop_counter import FlopCounterMode

from lead.config import resolve
from lead.distributed import Processes
from lead.modeling.encoders import collate, load_encoder
from lead.modeling.init import init_model
from lead.training.data import EncoderInputs
from lead.training.distillation import DistillationObjective
from lead.training.layers import LayerSelector
from lead.training.loop import train_step
from lead.training.objective import Objective
from lead.training.optim import autocast_for, make_trainee

PASSAGES, TRAIN_QUERIES = 8_841_823, 502_939
BATCH, GROUP = 8, 8  # queries per GPU-step, 1 positive + 7 negatives (the config's)
GPUS = 8
STEPS = {"warmup": 20_000, "distill": 50_000}
EVALS = {"warmup": 10, "distill": 10}  # eval_every 2000 / 5000: plus the initial model's
DEV_QUERIES = 500


def models(root: Path) -> tuple[Path, Path]:
    """The release's shapes from configs: a DistilBERT student and a 12-layer BERT ColBERT."""
    student = init_model({
        "init": "random", "kind": "dual", "pooling": "cls", "similarity": "dot",
        "architecture": {"model_type": "distilbert", "num_hidden_layers": 6, "hidden_size": 768,
                         "num_attention_heads": 12, "intermediate_size": 3072},
        "tokenizer": {"from": "package:bert-tiny"}}, root / "student")
    teacher = init_model({
        "init": "random", "kind": "colbert",
        "architecture": {"model_type": "bert", "num_hidden_layers": 12, "hidden_size": 768,
                         "num_attention_heads": 12, "intermediate_size": 3072},
        "tokenizer": {"from": "package:bert-tiny"}}, root / "teacher")
    return student, teacher


def lengths(tokens_root: Path, role: str, kind: str, fallback: int, rng) -> np.ndarray:
    path = (tokens_root / role / "corpus.parquet" if kind == "passage"
            else tokens_root / role / "queries" / "train.parquet")
    if not path.is_file():
        return np.full(4096, fallback)
    column = pq.ParquetFile(path).read_row_group(0, columns=["input_ids"]).column("input_ids")
    return column.combine_chunks().value_lengths().to_numpy()


def batch(tokenizer, rows: int, length_pool: np.ndarray, rng, generator) -> dict:
    """`rows` rows of lengths drawn from the pool, random ids, padded to the longest."""
    drawn = rng.choice(length_pool, size=rows)
    body = [torch.randint(1000, 30000, (int(n) - 2,), generator=generator).tolist() for n in drawn]
    return collate([[tokenizer.cls_token_id, *b, tokenizer.sep_token_id] for b in body],
                   tokenizer.pad_token_id)


def counted(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def step_flops(objective_type, method, student, teacher, batches, settings) -> float:
    opt = resolve("distillation", {"teacher_trainable": True})["optimisation"]
    job_settings = resolve("distillation", {"teacher_trainable": True, **settings})
    if objective_type is Objective:
        objective = Objective(student)
    else:
        selector = LayerSelector.from_settings(job_settings["layers"], teacher.num_layers,
                                               student.num_layers, seed=888)
        objective = DistillationObjective(student, teacher, method, job_settings,
                                          selector=selector if method == "lead" else None)
    objective.train()
    trainees = [make_trainee(name, module, {**opt, "steps": 10}, 1e-5)
                for name, module in objective.trainees().items()]
    pairs = objective.layer_pairs(0)
    procs = Processes(rank=0, world_size=1, device=torch.device("cpu"))
    micro = [{"student": EncoderInputs(batches["sq"], batches["sp"]),
              **({"teacher": EncoderInputs(batches["tq"], batches["tp"])}
                 if objective_type is not Objective else {})}]
    return counted(lambda: train_step(objective, trainees, iter(micro), pairs, group_size=GROUP,
                                      autocast=autocast_for(procs.device, "fp32"), procs=procs,
                                      accumulation=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tflops", type=float, default=100.0,
                        help="sustained TFLOP/s per GPU assumed for the hours")
    parser.add_argument("--tokens-root", type=Path, default=Path("results/rehearsal/tokens"))
    parser.add_argument("--passage-tokens", type=int, default=90)
    parser.add_argument("--dev-pool", type=int, default=50_000)
    args = parser.parse_args()
    torch.manual_seed(0)
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        student_dir, teacher_dir = models(Path(work))
        student, teacher = load_encoder(student_dir), load_encoder(teacher_dir)
    pools = {(role, kind): lengths(args.tokens_root, role, kind,
                                   args.passage_tokens if kind == "passage" else 12, rng)
             for role in ("student", "teacher") for kind in ("passage", "query")}
    batches = {
        "sq": batch(student.tokenizer, BATCH, pools["student", "query"], rng, generator),
        "sp": batch(student.tokenizer, BATCH * GROUP, pools["student", "passage"], rng,
                    generator),
        "tq": batch(teacher.tokenizer, BATCH, pools["teacher", "query"], rng, generator),
        "tp": batch(teacher.tokenizer, BATCH * GROUP, pools["teacher", "passage"], rng,
                    generator),
    }
    print(f"passage tokens: mean {pools['student', 'passage'].mean():.1f} (student), "
          f"{pools['teacher', 'passage'].mean():.1f} (teacher); this batch padded to "
          f"{batches['sp']['input_ids'].shape[1]} / {batches['tp']['input_ids'].shape[1]}")
    flops = {
        "student warm-up step": step_flops(Objective, None, student, None, batches, {}),
        "teacher warm-up step": step_flops(Objective, None, teacher, None,
                                           {**batches, "sq": batches["tq"],
                                            "sp": batches["tp"]}, {}),
    }
    for method in ("none", "response", "lead"):
        flops[f"distill step ({method}, joint teacher)"] = step_flops(
            DistillationObjective, method, student, teacher, batches,
            {"layers": {"strategy": "random", "k": 5, "resample_every": 10}})
    student.eval()
    teacher.eval()
    mean_passage = float(pools["student", "passage"].mean())
    one = batch(student.tokenizer, 64, np.array([round(mean_passage)]), rng, generator)
    with torch.no_grad():
        per_passage = counted(lambda: student.encode_passage(one)) / 64
        teacher_passage = counted(lambda: teacher.encode_passage(
            batch(teacher.tokenizer, 64, np.array([round(mean_passage)]), rng, generator))) / 64
        query = batch(student.tokenizer, 64, pools["student", "query"], rng, generator)
        per_query = counted(lambda: student.encode_query(query)) / 64
        tq = teacher.encode_query(batch(teacher.tokenizer, 4, pools["teacher", "query"], rng,
                                        generator))
        tp = teacher.encode_passage(batch(teacher.tokenizer, 64, np.array([round(mean_passage)]),
                                          rng, generator))
        maxsim = counted(lambda: teacher.compute_similarity(tq.final, tp.final, tq.mask,
                                                            tp.mask)) / (4 * 64)
    dev_student = args.dev_pool * per_passage + DEV_QUERIES * per_query \
        + DEV_QUERIES * args.dev_pool * 2 * 768
    dev_teacher = args.dev_pool * teacher_passage + DEV_QUERIES * args.dev_pool * maxsim
    total = {
        "teacher warm-up": STEPS["warmup"] * flops["teacher warm-up step"] * GPUS
        + (EVALS["warmup"] + 1) * dev_teacher,
        "student warm-up": STEPS["warmup"] * flops["student warm-up step"] * GPUS
        + (EVALS["warmup"] + 1) * dev_student,
        **{f"distillation ({m})": STEPS["distill"] * flops[f"distill step ({m}, joint teacher)"]
           * GPUS + (EVALS["distill"] + 1) * (dev_student + (dev_teacher if m != "none" else 0))
           for m in ("none", "response", "lead")},
        "corpus encodings (5 models)": 5 * PASSAGES * per_passage,
        "query encodings (mining, 5 x eval)": TRAIN_QUERIES * per_query + 5 * 7_380 * per_query,
    }
    print(f"\nFLOPs per GPU-step ({BATCH} queries x {GROUP} passages), fp32 counted on CPU:")
    for name, value in flops.items():
        print(f"  {name:<40} {value / 1e12:8.2f} TFLOP")
    print(f"  encode one passage (student)             {per_passage / 1e9:8.2f} GFLOP")
    print(f"  encode one query (student)               {per_query / 1e9:8.2f} GFLOP")
    print(f"  one dev evaluation, teacher / student    {dev_teacher / 1e15:8.2f} / "
          f"{dev_student / 1e15:.2f} PFLOP ({args.dev_pool} passages, {DEV_QUERIES} queries)")
    print(f"\nThe reproduction ({GPUS} GPUs for training, {args.tflops:g} TFLOP/s sustained each):")
    hours = 0.0
    for name, value in total.items():
        gpu_hours = value / (args.tflops * 1e12) / 3600
        hours += gpu_hours
        print(f"  {name:<40} {value / 1e15:10.0f} PFLOP  {gpu_hours:7.1f} GPU-hours")
    print(f"  {'all':<40} {sum(total.values()) / 1e15:10.0f} PFLOP  {hours:7.1f} GPU-hours")
    print("  (faiss search, exhaustive 768-d: 8.8M x (502,939 + 5 x 7,380) x 2 x 768 = "
          f"{PASSAGES * (TRAIN_QUERIES + 5 * 7380) * 2 * 768 / 1e15:.0f} PFLOP, not included)")


if __name__ == "__main__":
    main()
