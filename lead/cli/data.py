"""`python -m lead data`: build corpus, queries and qrels parquet from the configured source."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="build corpus.parquet, queries/{split}.parquet and qrels/{split}.parquet",
        description="Build the dataset of the config's `dataset` section (any source).",
    )
    parser.add_argument("--settings", default="{}", help="the dataset section, as JSON")
    parser.add_argument("--out", required=True, type=Path, help="output folder (replaced)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="download cache (default: $LEAD_CACHE, else ~/.cache/lead)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from lead.config import parse_settings
    from lead.data.sources import build_dataset

    build_dataset(parse_settings(args.settings), args.out, args.cache)
