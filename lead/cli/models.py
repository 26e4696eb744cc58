"""`python -m lead init-model`: a model's initialisation as a Hugging Face directory."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "init-model",
        help="materialise a teacher/student initialisation as a model directory",
        description="Write weights + tokenizer + lead.json (+ sentence-transformers files).",
    )
    parser.add_argument("--settings", required=True, help="JSON: the teacher or student section")
    parser.add_argument("--out", required=True, help="model directory to write")
    parser.add_argument("--tokenizer", help="tokenizer directory replacing the model's own")
    parser.add_argument("--seed", type=int, default=888, help="seed of every random weight")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from lead.config import parse_settings
    from lead.modeling.init import init_model

    init_model(
        parse_settings(args.settings), args.out, tokenizer_dir=args.tokenizer, seed=args.seed
    )
