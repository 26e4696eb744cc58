"""Score a run against qrels with trec_eval's semantics (-M depth cut, -c missing queries,
-l relevance level): summary.parquet, per_query.parquet and summary.md in --out."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "score a run against qrels (trec_eval -M/-c/-l semantics)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, type=Path, help="run parquet")
    parser.add_argument("--qrels", required=True, type=Path, help="qrels parquet")
    parser.add_argument(
        "--out", required=True, type=Path,
        help="directory for summary.parquet, per_query.parquet and summary.md",
    )
    parser.add_argument(
        "--relevance-level", type=int, default=1,
        help="minimum grade that binary measures count as relevant (TREC DL: 2)",
    )
    parser.add_argument(
        "--measures", nargs="+", metavar="MEASURE",
        help="ir_measures names: RR@k, AP@k, R@k, nDCG@k "
        "(default: lead.evaluate.DEFAULT_MEASURES, RR@10 nDCG@10 R@50/100/1000 AP@1000)",
    )


def run(args: argparse.Namespace) -> None:
    from lead.evaluate import DEFAULT_MEASURES, write_evaluation

    summary = write_evaluation(
        args.out, args.run, args.qrels, relevance_level=args.relevance_level,
        measures=args.measures or DEFAULT_MEASURES,
    )
    for measure, value in zip(summary["measure"], summary["value"], strict=True):
        print(f"{measure}\t{value:.4f}")
