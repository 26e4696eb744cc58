"""`python -m lead evaluate | export-trec | compare`: scoring a run, exporting it, testing two."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "evaluate", help="score a run against qrels (trec_eval -M/-c/-l semantics)"
    )
    # dest differs from the flag: `run` is the callable every subcommand sets.
    evaluate.add_argument(
        "--run", dest="run_path", required=True, type=Path,
        help="run: parquet, or a TREC file of `qid Q0 docid rank score tag` lines",
    )
    evaluate.add_argument(
        "--qrels", required=True, type=Path,
        help="qrels: parquet, or a TREC file of `qid 0 docid grade` lines",
    )
    evaluate.add_argument(
        "--out", required=True, type=Path,
        help="directory for summary.parquet, per_query.parquet and summary.md",
    )
    evaluate.add_argument(
        "--relevance-level", type=int, default=1,
        help="minimum grade that binary measures count as relevant, unless a measure "
        "gives rel= (TREC DL: 2)",
    )
    chosen = evaluate.add_mutually_exclusive_group()
    chosen.add_argument(
        "--measures", nargs="+", metavar="MEASURE",
        help="ir_measures names, e.g. RR@10 nDCG@10 P@10 Success@5 Judged@10 AP(rel=2)@1000 "
        "(default: lead.measures.DEFAULT_MEASURES, RR@10 nDCG@10 R@50/100/1000 AP@1000)",
    )
    chosen.add_argument(
        "--depth", type=int, metavar="N",
        help="the measures that suit a run N deep: RR@10 nDCG@10 R@100 R@N AP@N",
    )
    evaluate.set_defaults(run=_evaluate)

    export = subparsers.add_parser(
        "export-trec", help="write a run as `qid Q0 docid rank score tag` lines"
    )
    export.add_argument(
        "--run", dest="run_path", required=True, type=Path, help="run (parquet or TREC file)"
    )
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
    from lead.evaluate import write_evaluation
    from lead.measures import DEFAULT_MEASURES, default_measures

    if args.measures:
        measures = args.measures
    elif args.depth is not None:
        measures = default_measures(args.depth)
    else:
        measures = DEFAULT_MEASURES
    write_evaluation(
        args.out, args.run_path, args.qrels, relevance_level=args.relevance_level,
        measures=measures,
    )
    print((args.out / "summary.md").read_text(encoding="utf-8"), end="")


def _export(args: argparse.Namespace) -> None:
    from lead.runs import export_trec

    export_trec(args.run_path, args.out, args.tag)


def _compare(args: argparse.Namespace) -> None:
    from lead.significance import compare, write_comparison

    result = compare(
        *args.per_query, args.measure, permutations=args.permutations, seed=args.seed
    )
    write_comparison(result, args.out, [str(path) for path in args.per_query])
    print(
        f"{args.measure}: A {result['mean_a']:.4f}  B {result['mean_b']:.4f}  "
        f"delta {result['delta']:+.4f}  p(t) {result['p_ttest']:.4g}  "
        f"p(perm) {result['p_permutation']:.4g}  n {result['n']}"
    )
