"""The training loop of `warmup` (contrastive training of one model) and `distill` (none |
response | lead): one page, top to bottom.

Processes and devices, models and objective, optimizers and schedules, data, resume, the
initial model's dev evaluation (step 0: the init is a candidate, so training that only hurts
keeps it), then steps with accumulation, gradient averaging, per-model clipping, logging, dev
evaluation and checkpoints, and finally the best-on-dev model with its model card. What is
logged, and how (a row's losses are its logging window's means; TensorBoard beside the log),
is lead.training.progress's.

Data parallelism (torchrun) uses no DDP wrapper; lead.distributed explains why the averaged
gradients equal one process's on the concatenated batch ("exact") or 1/G of it ("release").
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from lead import distributed
from lead.distributed import Processes, init_processes
from lead.errors import LeadError
from lead.evaluation.measures import measure_name
from lead.io import OUTPUT_MARKER, atomic_path, config_hash, made_by, mark_output
from lead.modeling.export import write_model_card
from lead.training import checkpoint as ckpt
from lead.training.data import EncoderInputs, Groups, ModelTokens, TrainingData
from lead.training.job import TrainingJob, check_models, job_fingerprint
from lead.training.objective import Objective
from lead.training.optim import Trainee, autocast_for, make_trainee
from lead.training.progress import Board, Clock, LossWindow, StepResult, log_row, write_log
from lead.training.validation import DevBatches, Scoring, dev_metrics, load_dev_set

log = logging.getLogger(__name__)


class NonFiniteLoss(LeadError):
    """Training diverged; the last checkpoint (written before this step) stays as it was."""


def train(job: TrainingJob, objective_type: type[Objective] = Objective) -> Path:
    """Run (or resume) a training job with the objective `objective_type` builds (the
    contrastive one by default, lead.training.distillation's for `distill`); returns the saved
    best-on-dev model directory."""
    owns_group = not dist.is_initialized()
    procs = init_processes()
    try:
        with _scratch(job, procs) as scratch, contextlib.ExitStack() as closing:
            return _train(job, objective_type, procs, scratch, closing)
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def _scratch(job: TrainingJob, procs: Processes) -> Iterator[Path]:
    """This process's scratch folder for memory-mapped rows, gone when the run ends (as is a
    checkpoint folder the run made and left empty)."""
    made = made_by(job.checkpoint_dir) != job.command  # new, or empty (claim_output said so)
    scratch = job.scratch / f"rank-{procs.rank}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    if made and procs.is_main:  # the next run of this command may resume from it
        mark_output(job.checkpoint_dir, job.command, whole=False)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        with contextlib.suppress(OSError):  # other ranks' folders may still be there
            job.scratch.rmdir()
            if made and {p.name for p in job.checkpoint_dir.iterdir()} <= {OUTPUT_MARKER}:
                shutil.rmtree(job.checkpoint_dir)


def _train(job: TrainingJob, objective_type: type[Objective], procs: Processes,
           scratch: Path, closing: contextlib.ExitStack) -> Path:
    from lead.modeling.encoders import load_encoder
    from lead.training.data import TeacherCache

    opt = job.optimisation
    say = log.info if procs.is_main else lambda *args: None
    seed, steps, accumulation = opt["seed"], opt["steps"], opt["gradient_accumulation"]
    autocast = autocast_for(procs.device, opt["precision"])
    say("%s on %s, %d process(es), %d steps", job.method, procs.device, procs.world_size, steps)

    # Models, before any data is read, so that a model not fitting the config fails at once.
    torch.manual_seed(seed)  # identical on every process, should a model init anything
    student = load_encoder(job.student.model_dir)
    teacher = load_encoder(job.teacher.model_dir) if objective_type.needs_teacher(job) else None
    check_models(job, student, teacher)
    objective = objective_type.build(job, student, teacher).to(procs.device)
    objective.train()
    trained = objective.trainees()
    teacher_trained = "teacher" in trained
    rates = {"student": opt["learning_rate"],
             "teacher": opt["teacher_learning_rate"] or opt["learning_rate"]}
    trainees = [make_trainee(name, module, opt, rates[name]) for name, module in trained.items()]

    # Data: every model reads its own tokens (or its layer cache) of the same groups.
    groups = Groups.read(job.groups, opt["negatives_per_query"], opt["train_queries"])
    sources = {"student": ModelTokens.read(job.student.query_tokens, job.student.corpus_tokens,
                                           groups, student.pad_id, scratch)}
    if teacher is not None and job.teacher_cache is not None:
        sources["teacher"] = TeacherCache.read(job.teacher_cache.queries,
                                               job.teacher_cache.passages, groups, scratch)
        say("teacher scores come from its layer cache (%d passages)",
            len(sources["teacher"].passages.ids))
    elif teacher is not None:
        sources["teacher"] = ModelTokens.read(job.teacher.query_tokens,
                                              job.teacher.corpus_tokens, groups, teacher.pad_id,
                                              scratch)
    data = TrainingData(
        groups, sources, batch_size=opt["batch_size"],
        negatives_per_query=opt["negatives_per_query"], seed=seed, rank=procs.rank,
        world_size=procs.world_size,
    )
    scoring = Scoring(procs.device, autocast, opt["batch_size"] * data.group_size, procs.rank,
                      procs.world_size)
    dev = load_dev_set(job.dev_query_tokens, job.dev_qrels, job.student.corpus_tokens,
                       opt["dev_pool_size"], seed, scratch)
    evaluations = {"dev": (student, dev, DevBatches(dev, student.pad_id, scoring))}
    if teacher_trained and job.teacher.dev_query_tokens is not None:
        teacher_dev = load_dev_set(job.teacher.dev_query_tokens, job.dev_qrels,
                                   job.teacher.corpus_tokens, opt["dev_pool_size"], seed, scratch)
        evaluations["teacher_dev"] = (teacher, teacher_dev,
                                      DevBatches(teacher_dev, teacher.pad_id, scoring))
    measures = dev_measures(opt["select_metric"], opt["eval_depth"])

    def evaluate(step: int, progress: ckpt.Progress) -> dict[str, float]:
        """Dev metrics of every evaluated model; the student's pick the best checkpoint."""
        row = {}
        for prefix, (model, dataset, batches) in evaluations.items():
            metrics = dev_metrics(model, dataset, depth=opt["eval_depth"], measures=measures,
                                     scoring=scoring, seed=seed, batches=batches)
            row.update({f"{prefix}_{name}": value for name, value in metrics.items()})
        objective.train()
        value = row[f"dev_{measures[0]}"]
        if progress.best_value is None or value > progress.best_value:
            progress.best_step, progress.best_value = step, value
            if procs.is_main:
                ckpt.save_best_model(student, job.checkpoint_dir, step)
        say("step %d dev %s %.4f (best %.4f at step %d)", step, opt["select_metric"], value,
            progress.best_value, progress.best_step)
        return row

    # Per-process randomness (dropout), then resume where a killed run left off, or evaluate
    # the initial model: it is the first candidate for the best model.
    _seed_everything(seed + procs.rank)
    models = {t.name: t.module for t in trainees}
    optimizers = {t.name: t.optimizer for t in trainees}
    schedulers = {t.name: t.scheduler for t in trainees}
    fingerprint = job_fingerprint(job, procs.world_size)
    progress = ckpt.Progress()
    payload = ckpt.load_checkpoint(job.checkpoint_dir, fingerprint)
    if payload is not None:
        progress = ckpt.restore(payload, models=models, optimizers=optimizers,
                                schedulers=schedulers, rank=procs.rank)
        say("resuming %s at step %d", job.checkpoint_dir, progress.step)
        if procs.is_main:
            ckpt.prune_best_models(job.checkpoint_dir, keep={progress.best_step})
    del payload
    rows = {row["step"]: row for row in progress.log_rows}
    if progress.step == 0:
        rows[0] = {"step": 0, **evaluate(0, progress)}
    # A logged row's losses are their means over its logging window (lead.training.progress);
    # a checkpoint taken mid-window carries the window's sums.
    window = LossWindow.from_state(progress.loss_window)
    board = closing.enter_context(contextlib.closing(
        Board.open(job.log, job.command, [rows[s] for s in sorted(rows)]) if procs.is_main
        else Board()))

    examples_per_step = opt["batch_size"] * accumulation * procs.world_size
    clock = Clock(steps, progress.step)
    while progress.step < steps:
        pairs = objective.layer_pairs(progress.step)
        micro_batches = (
            data.micro_batch(counter)
            for counter in range(progress.step * accumulation, (progress.step + 1) * accumulation)
        )
        lrs = {t.name: t.scheduler.get_last_lr()[0] for t in trainees}
        started = time.perf_counter()
        result = train_step(objective, trainees, micro_batches, pairs, group_size=data.group_size,
                            autocast=autocast, procs=procs, accumulation=accumulation)
        step = progress.step = progress.step + 1
        if not all(math.isfinite(v) for v in (result.losses["loss"], *result.grad_norms.values())):
            raise NonFiniteLoss(_divergence_message(step, result, job.checkpoint_dir))
        window.add(result.losses)
        if step % opt["log_every"] == 0 or step == steps:
            rows[step] = log_row(step, result, window.take(), pairs, lrs,
                                 time.perf_counter() - started, examples_per_step, procs.device)
            say("%s", clock.line(step, rows[step]["loss"], examples_per_step))
        if step % opt["eval_every"] == 0 or step == steps:
            rows.setdefault(step, {"step": step}).update(evaluate(step, progress))
        if step in rows:
            board.write(rows[step])
        if step % opt["checkpoint_every"] == 0 or step == steps:
            progress.log_rows = [rows[s] for s in sorted(rows)]
            progress.loss_window = window.state()
            rng_states = distributed.gather_objects(ckpt.rng_state())
            if procs.is_main:  # the log first: a checkpoint's rows are always on disk
                write_log(progress.log_rows, job.log, _log_settings(job))
                ckpt.save_checkpoint(
                    job.checkpoint_dir, fingerprint=fingerprint, progress=progress,
                    models=models, optimizers=optimizers, schedulers=schedulers,
                    rng_states=rng_states,
                )
            distributed.barrier()

    if procs.is_main:
        write_log([rows[s] for s in sorted(rows)], job.log, _log_settings(job))
        with atomic_path(job.out, directory=True, made_by=job.command) as tmp:
            shutil.copytree(ckpt.best_model_dir(job.checkpoint_dir, progress.best_step), tmp)
            facts = {**job.card, "selected at step": f"{progress.best_step} of {steps}",
                     f"dev {opt['select_metric']}": progress.best_value,
                     "settings hash": config_hash(_log_settings(job))}
            write_model_card(tmp, name=job.out.name, facts=facts,
                             base_model=job.card.get("base model"))
        log.info("saved the best model (step %d, dev %s %.4f) to %s",
                 progress.best_step, opt["select_metric"], progress.best_value, job.out)
        if not job.keep_checkpoint:  # nothing resumes a finished run: free its gigabytes
            shutil.rmtree(job.checkpoint_dir, ignore_errors=True)
    distributed.barrier()
    return job.out


def train_step(
    objective: Objective,
    trainees: list[Trainee],
    micro_batches: Iterable[dict[str, EncoderInputs]],
    layer_pairs: list[tuple[int, int]],
    *,
    group_size: int,
    autocast: Callable[[], AbstractContextManager],
    procs: Processes,
    accumulation: int,
) -> StepResult:
    """One optimizer step: forward/backward per micro-batch, gradient averaging, clipping, update.

    A non-finite loss or gradient is reported in the result and NO update is made, so the
    caller can stop with the models as they were.
    """
    totals, weights = {}, None
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
        parts = {"loss": sum(objective.coefficients[k] * v for k, v in out.components.items()),
                 **out.components}
        for name, value in parts.items():
            totals[name] = totals.get(name, 0.0) + value.detach().float() / accumulation
        if out.layer_weights is not None:
            w = out.layer_weights.detach().float() / accumulation
            weights = w if weights is None else weights + w
    names = list(totals)
    averaged = distributed.all_reduce_mean(torch.stack([totals[n] for n in names])).cpu()
    losses = dict(zip(names, averaged.tolist(), strict=True))
    layer_weights = weights.tolist() if weights is not None else []
    grad_norms = {}
    if math.isfinite(losses["loss"]):
        for trainee in trainees:
            distributed.average_gradients(trainee.params)
            norm = torch.nn.utils.clip_grad_norm_(trainee.params, trainee.max_grad_norm)
            grad_norms[trainee.name] = float(norm)
        if all(math.isfinite(n) for n in grad_norms.values()):
            for trainee in trainees:
                trainee.optimizer.step()
                trainee.scheduler.step()
    for trainee in trainees:
        trainee.optimizer.zero_grad(set_to_none=True)
    return StepResult(losses, layer_weights, grad_norms)


def dev_measures(select_metric: str, depth: int) -> list[str]:
    """The selection metric first (its canonical name: `MRR@10` is `RR@10`), then the usual
    dev measures, without repeats; an unknown measure fails here, before any training."""
    names = [measure_name(m, 1) for m in (select_metric, "RR@10", "nDCG@10", f"R@{depth}")]
    return list(dict.fromkeys(names))


def _log_settings(job: TrainingJob) -> dict:
    return {"method": job.method, "optimisation": job.optimisation,
            "distillation": job.distillation}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _divergence_message(step: int, result: StepResult, checkpoint_dir: Path) -> str:
    values = ", ".join(f"{k}={v:.4g}" for k, v in {**result.losses, **result.grad_norms}.items())
    return (
        f"non-finite loss or gradient at step {step} ({values}); no update was made and the "
        f"last checkpoint in {checkpoint_dir} is kept: resume from it after lowering the "
        f"learning rate, or check the data"
    )
