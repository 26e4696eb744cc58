"""Rank every corpus shard's embeddings for each query by inner product and merge the shards
into one run (score desc, doc_id asc); optionally also write it in TREC format."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "retrieve the top `depth` passages per query (faiss flat, HNSW or IVF-PQ)"
OUTPUTS = {"out": "file", "trec": "file"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queries", required=True, type=Path, help="query embeddings parquet")
    parser.add_argument(
        "--corpus", required=True, nargs="+", type=Path, metavar="EMB_SHARD",
        help="corpus embeddings parquet, one per shard",
    )
    parser.add_argument("--out", required=True, type=Path, help="run parquet to write")
    parser.add_argument("--trec", type=Path, help="also write the run in TREC format here")
    parser.add_argument("--tag", default="lead", help="TREC run tag (default: lead)")
    parser.add_argument("--settings", help="the config's `search` section as JSON")


def run(args: argparse.Namespace) -> None:
    from lead.config import parse_settings, resolve
    from lead.evaluation.runs import export_trec
    from lead.evaluation.trec import check_tag
    from lead.io import atomic_path
    from lead.retrieval.search import search

    settings = resolve("search", parse_settings(args.settings))
    if args.trec:
        check_tag(args.tag)
    # Both outputs or neither: the run is renamed into place last, once its TREC copy is.
    with atomic_path(args.out, directory=False) as run:
        search(args.queries, args.corpus, run, settings)
        if args.trec:
            export_trec(run, args.trec, args.tag)
