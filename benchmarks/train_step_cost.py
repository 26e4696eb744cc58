"""What a training step of each method costs, side by side, with a frozen teacher read live or
from its layer cache, and with a jointly trained teacher.

Teacher: all-mpnet-base-v2 (12 layers, 768-d, `package:mpnet`) or all-MiniLM-L6-v2
(`--teacher package:minilm`); student: BERT-tiny (2 layers, 128-d, `package:bert-tiny`).
A batch of 8 queries x (1 + 3) passages of real token lengths (32 / 96 tokens, random ids).
Every variant takes real optimizer steps through lead.training.loop.train_step, repetitions
interleaved so that machine noise hits all variants alike; the cached teacher's vectors are
computed once beforehand, as the cache_teacher stage does. The "bf16" variants train under
`optimisation.precision: bf16` (bf16 autocast for the encoders, fp32 scores); where the CPU
has no native bf16 they fall back to fp32, as training does, and the benchmark says so.

    python benchmarks/train_step_cost.py [--repeats 20] [--teacher package:mpnet] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lead.config import resolve
from lead.devices import cpu_has_native_bf16
from lead.distributed import Processes
from lead.modeling.encoders import collate, load_encoder
from lead.modeling.init import init_model
from lead.training.data import EncoderInputs
from lead.training.distillation import DistillationObjective
from lead.training.layers import LayerSelector
from lead.training.loop import train_step
from lead.training.optim import autocast_for, make_trainee

VARIANTS = ("none", "response (live, frozen)", "lead (live, frozen)", "response (cached)",
            "lead (cached)", "lead (joint teacher)", "none (bf16)", "lead (cached, bf16)")


def random_batch(tokenizer, count: int, length: int, generator: torch.Generator) -> dict:
    """`count` full-length rows of [CLS] random tokens [SEP]."""
    body = torch.randint(1000, len(tokenizer) - 1, (count, length - 2), generator=generator)
    rows = [[tokenizer.cls_token_id, *row, tokenizer.sep_token_id] for row in body.tolist()]
    return collate(rows, tokenizer.pad_token_id)


def layer_vectors(teacher, batch: dict) -> torch.Tensor:
    """(N, L, d): what the layer cache holds for these texts."""
    layers = list(range(1, teacher.num_layers + 1))
    with torch.no_grad():
        reps = teacher.encode_passage(batch, layers)
    return torch.stack([reps.layers[i] for i in layers], dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--teacher", default="package:mpnet")
    parser.add_argument("--student", default="package:bert-tiny")
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--negatives", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        init_model({"init": args.teacher}, Path(tmp) / "teacher")
        init_model({"init": args.student, "pooling": "mean", "similarity": "cosine"},
                   Path(tmp) / "student")
        teacher_dir, student_dir = Path(tmp) / "teacher", Path(tmp) / "student"
        teacher, student = load_encoder(teacher_dir), load_encoder(student_dir)
        group = 1 + args.negatives
        generator = torch.Generator().manual_seed(0)
        student_batch = EncoderInputs(
            random_batch(student.tokenizer, args.queries, 32, generator),
            random_batch(student.tokenizer, args.queries * group, 96, generator))
        teacher_batch = EncoderInputs(
            random_batch(teacher.tokenizer, args.queries, 32, generator),
            random_batch(teacher.tokenizer, args.queries * group, 96, generator))
        teacher.eval()
        cached = EncoderInputs(layer_vectors(teacher, teacher_batch.queries),
                               layer_vectors(teacher, teacher_batch.passages))
        settings = resolve("distillation", {"teacher_trainable": False, "layers": {"k": 1}})
        joint = resolve("distillation", {"teacher_trainable": True, "layers": {"k": 1}})
        opt = settings["optimisation"]
        selector = LayerSelector.from_settings(settings["layers"], teacher.num_layers,
                                               student.num_layers, seed=1)
        runs = {}
        for name in VARIANTS:
            method = name.split()[0]
            own_student, own_teacher = load_encoder(student_dir), load_encoder(teacher_dir)
            objective = DistillationObjective(own_student, own_teacher, method,
                                              joint if "joint" in name else settings)
            objective.train()
            trainees = [make_trainee(n, m, opt, opt["learning_rate"])
                        for n, m in objective.trainees().items()]
            batch = {"student": student_batch}
            if method != "none":
                batch["teacher"] = cached if "cached" in name else teacher_batch
            runs[name] = (objective, trainees, batch)

        procs = Processes(0, 1, torch.device("cpu"))
        autocasts = {name: autocast_for(procs.device, "bf16" if "bf16" in name else "fp32")
                     for name in VARIANTS}
        wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for repeat in range(args.warmup + args.repeats):
            for name, (objective, trainees, batch) in runs.items():
                pairs = selector.pairs(repeat * 10) if name.startswith("lead") else []
                started = time.perf_counter()
                train_step(objective, trainees, [batch], pairs, group_size=group,
                           autocast=autocasts[name], procs=procs, accumulation=1)
                if repeat >= args.warmup:
                    wall[name].append(time.perf_counter() - started)

    median = {name: 1000 * statistics.median(times) for name, times in wall.items()}
    print(f"teacher {args.teacher}: {teacher.num_layers} layers x {teacher.hidden_size}; student "
          f"{args.student}: {student.num_layers} layers x {student.hidden_size}; batch "
          f"{args.queries} queries x {group} passages, 32/96 tokens; "
          f"{torch.get_num_threads()} threads; median of {args.repeats} interleaved repeats")
    for name in VARIANTS:
        print(f"  {name:24s} {median[name]:9.1f} ms/step  {median[name] / median['none']:6.2f}x "
              f"none")
    print(f"  bf16 / fp32: none {median['none (bf16)'] / median['none']:.2f}, lead (cached) "
          f"{median['lead (cached, bf16)'] / median['lead (cached)']:.2f}; this CPU has native "
          f"bf16: {cpu_has_native_bf16()} (without it the bf16 variants ran in fp32)")
    print(f"  cached / live frozen teacher (lead): "
          f"{median['lead (cached)'] / median['lead (live, frozen)']:.3f}   target for lead "
          f"(cached) / none: <= 1.3, measured {median['lead (cached)'] / median['none']:.2f}")


if __name__ == "__main__":
    main()
