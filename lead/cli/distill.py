"""Train a student with a teacher (none | response | lead). Runs in one process or under
`torchrun --nproc_per_node N`; rerun with the same --checkpoint-dir, a killed run resumes from
its last checkpoint. With --teacher-cache the frozen teacher's scores come from its layer cache."""

from __future__ import annotations

import argparse
from pathlib import Path

from lead.cli.warmup import settings_of, training_arguments

HELP = "train a student with a teacher: none | response | lead"
OUTPUTS = {"out": "folder", "log": "file", "checkpoint_dir": "folder"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lead.methods import METHODS

    parser.add_argument("--method", required=True, choices=list(METHODS))
    parser.add_argument("--settings", required=True,
                        help="JSON {teacher: ..., student: ..., distillation: ...}")
    parser.add_argument("--teacher", required=True, type=Path, help="teacher model directory")
    parser.add_argument("--student", required=True, type=Path, help="initial student directory")
    for role in ("teacher", "student"):
        parser.add_argument(f"--{role}-corpus-tokens", required=True, type=Path)
        parser.add_argument(f"--{role}-query-tokens", required=True, type=Path,
                            help="training queries")
    parser.add_argument("--teacher-dev-query-tokens", type=Path,
                        help="dev queries in the teacher's tokens: a jointly trained teacher's "
                        "dev metric is logged too")
    parser.add_argument("--teacher-cache-queries", nargs="+", type=Path, default=[],
                        help="the frozen teacher's layer cache of the training queries")
    parser.add_argument("--teacher-cache-passages", nargs="+", type=Path, default=[],
                        help="the frozen teacher's layer cache of the corpus, one file per shard")
    training_arguments(parser)


def run(args: argparse.Namespace) -> None:
    from lead.config import resolve
    from lead.errors import ConfigError
    from lead.training.distillation import DistillationObjective
    from lead.training.job import CacheFiles, ModelFiles, TrainingJob
    from lead.training.loop import train

    settings = settings_of(args.settings, {"teacher", "student", "distillation"})
    distillation = resolve("distillation", settings.get("distillation") or {})
    cache = None
    if args.teacher_cache_queries or args.teacher_cache_passages:
        if not (args.teacher_cache_queries and args.teacher_cache_passages):
            raise ConfigError("--teacher-cache-queries and --teacher-cache-passages go together")
        if distillation["teacher_trainable"]:
            raise ConfigError("a teacher layer cache needs a frozen teacher "
                              "(distillation.teacher_trainable: false)")
        cache = CacheFiles(tuple(args.teacher_cache_queries), tuple(args.teacher_cache_passages))
    models = {role: resolve(role, settings[role]) for role in ("teacher", "student")
              if role in settings}
    train(
        TrainingJob(
            method=args.method,
            student=ModelFiles(args.student, args.student_query_tokens, args.student_corpus_tokens),
            teacher=ModelFiles(args.teacher, args.teacher_query_tokens, args.teacher_corpus_tokens,
                               args.teacher_dev_query_tokens),
            groups=args.groups,
            dev_query_tokens=args.dev_query_tokens,
            dev_qrels=args.dev_qrels,
            out=args.out,
            log=args.log,
            checkpoint_dir=args.checkpoint_dir,
            optimisation=distillation["optimisation"],
            distillation=distillation,
            model_settings=models,
            teacher_cache=cache,
            keep_checkpoint=args.keep_checkpoint,
            card={"method": args.method,
                  "base model": models["student"]["init"] if "student" in models
                  else str(args.student),
                  "teacher": models["teacher"]["init"] if "teacher" in models
                  else str(args.teacher),
                  "training groups": str(args.groups)},
        ),
        DistillationObjective,
    )
