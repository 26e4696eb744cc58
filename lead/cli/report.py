"""`python -m lead report`: the markdown report with metrics, significance and training plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from lead.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser(
        "report", help="metrics table, LEAD's paired significance and training plots"
    )
    report.add_argument("--settings", default="{}", help="JSON of the config's evaluate section")
    report.add_argument(
        "--metrics-root", required=True, type=Path,
        help="directory holding {model}/{split}/summary.parquet and per_query.parquet",
    )
    report.add_argument(
        "--log", action="append", default=[], metavar="NAME=PATH",
        help="a training log to plot under NAME (repeat for several)",
    )
    report.add_argument("--splits", required=True, nargs="+", help="evaluation splits")
    report.add_argument(
        "--models", nargs="+",
        help="rows of the table, in order (default: lead.report.DEFAULT_MODELS, i.e. teacher "
        "student-none student-response student-lead)",
    )
    report.add_argument("--out", required=True, type=Path, help="markdown report to write")
    report.add_argument("--plots", required=True, type=Path, help="directory for PNG plots")
    report.set_defaults(run=_report)


def _parse_logs(pairs: list[str]) -> dict[str, Path]:
    logs: dict[str, Path] = {}
    for pair in pairs:
        name, separator, path = pair.partition("=")
        if not separator or not name or not path:
            raise ConfigError(f"--log {pair!r}: expected NAME=PATH")
        if name in logs:
            raise ConfigError(f"--log: name {name!r} given twice")
        logs[name] = Path(path)
    return logs


def _report(args: argparse.Namespace) -> None:
    from lead.config import parse_settings
    from lead.report import DEFAULT_MODELS, build_report

    build_report(
        parse_settings(args.settings), args.metrics_root, _parse_logs(args.log), args.out,
        args.plots, splits=args.splits, models=args.models or DEFAULT_MODELS,
    )
