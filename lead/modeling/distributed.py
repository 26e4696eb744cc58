"""Data-parallel helpers: process rank/count and an all-gather that keeps gradients exact.

Each process scores its LOCAL queries against the GLOBAL candidate set. For the gradients to
equal those of one process on the concatenated batch, a passage's representation must receive
the gradient of every process's loss, not only its own process's: the gather's backward
therefore sums the incoming gradients over processes (all-reduce) and hands each process the
slice of its own tensor. Averaging the parameter gradients over processes afterwards (as
DistributedDataParallel does) then gives exactly the single-process gradient.

Outside torch.distributed every function is the identity (world size 1).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


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
