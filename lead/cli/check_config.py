"""Check a config before running it: the schema (types, allowed values, defaults), then what
the schema cannot see — layer choices against the models' depths (read from their config
files), models asked to do what they cannot (a ColBERT teacher as dense miner), splits the
sources do not produce, measure names, names that would become paths. Prints the plan: the
jobs the workflow would run. The workflow runs the same checks before any job."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "check a config and print what the workflow would run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("configfiles", nargs="*", type=Path, metavar="CONFIG",
                        help="config files, merged in order (default: config/default.yaml)")
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                        help="values on top, as snakemake --config takes them")


def run(args: argparse.Namespace) -> None:
    from lead.config import layered
    from lead.plan import build

    raw, config = layered(args.configfiles, args.config)
    print(build(config, raw=raw).summary())
