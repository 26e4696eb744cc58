"""Materialise a teacher/student initialisation as a model directory: weights, tokenizer,
lead.json (kind, pooling, similarity, scale, lengths) and the sentence-transformers files."""

from __future__ import annotations

import argparse
from pathlib import Path

from lead.cli import whole

HELP = "materialise a teacher/student initialisation as a model directory"
OUTPUTS = {"out": "folder"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", required=True, help="JSON: the teacher or student section")
    parser.add_argument("--out", required=True, type=Path, help="model directory to write")
    parser.add_argument("--tokenizer", type=Path,
                        help="tokenizer directory replacing the model's own")
    parser.add_argument("--seed", type=whole(0), default=888, help="seed of every random weight")


def run(args: argparse.Namespace) -> None:
    from lead.config import parse_settings
    from lead.modeling.init import init_model

    init_model(
        parse_settings(args.settings), args.out, tokenizer_dir=args.tokenizer, seed=args.seed
    )
