"""Paired t-test and randomisation test of system A against system B over the queries of one
evaluation (delta = A - B)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lead.cli import whole

HELP = "paired t-test and randomisation test of system A against system B"
OUTPUTS = {"out": "file"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--per-query", required=True, nargs=2, type=Path, metavar=("A", "B"),
        help="per_query.parquet of system A and of system B (delta = A - B)",
    )
    parser.add_argument("--measure", required=True, help="measure name as in the files")
    parser.add_argument("--out", required=True, type=Path, help="one-row result parquet")
    parser.add_argument("--permutations", type=whole(1), default=10_000)
    parser.add_argument("--seed", type=whole(0), default=0)


def run(args: argparse.Namespace) -> None:
    from lead.evaluation.significance import compare, write_comparison

    result = compare(
        *args.per_query, args.measure, permutations=args.permutations, seed=args.seed
    )
    write_comparison(result, args.out, [str(path) for path in args.per_query])
    print(
        f"{args.measure}: A {result['mean_a']:.4f}  B {result['mean_b']:.4f}  "
        f"delta {result['delta']:+.4f}  p(t) {result['p_ttest']:.4g}  "
        f"p(perm) {result['p_permutation']:.4g}  n {result['n']}"
    )
