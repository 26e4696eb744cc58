"""Score a run against qrels with trec_eval's semantics (-M depth cut, -c missing queries,
-l relevance level): summary.parquet, per_query.parquet and summary.md in --out. Runs and
qrels are parquet artifacts or TREC files."""

from __future__ import annotations

import argparse
from pathlib import Path

from lead.cli import whole

HELP = "score a run against qrels (trec_eval -M/-c/-l semantics)"
OUTPUTS = {"out": "folder"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", required=True, type=Path,
        help="run: parquet, or a TREC file of `qid Q0 docid rank score tag` lines",
    )
    parser.add_argument(
        "--qrels", required=True, type=Path,
        help="qrels: parquet, or a TREC file of `qid 0 docid grade` lines",
    )
    parser.add_argument(
        "--out", required=True, type=Path,
        help="directory for summary.parquet, per_query.parquet and summary.md",
    )
    parser.add_argument(
        "--relevance-level", type=whole(1), default=1,
        help="minimum grade that binary measures count as relevant, unless a measure "
        "gives rel= (TREC DL: 2)",
    )
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument(
        "--measures", nargs="+", metavar="MEASURE",
        help="ir_measures names, e.g. RR@10 nDCG@10 P@10 Success@5 Judged@10 AP(rel=2)@1000 "
        "(default: lead.evaluation.measures.DEFAULT_MEASURES, RR@10 nDCG@10 R@50/100/1000 AP@1000)",
    )
    chosen.add_argument(
        "--depth", type=whole(1), metavar="N",
        help="the measures that suit a run N deep: RR@10 nDCG@10 R@100 R@N AP@N",
    )


def run(args: argparse.Namespace) -> None:
    from lead.evaluation.evaluate import write_evaluation
    from lead.evaluation.measures import DEFAULT_MEASURES, default_measures

    if args.measures:
        measures = args.measures
    elif args.depth is not None:
        measures = default_measures(args.depth)
    else:
        measures = DEFAULT_MEASURES
    write_evaluation(
        args.out, args.run, args.qrels, relevance_level=args.relevance_level, measures=measures,
    )
    print((args.out / "summary.md").read_text(encoding="utf-8"), end="")
