"""Contrastive training of one model: the teacher's warm-up, or the student's pre-training.
Runs in one process or under `torchrun --nproc_per_node N`; rerun with the same
--checkpoint-dir, a killed run resumes from its last checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "contrastive training of one model (teacher warm-up, student pre-training)"
OUTPUTS = {"out": "folder", "log": "file", "checkpoint_dir": "folder"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", required=True,
                        help="JSON {model: model section, optimisation: optimisation section}")
    parser.add_argument("--model", required=True, type=Path, help="initial model directory")
    parser.add_argument("--corpus-tokens", required=True, type=Path)
    parser.add_argument("--query-tokens", required=True, type=Path, help="training queries")
    training_arguments(parser)


def training_arguments(parser: argparse.ArgumentParser) -> None:
    """The inputs and outputs every training stage shares."""
    parser.add_argument("--groups", required=True, type=Path, help="training groups parquet")
    parser.add_argument("--dev-query-tokens", required=True, type=Path,
                        help="dev queries in the trained model's tokens")
    parser.add_argument("--dev-qrels", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="best-on-dev model directory")
    parser.add_argument("--log", required=True, type=Path, help="training log parquet")
    parser.add_argument("--checkpoint-dir", required=True, type=Path,
                        help="where a killed run resumes from; removed after success")
    parser.add_argument("--keep-checkpoint", action="store_true",
                        help="keep the checkpoint folder after success")


def settings_of(text: str, sections: set[str]) -> dict:
    from lead.config import parse_settings
    from lead.errors import ConfigError

    settings = parse_settings(text)
    unknown = sorted(set(settings) - sections)
    if unknown:
        raise ConfigError(f"--settings: unknown section(s) {unknown}; expected {sorted(sections)}")
    return settings


def run(args: argparse.Namespace) -> None:
    from lead.config import resolve, resolve_optimisation
    from lead.training.job import ModelFiles, TrainingJob
    from lead.training.loop import train

    settings = settings_of(args.settings, {"model", "optimisation"})
    model = resolve("teacher", settings["model"]) if "model" in settings else None
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
            optimisation=resolve_optimisation(settings.get("optimisation")),
            distillation=resolve("distillation", {}),
            model_settings={"student": model} if model else {},
            keep_checkpoint=args.keep_checkpoint,
            card={"method": "contrastive warm-up",
                  "base model": model["init"] if model else str(args.model),
                  "training groups": str(args.groups)},
        )
    )
