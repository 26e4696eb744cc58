"""What a run tells its user: the training log (parquet, lead.schemas.training_log), the
progress lines of the job's log (time per step, examples/s, ETA, dev metric) and, where the
`tensorboard` package is installed, TensorBoard event files beside the log.

A logged row's loss columns (`loss` and each term) are their means over every optimizer step
of its logging window: the steps since the previous logged row, the row's own included (as
Hugging Face's Trainer logs its loss). With `log_every: 10` the row of step 20 holds the mean
of steps 11 to 20; the last row's window may be shorter. Every other column is the row's own
step's: `lr` and `teacher_lr` (the rates that step used), `grad_norm` and
`teacher_grad_norm`, `examples_per_s` and `seconds_per_step` (that step's time), `memory_mb`
(the peak so far), `layers` and `layer_weights`, and the dev columns of an evaluation at that
step. The window's running sums are part of a checkpoint (`LossWindow.state`), so a run
resumed from a checkpoint taken mid-window writes the same rows as an uninterrupted one.

TensorBoard (`Board`): the main process writes every row's numbers as scalars at the row's step
under `{log stem}.tensorboard/` beside the log (`tensorboard_dir`): `loss/<column>` (the
window means), `optim/lr`, `optim/teacher_lr`, `optim/grad_norm`, `optim/teacher_grad_norm`,
`run/examples_per_s`, `run/seconds_per_step`, `run/memory_mb`, `dev/<measure>` and
`teacher_dev/<measure>` (`scalars`). At every start the folder is written anew from the rows
the run starts from (a resumed run: its checkpoint's), so the events always match the log: a
killed run's events past its checkpoint, or a half-written last record, do not survive the
next start. It is not an artifact of the workflow (no rule declares it).
"""

from __future__ import annotations

import importlib.util
import logging
import numbers
import resource
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from lead import schemas
from lead.errors import DataError
from lead.io import claim_output, mark_output, provenance, write_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepResult:
    losses: dict[str, float]  # "loss" and every component, mean over micro-batches and processes
    layer_weights: list[float]
    grad_norms: dict[str, float]  # per trainee, before clipping


@dataclass
class LossWindow:
    """The running sums of the loss columns over the optimizer steps since the last logged
    row; `take` gives their means and starts the next window."""

    sums: dict[str, float] = field(default_factory=dict)
    steps: int = 0

    def add(self, losses: dict[str, float]) -> None:
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self.steps += 1

    def take(self) -> dict[str, float]:
        means = {name: total / self.steps for name, total in self.sums.items()}
        self.sums, self.steps = {}, 0
        return means

    def state(self) -> dict[str, Any]:
        """Plain values for a checkpoint (loadable with torch.load's weights_only)."""
        return {"sums": dict(self.sums), "steps": self.steps}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> LossWindow:
        """The window a checkpoint carried (an empty one for a checkpoint without it)."""
        if not state:
            return cls()
        return cls({name: float(v) for name, v in state["sums"].items()}, int(state["steps"]))


def log_row(
    step: int,
    result: StepResult,
    losses: dict[str, float],
    pairs: list[tuple[int, int]],
    lrs: dict[str, float],
    seconds: float,
    examples: int,
    device: torch.device,
) -> dict[str, Any]:
    """The row of a logged step: `losses` are the logging window's means (`LossWindow.take`);
    the other columns are this step's own."""
    row: dict[str, Any] = {"step": step, **losses}
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


_SCALAR_GROUPS = {"lr": "optim", "teacher_lr": "optim", "grad_norm": "optim",
                  "teacher_grad_norm": "optim", "examples_per_s": "run",
                  "seconds_per_step": "run", "memory_mb": "run"}


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """A log row's TensorBoard scalars, tag -> value: every number the row holds but its step
    (`layers` and `layer_weights` are lists, and their pairs change from step to step)."""
    tags = {}
    for column, value in row.items():
        if column == "step" or not isinstance(value, numbers.Real):  # None, lists
            continue
        if column.startswith("teacher_dev_"):
            tag = f"teacher_dev/{column.removeprefix('teacher_dev_')}"
        elif column.startswith("dev_"):
            tag = f"dev/{column.removeprefix('dev_')}"
        elif column in schemas.TRAINING_LOG_FIXED:
            tag = f"{_SCALAR_GROUPS[column]}/{column}"
        else:
            tag = f"loss/{column}"
        tags[tag] = float(value)
    return tags


def tensorboard_dir(log_path: Path) -> Path:
    """Where a training log's TensorBoard events go: `training/x.parquet` ->
    `training/x.tensorboard/`."""
    log_path = Path(log_path)
    return log_path.with_name(f"{log_path.stem}.tensorboard")


class Board:
    """TensorBoard event files of one run, written by the main process (`open`); a Board
    without a writer (other processes, no `tensorboard` package, a folder in the way) does
    nothing."""

    def __init__(self, writer: Any = None):
        self.writer = writer

    @classmethod
    def open(cls, log_path: Path, command: str, rows: Iterable[dict[str, Any]]) -> Board:
        """The run's folder written anew with `rows`, the rows the run starts from, and
        open for the rows to come."""
        if importlib.util.find_spec("tensorboard") is None:
            log.info("no TensorBoard events: the tensorboard package is not installed "
                     "(pip install -e .[tensorboard])")
            return cls()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # installed, but broken (a dependency at the wrong version)
            log.warning("no TensorBoard events: torch.utils.tensorboard fails to import (%s)",
                        err)
            return cls()
        folder = tensorboard_dir(log_path)
        try:  # only a folder this command made (or an empty one) is replaced
            claim_output(folder, command, folder=True)
        except DataError as err:
            log.warning("no TensorBoard events: %s", err)
            return cls()
        if folder.is_dir():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        mark_output(folder, command, whole=False)  # the next run of this command may replace it
        board = cls(SummaryWriter(str(folder)))
        for row in rows:
            board.write(row, flush=False)
        board.flush()
        log.info("TensorBoard events in %s", folder)
        return board

    def write(self, row: dict[str, Any], *, flush: bool = True) -> None:
        """A log row's scalars at its step; flushed, so that a TensorBoard watching the
        folder shows it at once."""
        if self.writer is None:
            return
        for tag, value in scalars(row).items():
            self.writer.add_scalar(tag, value, global_step=row["step"])
        if flush:
            self.flush()

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


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
        """The progress line of a logged step; `loss` is its logging window's mean."""
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
