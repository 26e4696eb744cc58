"""`python -m lead <stage> ...`: every pipeline stage, as the Snakemake rules call it."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import lead.cli
from lead.errors import LeadError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lead", description=__doc__)
    subparsers = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for module in sorted(m.name for m in pkgutil.iter_modules(lead.cli.__path__)):
        importlib.import_module(f"lead.cli.{module}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except LeadError as err:
        print(f"lead {args.stage}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
