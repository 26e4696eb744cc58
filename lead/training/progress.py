"""What a run tells its user: the training log (parquet, lead.schemas.training_log) and the
progress lines of the job's log (time per step, examples/s, ETA, dev metric)."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from lead import schemas
from lead.io import provenance, write_table


@dataclass(frozen=True)
class StepResult:
    losses: dict[str, float]  # "loss" and every component, mean over micro-batches and processes
    layer_weights: list[float]
    grad_norms: dict[str, float]  # per trainee, before clipping


def log_row(
    step: int,
    result: StepResult,
    pairs: list[tuple[int, int]],
    lrs: dict[str, float],
    seconds: float,
    examples: int,
    device: torch.device,
) -> dict[str, Any]:
    row: dict[str, Any] = {"step": step, **result.losses}
    row["lr"] = lrs["student"]
    if "teacher" in lrs:
        row["teacher_lr"] = lrs["teacher"]
    row["grad_norm"] = result.grad_norms["student"]
    if "teacher" in result.grad_norms:
        row["teacher_grad_norm"] = result.grad_norms["teacher"]
    row["examples_per_s"] = examples / seconds
    row["seconds_per_step"] = seconds
    row["memory_mb"] = peak_memory_mb(device)
    row["layers"] = [[int(t), int(s)] for t, s in pairs]
    row["layer_weights"] = [float(w) for w in result.layer_weights]
    return row


def log_table(rows: list[dict[str, Any]]) -> pa.Table:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    schema = schemas.training_log(columns)
    return pa.Table.from_pylist([{k: row.get(k) for k in schema.names} for row in rows], schema)


def write_log(rows: list[dict[str, Any]], path: Path, settings: dict[str, Any]) -> None:
    write_table(log_table(rows), path, provenance(f"train:{settings['method']}", settings))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@dataclass
class Clock:
    """Seconds per step and the time left, over the steps this process has run."""

    total: int
    first: int
    started: float = field(default_factory=time.perf_counter)

    def line(self, step: int, loss: float, examples_per_step: int) -> str:
        done = max(step - self.first, 1)
        per_step = (time.perf_counter() - self.started) / done
        left = per_step * (self.total - step)
        return (f"step {step}/{self.total} loss {loss:.4f} | {per_step:.3f} s/step, "
                f"{examples_per_step / per_step:.1f} examples/s | ETA {duration(left)}")


def duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
