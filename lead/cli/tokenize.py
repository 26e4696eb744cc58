"""`python -m lead train-tokenizer` and `python -m lead tokenize`: each model's own tokens."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train-tokenizer",
        help="train a BPE / WordPiece / Unigram tokenizer on the corpus",
        description="Train a tokenizer with BERT-style special tokens on the corpus texts and "
        "save it as a Hugging Face directory (AutoTokenizer.from_pretrained loads it).",
    )
    train.add_argument("--settings", help="the model's `tokenizer` section as JSON")
    train.add_argument("--corpus", required=True, type=Path, help="corpus parquet")
    train.add_argument("--out", required=True, type=Path, help="tokenizer directory to write")
    train.set_defaults(run=_train)

    tokenize = subparsers.add_parser(
        "tokenize",
        help="tokenize a corpus or queries parquet with one model's tokenizer",
        description="Write TOKENS (id, input_ids) in the input's row order: special tokens "
        "included, `title [SEP] text` as a pair where a title exists, truncated to "
        "--max-length (the text is cut, the title kept).",
    )
    tokenize.add_argument("--tokenizer", required=True, type=Path, help="tokenizer directory")
    tokenize.add_argument("--input", required=True, type=Path, help="corpus or queries parquet")
    tokenize.add_argument("--out", required=True, type=Path, help="TOKENS parquet to write")
    tokenize.add_argument("--max-length", required=True, type=int, help="tokens per row, at most")
    tokenize.add_argument("--batch-size", type=int, help="rows per batch and row group")
    tokenize.set_defaults(run=_tokenize)


def _train(args: argparse.Namespace) -> None:
    from lead.config import parse_settings
    from lead.tokenization import resolve_settings, train_tokenizer

    settings = resolve_settings(parse_settings(args.settings))
    train_tokenizer(
        args.corpus,
        args.out,
        type=settings["type"],
        vocab_size=settings["vocab_size"],
        lowercase=settings["lowercase"],
    )


def _tokenize(args: argparse.Namespace) -> None:
    from lead.tokenization import DEFAULT_BATCH_SIZE, tokenize_file

    tokenize_file(
        args.tokenizer,
        args.input,
        args.out,
        max_length=args.max_length,
        batch_size=args.batch_size or DEFAULT_BATCH_SIZE,
    )
