"""Write a run as `qid Q0 docid rank score tag` lines, in the project's ranking order."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write a run as `qid Q0 docid rank score tag` lines"
OUTPUTS = {"out": "file"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, type=Path, help="run (parquet or TREC file)")
    parser.add_argument("--out", required=True, type=Path, help="TREC run file to write")
    parser.add_argument("--tag", required=True, help="run tag (one word)")


def run(args: argparse.Namespace) -> None:
    from lead.evaluation.runs import export_trec

    export_trec(args.run, args.out, args.tag)
