"""`train` (contrastive training of one model) and `distill --method none|response|lead`.

Both run in one process or under `torchrun --nproc_per_node N`; rerun with the same
--checkpoint-dir, a killed run resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

METHODS = ("none", "response", "lead")


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="contrastive training of one model (teacher warm-up, student pre-training)",
        description=__doc__,
    )
    train.add_argument("--settings", required=True,
                       help="JSON {model: model section, optimisation: optimisation section}")
    train.add_argument("--model", required=True, type=Path, help="initial model directory")
    train.add_argument("--corpus-tokens", required=True, type=Path)
    train.add_argument("--query-tokens", required=True, type=Path, help="training queries")
    _common(train)
    train.set_defaults(run=run_train)

    distill = subparsers.add_parser(
        "distill", help="train a student with a teacher: none | response | lead",
        description=__doc__,
    )
    distill.add_argument("--method", required=True, choices=METHODS)
    distill.add_argument("--settings", required=True,
                         help="JSON {teacher: ..., student: ..., distillation: ...}")
    distill.add_argument("--teacher", required=True, type=Path, help="teacher model directory")
    distill.add_argument("--student", required=True, type=Path, help="initial student directory")
    for role in ("teacher", "student"):
        distill.add_argument(f"--{role}-corpus-tokens", required=True, type=Path)
        distill.add_argument(f"--{role}-query-tokens", required=True, type=Path,
                             help="training queries")
    _common(distill)
    distill.set_defaults(run=run_distill)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--groups", required=True, type=Path, help="training groups parquet")
    parser.add_argument("--dev-query-tokens", required=True, type=Path,
                        help="dev queries in the trained model's tokens")
    parser.add_argument("--dev-qrels", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="best-on-dev model directory")
    parser.add_argument("--log", required=True, type=Path, help="training log parquet")
    parser.add_argument("--checkpoint-dir", required=True, type=Path)


def _settings(text: str, sections: set[str]) -> dict:
    from lead.config import parse_settings
    from lead.errors import ConfigError

    settings = parse_settings(text)
    unknown = sorted(set(settings) - sections)
    if unknown:
        raise ConfigError(f"--settings: unknown section(s) {unknown}; expected {sorted(sections)}")
    return settings


def run_train(args: argparse.Namespace) -> None:
    from lead.config import resolve
    from lead.training.loop import ModelFiles, TrainingJob, train

    settings = _settings(args.settings, {"model", "optimisation"})
    wrapped = {"optimisation": settings.get("optimisation") or {}}
    optimisation = resolve("teacher_training", wrapped)["optimisation"]
    train(
        TrainingJob(
            method="contrastive",
            student=ModelFiles(args.model, args.query_tokens, args.corpus_tokens),
            teacher=None,
            groups=args.groups,
            dev_query_tokens=args.dev_query_tokens,
            dev_qrels=args.dev_qrels,
            out=args.out,
            log=args.log,
            checkpoint_dir=args.checkpoint_dir,
            optimisation=optimisation,
            distillation=resolve("distillation", {}),
            model_settings=(
                {"student": resolve("teacher", settings["model"])} if "model" in settings else {}
            ),
        )
    )


def run_distill(args: argparse.Namespace) -> None:
    from lead.config import resolve
    from lead.training.loop import ModelFiles, TrainingJob, train

    settings = _settings(args.settings, {"teacher", "student", "distillation"})
    distillation = resolve("distillation", settings.get("distillation") or {})
    train(
        TrainingJob(
            method=args.method,
            student=ModelFiles(args.student, args.student_query_tokens, args.student_corpus_tokens),
            teacher=ModelFiles(args.teacher, args.teacher_query_tokens, args.teacher_corpus_tokens),
            groups=args.groups,
            dev_query_tokens=args.dev_query_tokens,
            dev_qrels=args.dev_qrels,
            out=args.out,
            log=args.log,
            checkpoint_dir=args.checkpoint_dir,
            optimisation=distillation["optimisation"],
            distillation=distillation,
            model_settings={
                role: resolve(role, settings[role]) for role in ("teacher", "student")
                if role in settings
            },
        )
    )
