"""Build corpus.parquet, queries/{split}.parquet and qrels/{split}.parquet from the config's
`dataset` section (any source); the output folder is replaced as a whole."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "build corpus, queries and qrels parquet from the configured source"
OUTPUTS = {"out": "folder"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", default="{}", help="the dataset section, as JSON")
    parser.add_argument("--out", required=True, type=Path, help="output folder (replaced)")
    parser.add_argument(
        "--cache", type=Path, default=None,
        help="download cache (default: $LEAD_CACHE, else ~/.cache/lead)",
    )


def run(args: argparse.Namespace) -> None:
    from lead.config import parse_settings
    from lead.data.sources import build_dataset

    build_dataset(parse_settings(args.settings), args.out, args.cache)
