"""Each trained model's AdamW, linear schedule and clipping threshold, and the precision the
encoders run in."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from lead.devices import cpu_has_native_bf16

log = logging.getLogger(__name__)


@dataclass
class Trainee:
    """One trained model with its own AdamW, linear schedule and clipping threshold."""

    name: str
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    max_grad_norm: float

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]


def make_trainee(name: str, module: torch.nn.Module, opt: dict[str, Any], lr: float) -> Trainee:
    """AdamW runs fused (one kernel over all parameters): the same update as the per-tensor
    loop up to float rounding, and ~10% of a small student's CPU step saved
    (`benchmarks/train_step_cost.py`)."""
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=lr, eps=opt["adam_epsilon"], weight_decay=opt["weight_decay"], fused=True
    )
    warmup = math.ceil(opt["warmup_ratio"] * opt["steps"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: linear_schedule(step, warmup, opt["steps"])
    )
    return Trainee(name, module, optimizer, scheduler, opt["max_grad_norm"])


def linear_schedule(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then linear decay to 0."""
    if step < warmup:
        return step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def autocast_for(device: torch.device, precision: str) -> Callable[[], AbstractContextManager]:
    """The encoders' autocast for `optimisation.precision` (scores stay fp32 regardless).

    bf16 on a CPU without native bf16 would be slower than fp32, so it falls back to fp32."""
    if precision != "bf16":
        return nullcontext
    if device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("precision bf16: this CPU has no native bf16 (AVX512-BF16/AMX); "
                    "training in fp32")
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
