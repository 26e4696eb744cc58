"""Fetch the files of a downloaded source (MS MARCO passage or document, with TREC DL) into the
download cache, resumably, and verify them against their recorded sizes and checksums. The
data stage then reads them without network: on a cluster, run this where the internet is."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "download and verify a source's files (MS MARCO, TREC DL) into the cache"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", default="{}", help="the dataset section, as JSON")
    parser.add_argument(
        "--cache", type=Path, default=None,
        help="download cache (default: $LEAD_CACHE, else ~/.cache/lead)",
    )


def run(args: argparse.Namespace) -> None:
    from lead.config import parse_settings
    from lead.data.sources import download

    for path in download(parse_settings(args.settings), args.cache):
        print(path)
