"""Tokenize a corpus or queries parquet with one model's tokenizer: TOKENS (id, input_ids) in
the input's row order, special tokens included, `title [SEP] text` as a pair where a title
exists, truncated to --max-length (the text is cut, the title kept)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lead.cli import whole

HELP = "tokenize a corpus or queries parquet with one model's tokenizer"
OUTPUTS = {"out": "file"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", required=True, type=Path, help="tokenizer directory")
    parser.add_argument("--input", required=True, type=Path, help="corpus or queries parquet")
    parser.add_argument("--out", required=True, type=Path, help="TOKENS parquet to write")
    parser.add_argument("--max-length", required=True, type=whole(2),
                        help="tokens per row, at most")
    parser.add_argument("--batch-size", type=whole(1), help="rows per batch and row group")
    parser.add_argument("--titles", choices=["pair", "space"],
                        help="a titled passage as the pair (title, text) or the text 'title "
                        "text' (default: the model directory's own, else pair)")


def run(args: argparse.Namespace) -> None:
    from lead.tokenization import DEFAULT_BATCH_SIZE, tokenize_file

    tokenize_file(args.tokenizer, args.input, args.out, max_length=args.max_length,
                  batch_size=args.batch_size or DEFAULT_BATCH_SIZE, titles=args.titles)
