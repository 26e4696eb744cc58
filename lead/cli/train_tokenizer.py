"""Train a tokenizer with BERT-style special tokens on the corpus texts and save it as a
Hugging Face directory (AutoTokenizer.from_pretrained loads it)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train a BPE / WordPiece / Unigram tokenizer on the corpus"
OUTPUTS = {"out": "folder"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", help="the model's `tokenizer` section as JSON")
    parser.add_argument("--corpus", required=True, type=Path, help="corpus parquet")
    parser.add_argument("--out", required=True, type=Path, help="tokenizer directory to write")


def run(args: argparse.Namespace) -> None:
    from lead.config import parse_settings
    from lead.tokenization import resolve_settings, train_tokenizer

    settings = resolve_settings(parse_settings(args.settings))
    train_tokenizer(args.corpus, args.out, type=settings["type"],
                    vocab_size=settings["vocab_size"], lowercase=settings["lowercase"])
