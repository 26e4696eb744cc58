"""Training groups (query, positives, hard negatives): rank candidates per training query by
the configured source (bm25: the corpus with bm25s; given: a qid/pos/neg triples file; dense: a
run from the search stage), remove every positive, keep the first `depth`."""

from __future__ import annotations

import argparse
from pathlib import Path

from lead.cli import whole

HELP = "build training groups with hard negatives (bm25, given triples or a dense run)"
OUTPUTS = {"out": "file"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", help="the config's `negatives` section as JSON")
    parser.add_argument("--corpus", type=Path,
                        help="corpus parquet (bm25; given: the negatives are checked against it)")
    parser.add_argument("--threads", type=whole(1), default=None,
                        help="BM25 retrieval threads (default: every available core)")
    parser.add_argument("--queries", type=Path, help="training queries parquet (bm25)")
    parser.add_argument("--qrels", required=True, type=Path, help="training qrels parquet")
    parser.add_argument("--out", required=True, type=Path, help="groups parquet to write")
    parser.add_argument("--given", type=Path, help="triples TSV (.gz ok); default: given_path")
    parser.add_argument("--run", type=Path, help="run parquet of the mining model (dense)")
    parser.add_argument(
        "--strict", action="store_true",
        help="fail on a query without any positive instead of dropping it with a warning",
    )


def run(args: argparse.Namespace) -> None:
    from lead.config import parse_settings, resolve
    from lead.data import negatives
    from lead.errors import ConfigError

    settings = resolve("negatives", parse_settings(args.settings))
    source, depth = settings["source"], settings["depth"]
    common = {"depth": depth, "strict": args.strict}
    if source == "bm25":
        if args.corpus is None or args.queries is None:
            raise ConfigError("negatives source bm25 needs --corpus and --queries")
        negatives.bm25_groups(
            args.corpus, args.queries, args.qrels, args.out,
            retrieve_depth=settings["retrieve_depth"], k1=settings["bm25"]["k1"],
            b=settings["bm25"]["b"], threads=args.threads, **common,
        )
    elif source == "given":
        triples = args.given or settings.get("given_path")
        if triples is None:
            raise ConfigError("negatives source given needs --given or negatives.given_path")
        if args.corpus is None:
            raise ConfigError("negatives source given needs --corpus (negatives are checked "
                              "against it)")
        negatives.given_groups(triples, args.qrels, args.out, corpus=args.corpus, **common)
    else:
        if args.run is None:
            raise ConfigError("negatives source dense needs --run (the mining model's run)")
        negatives.dense_groups(
            args.run, args.qrels, args.out, retrieve_depth=settings["retrieve_depth"], **common
        )
