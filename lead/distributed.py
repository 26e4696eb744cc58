"""Data parallelism: processes and devices, the gather that keeps gradients exact, and the
collectives the training loop needs. Every function is the identity outside torch.distributed.

Each process scores its LOCAL queries against the GLOBAL candidate set. For the gradients to
equal those of one process on the concatenated batch, a passage's representation must receive
the gradient of every process's loss, not only its own process's: the gather's backward
therefore sums the incoming gradients over processes (all-reduce) and hands each process the
slice of its own tensor. Averaging the parameter gradients over processes afterwards then gives
exactly the single-process gradient ("exact" gradient scale); the release's DDP setup gives
1/G of it ("release"), which the objective reproduces by scaling its loss (docs/method.md).

Processes are torchrun's (RANK / WORLD_SIZE / LOCAL_RANK), NCCL on CUDA and gloo on CPU. No
DistributedDataParallel wrapper: the encoders are called several times per step through their
encode methods, which DDP's forward hooks do not follow; `average_gradients` replaces it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

# Elements per gradient all-reduce: bounds the extra memory to 128 MiB of fp32.
GRADIENT_BUCKET = 1 << 25


@dataclass(frozen=True)
class Processes:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_processes() -> Processes:
    """One process, or one of torchrun's (NCCL on CUDA, gloo on CPU).

    Under torchrun the process group is set up even for one process, so that a 1-GPU torchrun
    run takes the same collective code paths as a multi-GPU one.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    own = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(own, world, device)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def gather_sizes(size: int, device: torch.device | str = "cpu") -> list[int]:
    """Every process's value of `size` (e.g. its number of queries), in rank order."""
    if not is_distributed():
        return [size]
    return _gather_shapes(torch.tensor([size], device=device))[:, 0].tolist()


def global_mean(values: Tensor, count: int) -> Tensor:
    """Mean over every process's `count` items of per-process means `values` (no gradient)."""
    values = values.detach()
    if not is_distributed():
        return values
    packed = torch.cat([values.reshape(-1) * count, values.new_tensor([count])])
    dist.all_reduce(packed)
    return (packed[:-1] / packed[-1]).reshape(values.shape)


def all_reduce_mean(values: Tensor) -> Tensor:
    """The mean of `values` over processes (a copy; gloo has no AVG)."""
    if not is_distributed():
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average the gradients of `params` over processes, in flat buckets of bounded size.

    Parameters without a gradient (e.g. an unused pooler) are skipped; which ones those are
    depends only on the code path, identical on every process.
    """
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    for bucket in _buckets(grads, GRADIENT_BUCKET):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        for grad, synced in zip(bucket, flat.split([g.numel() for g in bucket]), strict=True):
            grad.copy_(synced.view_as(grad))


def _buckets(tensors: list[Tensor], capacity: int) -> list[list[Tensor]]:
    """Consecutive groups of at most `capacity` elements (a larger tensor is a group alone)."""
    groups: list[list[Tensor]] = []
    size = capacity
    for tensor in tensors:
        if size + tensor.numel() > capacity:
            groups.append([])
            size = 0
        groups[-1].append(tensor)
        size += tensor.numel()
    return groups


def gather_objects(value: Any) -> list[Any]:
    """Every process's `value` (picklable), in rank order."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate every process's `tensor` along dim 0, in rank order.

    Processes may differ in every dimension: dims after the first are zero-padded to the
    largest size (token states of different lengths; pad masks with 0 the same way). The
    gradient of the result flows back to each process's own tensor, summed over processes.
    """
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


def _gather_shapes(shape: Tensor) -> Tensor:
    shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    return torch.stack(shapes)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        shapes = _gather_shapes(torch.tensor(tensor.shape, device=tensor.device))
        largest = shapes.max(dim=0).values.tolist()
        padded = tensor.new_zeros(largest)
        padded[tuple(slice(0, n) for n in tensor.shape)] = tensor
        parts = [torch.empty_like(padded) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, padded.contiguous())
        lengths = shapes[:, 0].tolist()
        own = dist.get_rank()
        ctx.start = sum(lengths[:own])
        ctx.local_shape = tuple(tensor.shape)
        return torch.cat([part[:n] for part, n in zip(parts, lengths, strict=True)])

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        rows = slice(ctx.start, ctx.start + ctx.local_shape[0])
        rest = tuple(slice(0, n) for n in ctx.local_shape[1:])
        return grad[(rows, *rest)]
