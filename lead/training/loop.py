"""The training loop of `train` (contrastive warm-up) and `distill` (none | response | lead).

One loop, top to bottom: processes and devices, models and objective, optimizers and
schedules, data, resume, then steps with accumulation, gradient all-reduce, per-model clipping,
logging, dev evaluation and checkpoints, and finally the best-on-dev model.

Data parallelism (torchrun: RANK / WORLD_SIZE / LOCAL_RANK) uses no DDP wrapper: the encoders
are called through their encode methods, several times per step with shared towers, which
DDP's forward hooks do not follow. Instead the gradients of every trained model are averaged
across processes once per optimizer step (after the last micro-batch), in flat buckets. The
average is right because of how the objective gathers: each process's loss covers its local
queries against the global candidates, and the gather's backward hands every process the
gradient of ALL processes' losses with respect to its own passages; the mean of the processes'
gradients is then the gradient of the mean loss over the global batch, exactly as one process
on the concatenated batch would compute it (tests/test_training.py checks this, clipping
included).
"""

from __future__ import annotations

import logging
import math
import os
import random
import resource
import shutil
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist

from lead.errors import ConfigError, LeadError
from lead.evaluate import parse_measure
from lead.io import atomic_path, config_hash, provenance, write_table
from lead.training import checkpoint as ckpt
from lead.training.data import EncoderInputs, Groups, ModelTokens, TokenTable, TrainingData
from lead.training.validation import Scoring, evaluate_model, load_dev_set

log = logging.getLogger(__name__)

METHODS = ("contrastive", "none", "response", "lead")
_GRADIENT_BUCKET = 1 << 25  # elements per all-reduce: bounds the extra memory to 128 MiB


class NonFiniteLoss(LeadError):
    """Training diverged; the last checkpoint (written before this step) stays as it was."""


@dataclass(frozen=True)
class ModelFiles:
    """A model directory and that model's own tokenization of the training data."""

    model_dir: Path
    query_tokens: Path
    corpus_tokens: Path


@dataclass(frozen=True)
class TrainingJob:
    """Everything one run reads and writes. The trained model is always the `student` here:
    in `train` (method "contrastive") it is the model being warmed up, with no teacher."""

    method: str
    student: ModelFiles
    teacher: ModelFiles | None
    groups: Path
    dev_query_tokens: Path
    dev_qrels: Path
    out: Path
    log: Path
    checkpoint_dir: Path
    optimisation: dict[str, Any]  # resolved `optimisation` section
    distillation: dict[str, Any]  # resolved `distillation` section (defaults for "contrastive")
    model_settings: dict[str, dict[str, Any]]  # role -> resolved model section


@dataclass(frozen=True)
class Processes:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


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


@dataclass(frozen=True)
class StepResult:
    losses: dict[str, float]  # "loss" and every component, mean over micro-batches and processes
    layer_weights: list[float]
    grad_norms: dict[str, float]  # per trainee, before clipping


def train(job: TrainingJob) -> Path:
    """Run (or resume) a training job; returns the saved best-on-dev model directory."""
    if job.method not in METHODS:
        raise ConfigError(f"method {job.method!r}: expected one of {METHODS}")
    owns_group = not dist.is_initialized()
    procs = init_processes()
    try:
        return _train(job, procs)
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(job: TrainingJob, procs: Processes) -> Path:
    from lead.modeling import DistillationObjective, LayerSelector, load_encoder

    opt, distill = job.optimisation, job.distillation
    say = log.info if procs.is_main else lambda *args: None
    seed = opt["seed"]
    autocast = autocast_factory(procs.device, opt["bf16"])
    say("%s on %s, %d process(es)", job.method, procs.device, procs.world_size)

    # Models, before any data is read, so that a model not fitting the config fails at once.
    torch.manual_seed(seed)  # identical on every process, should a model init anything
    student = load_encoder(job.student.model_dir)
    teacher = load_encoder(job.teacher.model_dir) if _uses_teacher(job) else None
    _check_models(job, student, teacher)
    selector = None
    if job.method == "lead":
        selector = LayerSelector.from_settings(
            distill["layers"], teacher.num_layers, student.num_layers, seed=seed
        )
    teacher_trained = teacher is not None and distill["teacher_trainable"]
    objective = DistillationObjective(student, teacher, job.method, distill)
    objective.to(procs.device)
    student.train()
    if teacher is not None:
        teacher.train(teacher_trained)
        teacher.requires_grad_(teacher_trained)
    trainees = [make_trainee("student", student, opt, opt["learning_rate"])]
    if teacher_trained:
        trainees.append(make_trainee("teacher", teacher, opt, opt["teacher_learning_rate"]))

    # Data: every model reads its own tokens of the same groups.
    groups = Groups.read(job.groups, opt["negatives_per_query"])
    tokens = {"student": _model_tokens(job.student, student)}
    if teacher is not None:
        tokens["teacher"] = _model_tokens(job.teacher, teacher)
    data = TrainingData(
        groups, tokens, batch_size=opt["batch_size"],
        negatives_per_query=opt["negatives_per_query"], seed=seed, rank=procs.rank,
        world_size=procs.world_size,
    )
    dev = load_dev_set(
        job.dev_query_tokens, job.dev_qrels, tokens["student"].corpus, opt["dev_pool_size"], seed
    )
    scoring = Scoring(
        procs.device, autocast, opt["batch_size"] * data.group_size, procs.rank, procs.world_size
    )
    measures = dev_measures(opt["select_metric"], opt["eval_depth"])
    for measure in measures:
        parse_measure(measure)  # an unknown select_metric fails now, not at the first evaluation

    # Per-process randomness (dropout), then resume where a killed run left off.
    _seed_everything(seed + procs.rank)
    models = {t.name: t.module for t in trainees}
    optimizers = {t.name: t.optimizer for t in trainees}
    schedulers = {t.name: t.scheduler for t in trainees}
    fingerprint = job_fingerprint(job, procs.world_size)
    progress = ckpt.Progress()
    payload = ckpt.load_checkpoint(job.checkpoint_dir, fingerprint)
    if payload is not None:
        progress = ckpt.restore(
            payload, models=models, optimizers=optimizers, schedulers=schedulers,
            rank=procs.rank,
        )
        say("resuming %s at step %d", job.checkpoint_dir, progress.step)
        if procs.is_main:
            ckpt.prune_best_models(job.checkpoint_dir, keep={progress.best_step})
    del payload
    rows = {row["step"]: row for row in progress.log_rows}

    steps, accumulation = opt["steps"], opt["gradient_accumulation"]
    examples_per_step = opt["batch_size"] * accumulation * procs.world_size
    while progress.step < steps:
        started = time.perf_counter()
        pairs = selector.pairs(progress.step) if selector is not None else []
        micro_batches = (
            data.micro_batch(counter)
            for counter in range(progress.step * accumulation, (progress.step + 1) * accumulation)
        )
        lrs = {t.name: t.scheduler.get_last_lr()[0] for t in trainees}
        result = train_step(
            objective, trainees, micro_batches, pairs, group_size=data.group_size,
            autocast=autocast, procs=procs, accumulation=accumulation,
        )
        step = progress.step = progress.step + 1
        if not math.isfinite(result.losses["loss"]) or not all(
            math.isfinite(v) for v in result.grad_norms.values()
        ):
            raise NonFiniteLoss(_divergence_message(step, result, job.checkpoint_dir))
        if step % opt["log_every"] == 0 or step == steps:
            elapsed = time.perf_counter() - started
            rows[step] = log_row(step, result, pairs, lrs, examples_per_step / elapsed, procs)
            say("step %d/%d loss %.4f", step, steps, result.losses["loss"])
        if step % opt["eval_every"] == 0 or step == steps:
            metrics = evaluate_model(
                student, dev, depth=opt["eval_depth"], measures=measures, scoring=scoring,
                seed=seed,
            )
            student.train()
            rows.setdefault(step, {"step": step}).update(
                {f"dev_{name}": value for name, value in metrics.items()}
            )
            value = metrics[opt["select_metric"]]
            say("step %d dev %s %.4f", step, opt["select_metric"], value)
            if progress.best_value is None or value > progress.best_value:
                progress.best_step, progress.best_value = step, value
                if procs.is_main:
                    ckpt.save_best_model(student, job.checkpoint_dir, step)
        if step % opt["checkpoint_every"] == 0 or step == steps:
            progress.log_rows = [rows[s] for s in sorted(rows)]
            rng_states = _gather_objects(ckpt.rng_state(), procs)
            if procs.is_main:  # the log first: a checkpoint's rows are always on disk
                write_log(progress.log_rows, job.log, job)
                ckpt.save_checkpoint(
                    job.checkpoint_dir, fingerprint=fingerprint, progress=progress,
                    models=models, optimizers=optimizers, schedulers=schedulers,
                    rng_states=rng_states,
                )
            _barrier(procs)

    if procs.is_main:
        write_log(progress.log_rows, job.log, job)
        with atomic_path(job.out) as tmp:
            shutil.copytree(ckpt.best_model_dir(job.checkpoint_dir, progress.best_step), tmp)
        log.info(
            "saved the best model (step %d, dev %s %.4f) to %s",
            progress.best_step, opt["select_metric"], progress.best_value, job.out,
        )
    _barrier(procs)
    return job.out


def train_step(
    objective: torch.nn.Module,
    trainees: list[Trainee],
    micro_batches: Iterable[dict[str, EncoderInputs]],
    layer_pairs: list[tuple[int, int]],
    *,
    group_size: int,
    autocast: Callable[[], AbstractContextManager],
    procs: Processes,
    accumulation: int,
) -> StepResult:
    """One optimizer step: forward/backward per micro-batch, all-reduce, clip, update.

    A non-finite loss or gradient is reported in the result and NO update is made, so the
    caller can stop with the models as they were.
    """
    totals: torch.Tensor | None = None
    names: list[str] = []
    weights: torch.Tensor | None = None
    for batch in micro_batches:
        student = batch["student"].to(procs.device)
        teacher = batch["teacher"].to(procs.device) if "teacher" in batch else None
        with autocast():
            out = objective(
                student.queries, student.passages,
                teacher.queries if teacher is not None else None,
                teacher.passages if teacher is not None else None,
                layer_pairs, group_size,
            )
        (out.loss / accumulation).backward()
        names = ["loss", *out.components]
        values = torch.stack([v.detach().float() for v in (out.loss, *out.components.values())])
        totals = values if totals is None else totals + values
        if out.layer_weights is not None:
            w = out.layer_weights.detach().float()
            weights = w if weights is None else weights + w
    assert totals is not None, "a step needs at least one micro-batch"
    totals = _all_reduce_mean(totals / accumulation, procs)  # every process sees the same
    losses = dict(zip(names, totals.tolist(), strict=True))
    layer_weights = (weights / accumulation).tolist() if weights is not None else []
    grad_norms = {}
    if math.isfinite(losses["loss"]):
        for trainee in trainees:
            if procs.world_size > 1:
                all_reduce_gradients(trainee.params, procs.world_size)
            norm = torch.nn.utils.clip_grad_norm_(trainee.params, trainee.max_grad_norm)
            grad_norms[trainee.name] = float(norm)
        if all(math.isfinite(n) for n in grad_norms.values()):
            for trainee in trainees:
                trainee.optimizer.step()
                trainee.scheduler.step()
    for trainee in trainees:
        trainee.optimizer.zero_grad(set_to_none=True)
    return StepResult(losses, layer_weights, grad_norms)


def all_reduce_gradients(params: list[torch.nn.Parameter], world_size: int) -> None:
    """Average the gradients of `params` over all processes, in flat buckets.

    Parameters that received no gradient (e.g. an unused pooler) are skipped; which ones those
    are depends only on the code path, identical on every process.
    """
    grads = [p.grad for p in params if p.grad is not None]
    bucket: list[torch.Tensor] = []
    size = 0
    for grad in [*grads, None]:
        if grad is not None and (size + grad.numel() <= _GRADIENT_BUCKET or not bucket):
            bucket.append(grad)
            size += grad.numel()
            continue
        if bucket:
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)  # gloo has no AVG
            flat /= world_size
            for g, synced in zip(bucket, flat.split([g.numel() for g in bucket]), strict=True):
                g.copy_(synced.view_as(g))
        bucket, size = ([grad], grad.numel()) if grad is not None else ([], 0)


def make_trainee(name: str, module: torch.nn.Module, opt: dict[str, Any], lr: float) -> Trainee:
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=lr, eps=opt["adam_epsilon"], weight_decay=opt["weight_decay"]
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


def init_processes() -> Processes:
    """One process, or one of torchrun's (NCCL on CUDA, gloo on CPU).

    Under torchrun the process group is set up even for one process, so that a 1-GPU torchrun
    run takes the same collective code paths as a multi-GPU one.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(rank, world_size, device)


def autocast_factory(device: torch.device, bf16: bool) -> Callable[[], AbstractContextManager]:
    """bf16 autocast on CUDA when asked; CPU always runs fp32."""
    if device.type == "cuda" and bf16:
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext


def dev_measures(select_metric: str, depth: int) -> list[str]:
    """The selection metric first, then the usual dev measures (no duplicates)."""
    return list(dict.fromkeys([select_metric, "RR@10", "nDCG@10", f"R@{depth}"]))


def job_fingerprint(job: TrainingJob, world_size: int) -> str:
    """What a checkpoint must share with the run that resumes it: settings, inputs, processes."""
    inputs = {
        "groups": job.groups, "dev_queries": job.dev_query_tokens, "dev_qrels": job.dev_qrels,
        **{f"student_{k}": v for k, v in vars(job.student).items()},
        **({f"teacher_{k}": v for k, v in vars(job.teacher).items()} if job.teacher else {}),
    }
    return config_hash(
        {
            "method": job.method,
            "optimisation": job.optimisation,
            "distillation": job.distillation,
            "models": job.model_settings,
            "world_size": world_size,
            "input_sizes": {name: _size(Path(path)) for name, path in inputs.items()},
        }
    )


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else -1


def log_row(
    step: int,
    result: StepResult,
    pairs: list[tuple[int, int]],
    lrs: dict[str, float],
    examples_per_s: float,
    procs: Processes,
) -> dict[str, Any]:
    row: dict[str, Any] = {"step": step, **result.losses}
    row["lr"] = lrs["student"]
    if "teacher" in lrs:
        row["teacher_lr"] = lrs["teacher"]
    row["grad_norm"] = result.grad_norms["student"]
    if "teacher" in result.grad_norms:
        row["teacher_grad_norm"] = result.grad_norms["teacher"]
    row["examples_per_s"] = examples_per_s
    row["memory_mb"] = _peak_memory_mb(procs.device)
    row["layers"] = [[int(t), int(s)] for t, s in pairs]
    row["layer_weights"] = [float(w) for w in result.layer_weights]
    return row


_FIXED_LAST = ("lr", "teacher_lr", "grad_norm", "teacher_grad_norm", "examples_per_s", "memory_mb")
_LIST_TYPES = {"layers": pa.list_(pa.list_(pa.int32())), "layer_weights": pa.list_(pa.float64())}


def log_table(rows: list[dict[str, Any]]) -> pa.Table:
    """The training log: step, losses, rates, layers; dev metric columns `dev_<measure>`."""
    present = list(dict.fromkeys(key for row in rows for key in row))
    losses = [k for k in present if k not in ("step", *_FIXED_LAST, *_LIST_TYPES)
              and not k.startswith("dev_")]
    dev = [k for k in present if k.startswith("dev_")]
    fixed = [k for k in _FIXED_LAST if k in present]
    columns = ["step", *losses, *fixed, "layers", "layer_weights", *dev]
    fields = [
        pa.field(name, pa.int64() if name == "step" else _LIST_TYPES.get(name, pa.float64()))
        for name in columns
    ]
    schema = pa.schema(fields)
    return pa.Table.from_pylist([{k: row.get(k) for k in columns} for row in rows], schema)


def write_log(rows: list[dict[str, Any]], path: Path, job: TrainingJob) -> None:
    settings = {"method": job.method, "optimisation": job.optimisation,
                "distillation": job.distillation}
    write_table(log_table(rows), path, provenance(f"train:{job.method}", settings))


def _uses_teacher(job: TrainingJob) -> bool:
    if job.method in ("response", "lead"):
        if job.teacher is None:
            raise ConfigError(f"method {job.method!r} needs a teacher")
        return True
    return False


def _check_models(job: TrainingJob, student, teacher) -> None:
    """The model directories must be what the config describes (not a stale init)."""
    from lead.modeling import EncoderSpec

    roles = [("student", student, job.student.model_dir)]
    if teacher is not None:
        roles.append(("teacher", teacher, job.teacher.model_dir))
    for role, model, path in roles:
        if role not in job.model_settings:
            continue
        expected = EncoderSpec.from_settings(job.model_settings[role])
        differ = [
            f"{name} is {getattr(model.spec, name)!r}, the config says {value!r}"
            for name, value in vars(expected).items()
            if getattr(model.spec, name) != value
        ]
        if differ:
            raise ConfigError(f"{path} does not match the {role} config: {'; '.join(differ)}")
    if job.method != "contrastive" and student.kind != "dual":
        raise ConfigError(
            f"{job.student.model_dir}: students must be dual encoders, not {student.kind}"
        )


def _model_tokens(files: ModelFiles, encoder) -> ModelTokens:
    return ModelTokens(
        TokenTable.read(files.query_tokens), TokenTable.read(files.corpus_tokens), encoder.pad_id
    )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _all_reduce_mean(values: torch.Tensor, procs: Processes) -> torch.Tensor:
    if procs.world_size > 1:
        values = values.clone()
        dist.all_reduce(values)  # gloo has no AVG
        values /= procs.world_size
    return values.cpu()


def _gather_objects(value: Any, procs: Processes) -> list[Any]:
    if procs.world_size == 1:
        return [value]
    gathered: list[Any] = [None] * procs.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def _barrier(procs: Processes) -> None:
    if procs.world_size > 1:
        dist.barrier()


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _divergence_message(step: int, result: StepResult, checkpoint_dir: Path) -> str:
    values = ", ".join(f"{k}={v:.4g}" for k, v in {**result.losses, **result.grad_norms}.items())
    return (
        f"non-finite loss or gradient at step {step} ({values}); no update was made and the "
        f"last checkpoint in {checkpoint_dir} is kept: resume from it after lowering the "
        f"learning rate, or check the data"
    )
