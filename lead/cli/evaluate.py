"""`python -m lead evaluate | export-trec | compare`: scoring a run, exporting it, testing two."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "evaluate", help="score a run against qrels (trec_eval -M/-c/-l semantics)"
    )
    # dest differs from the flag: `run` is the callable every subcommand sets.
    evaluate.add_argument("--run", dest="run_path", required=True, type=Path, help="run parquet")
    evaluate.add_argument("--qrels", required=True, type=Path, help="qrels parquet")
    evaluate.add_argument(
        "--out", required=True, type=Path,
        help="directory for summary.parquet, per_query.parquet and summary.md",
    )
    evaluate.add_argument(
        "--relevance-level", type=int, default=1,
        help="minimum grade that binary measures count as relevant (TREC DL: 2)",
    )
    evaluate.add_argument(
        "--measures", nargs="+", metavar="MEASURE",
        help="ir_measures names: RR@k, AP@k, R@k, nDCG@k "
        "(default: lead.evaluate.DEFAULT_MEASURES, RR@10 nDCG@10 R@50/100/1000 AP@1000)",
    )
    evaluate.set_defaults(run=_evaluate)

    export = subparsers.add_parser(
        "export-trec", help="write a run as `qid Q0 docid rank score tag` lines"
    )
    export.add_argument("--run", dest="run_path", required=True, type=Path, help="run parquet")
    export.add_argument("--out", required=True, type=Path, help="TREC run file to write")
    export.add_argument("--tag", required=True, help="run tag (one word)")
    export.set_defaults(run=_export)

    compare = subparsers.add_parser(
        "compare", help="paired t-test and randomisation test of system A against system B"
    )
    compare.add_argument(
        "--per-query", required=True, nargs=2, type=Path, metavar=("A", "B"),
        help="per_query.parquet of system A and of system B (delta = A - B)",
    )
    compare.add_argument("--measure", required=True, help="measure name as in the files")
    compare.add_argument("--out", required=True, type=Path, help="one-row result parquet")
    compare.add_argument("--permutations", type=int, default=10_000)
    compare.add_argument("--seed", type=int, default=0)
    compare.set_defaults(run=_compare)


def _evaluate(args: argparse.Namespace) -> None:
    from lead.evaluate import DEFAULT_MEASURES, write_evaluation

    summary = write_evaluation(
        args.out, args.run_path, args.qrels, relevance_level=args.relevance_level,
        measures=args.measures or DEFAULT_MEASURES,
    )
    for measure, value in zip(summary["measure"], summary["value"], strict=True):
        print(f"{measure}\t{value:.4f}")


def _export(args: argparse.Namespace) -> None:
    from lead.evaluate import export_trec

    export_trec(args.run_path, args.out, args.tag)


def _compare(args: argparse.Namespace) -> None:
    from lead.evaluate import compare, write_comparison

    result = compare(
        *args.per_query, args.measure, permutations=args.permutations, seed=args.seed
    )
    write_comparison(result, args.out, [str(path) for path in args.per_query])
    print(
        f"{args.measure}: A {result['mean_a']:.4f}  B {result['mean_b']:.4f}  "
        f"delta {result['delta']:+.4f}  p(t) {result['p_ttest']:.4g}  "
        f"p(perm) {result['p_permutation']:.4g}  n {result['n']}"
    )
