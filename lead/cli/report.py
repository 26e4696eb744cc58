"""The markdown report: metrics of every model side by side per collection and split, LEAD's
tests against each baseline across seeds and per query, and the training plots."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "metrics tables, LEAD's significance tests and training plots"
OUTPUTS = {"out": "file", "tables": "file", "plots": "folder"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", default="{}", help="JSON of the config's evaluate section")
    parser.add_argument(
        "--metrics", required=True, nargs="+", metavar="COLLECTION=DIR",
        help="each collection's metrics directory, holding {model}/{split}/per_query.parquet",
    )
    parser.add_argument(
        "--logs", nargs="*", default=[], metavar="NAME=PATH",
        help="training logs to plot, each under its NAME",
    )
    parser.add_argument("--levels", default="{}",
                        help="JSON {collection: {split: relevance level}} (default 1)")
    parser.add_argument("--splits", required=True, nargs="+", metavar="COLLECTION:SPLIT",
                        help="evaluation splits, each as collection:split")
    parser.add_argument("--models", required=True, nargs="+",
                        help="rows of the tables, in order")
    parser.add_argument("--out", required=True, type=Path, help="markdown report to write")
    parser.add_argument("--tables", type=Path,
                        help="also write every model's measures as a TSV table here")
    parser.add_argument("--plots", required=True, type=Path, help="directory for PNG plots")


def _pairs(values: list[str], flag: str, separator: str = "=") -> dict[str, str]:
    from lead.errors import ConfigError

    pairs: dict[str, str] = {}
    for value in values:
        name, found, rest = value.partition(separator)
        if not found or not name or not rest:
            raise ConfigError(f"{flag} {value!r}: expected NAME{separator}VALUE")
        if name in pairs:
            raise ConfigError(f"{flag}: name {name!r} given twice")
        pairs[name] = rest
    return pairs


def run(args: argparse.Namespace) -> None:
    from lead.config import parse_settings
    from lead.errors import ConfigError
    from lead.evaluation.report import build_report

    metrics = {name: Path(path) for name, path in _pairs(args.metrics, "--metrics").items()}
    splits = []
    for value in args.splits:
        collection, found, split = value.partition(":")
        if not found or collection not in metrics:
            raise ConfigError(f"--splits {value!r}: expected COLLECTION:SPLIT with a collection "
                              f"given by --metrics ({sorted(metrics)})")
        splits.append((collection, split))
    logs = {name: Path(path) for name, path in _pairs(args.logs, "--logs").items()}
    build_report(parse_settings(args.settings), metrics, logs, args.out, args.plots,
                 splits=splits, models=args.models, levels=parse_settings(args.levels),
                 tables=args.tables)
