"""Data parallelism (lead.distributed): two gloo processes against one on the whole batch.

This is what makes multi-GPU LEAD the same method as single-GPU LEAD: the global candidate
set (in-batch negatives from every process), gold labels offset by rank, padded token states
gathered WITH their masks, and gradients that reach every passage from every process's loss.
With gradient_scale "exact" the averaged gradients equal the single process's; with "release"
(the release's DDP setup) they are 1/G of them, G = 2 here.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tiny_models import TEXTS

from lead.distributed import all_gather_with_grad, gather_sizes, global_mean
from lead.modeling.encoders import collate, load_encoder
from lead.training.distillation import DistillationObjective

GROUP = 3
PAIRS = [(1, 1), (3, 2)]
SETTINGS = {"teacher_trainable": True, "detach_teacher_targets": False}
# case name -> (teacher model, queries held by rank 0 out of 4)
CASES = {"dual": ("dual", 2), "colbert": ("colbert", 2), "dual-uneven": ("dual", 3),
         "cross": ("cross", 2)}
QUERIES = [
    "what does a student learn",
    "how do rivers reach the sea",
    "which vector per token",
    "who reads query and passage",
]


def _token_ids(model_dir: Path) -> tuple[list[list[int]], list[list[int]]]:
    tokenizer = load_encoder(model_dir).tokenizer
    passages = [TEXTS[(3 * i + j) % len(TEXTS)] + " " * j for i in range(4) for j in range(GROUP)]
    passages = [f"{text} {'extra words here ' * (i % 3)}" for i, text in enumerate(passages)]
    return tokenizer(QUERIES)["input_ids"], tokenizer(passages)["input_ids"]


def _run(models: dict[str, Path], teacher: str, rows: slice, scale: str = "exact"
         ) -> tuple[float, dict]:
    """Loss and gradients of this process's rows (all rows outside torch.distributed)."""
    student_model = load_encoder(models["student"])
    teacher_model = load_encoder(models[teacher])
    objective = DistillationObjective(student_model, teacher_model, "lead", SETTINGS,
                                      gradient_scale=scale).eval()
    objective.double()  # float64: summation order (threads, gathers) cannot blur a real bug
    passages = slice(rows.start * GROUP, rows.stop * GROUP)
    batches = []
    for model, model_dir in ((student_model, models["student"]), (teacher_model, models[teacher])):
        queries, texts = _token_ids(model_dir)
        batches += [collate(queries[rows], model.pad_id), collate(texts[passages], model.pad_id)]
    output = objective(*batches, layer_pairs=PAIRS, group_size=GROUP)
    output.loss.backward()
    grads = {
        name: parameter.grad
        for name, parameter in objective.named_parameters()
        if parameter.grad is not None
    }
    loss = output.loss.detach()
    if dist.is_initialized():  # what DistributedDataParallel does with losses and gradients
        for tensor in [loss, *grads.values()]:
            dist.all_reduce(tensor)
            tensor /= dist.get_world_size()
    return loss.item(), grads


def _worker(rank: int, port: int, models: dict[str, Path], out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        for case, (teacher, first) in CASES.items():
            rows = slice(0, first) if rank == 0 else slice(first, len(QUERIES))
            for scale in ("exact", "release"):
                torch.save(_run(models, teacher, rows, scale), out / f"{case}-{scale}-{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_whole_batch_up_to_the_gradient_scale(
    models, tmp_path
):
    mp.spawn(_worker, args=(_free_port(), models, tmp_path), nprocs=2, join=True)
    for case, (teacher, _) in CASES.items():
        single_loss, single_grads = _run(models, teacher, slice(0, len(QUERIES)))
        for scale, factor in (("exact", 1.0), ("release", 0.5)):
            for rank in (0, 1):
                loss, grads = torch.load(tmp_path / f"{case}-{scale}-{rank}.pt")
                assert loss == pytest.approx(factor * single_loss, abs=1e-5), (case, scale)
                assert grads.keys() == single_grads.keys(), case
                assert any(name.startswith("teacher.") for name in grads), case
                for name, grad in grads.items():
                    torch.testing.assert_close(grad, factor * single_grads[name], atol=1e-5,
                                               rtol=1e-4, msg=f"{case} {scale}: {name}")


def _collectives_worker(rank: int, port: int, out: Path) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        # rank 0 holds 1 row of 2 tokens, rank 1 holds 2 rows of 3 tokens
        local = torch.full((rank + 1, rank + 2), float(rank + 1), requires_grad=True)
        gathered = all_gather_with_grad(local)
        weights = torch.arange(gathered.numel(), dtype=torch.float32).view_as(gathered)
        (gathered * weights * (rank + 1)).sum().backward()
        result = {
            "gathered": gathered.detach(),
            "grad": local.grad,
            "sizes": gather_sizes(rank + 1),
            "mean": global_mean(torch.tensor([float(rank)]), count=rank + 1),
        }
        torch.save(result, out / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gather_pads_and_sends_every_process_gradient_home(tmp_path):
    mp.spawn(_collectives_worker, args=(_free_port(), tmp_path), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"{rank}.pt") for rank in (0, 1)]
    expected = torch.tensor([[1.0, 1.0, 0.0], [2.0, 2.0, 2.0], [2.0, 2.0, 2.0]])
    # d/d(gathered) of rank r's loss is (r + 1) * weights; summed over ranks: 3 * weights
    weights = torch.arange(9, dtype=torch.float32).view(3, 3)
    for rank, result in enumerate(results):
        torch.testing.assert_close(result["gathered"], expected)
        assert result["sizes"] == [1, 2]
        # mean of rank values 0 (1 item) and 1 (2 items) over 3 items
        torch.testing.assert_close(result["mean"], torch.tensor([2.0 / 3.0]))
        own = (slice(0, 1), slice(0, 2)) if rank == 0 else (slice(1, 3), slice(0, 3))
        torch.testing.assert_close(result["grad"], 3 * weights[own])
