"""`python -m lead slurm-check -- SNAKEMAKE_ARGS`: will the cluster take every planned job?"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "slurm-check",
        help="before a SLURM run: SLURM tools on PATH, controller up, and every planned job's "
        "request accepted by `sbatch --test-only`",
        description="Example: python -m lead slurm-check -- --workflow-profile "
        "workflow/profiles/slurm --configfile config/msmarco-passage.yaml",
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("."), help="where Snakemake runs (default: here)"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0,
        help="seconds any one SLURM or Snakemake call may take before the check fails",
    )
    parser.add_argument(
        "snakemake_args", nargs=argparse.REMAINDER,
        help="the arguments of the snakemake run to check, after `--`",
    )
    parser.set_defaults(run=_check)


def _check(args: argparse.Namespace) -> None:
    from lead.cluster import check

    snakemake_args = args.snakemake_args
    if snakemake_args[:1] == ["--"]:
        snakemake_args = snakemake_args[1:]
    requests = check(snakemake_args, args.workdir, args.timeout)
    rules = sorted({request.rule for request in requests})
    print(
        f"slurm-check: the cluster accepts all {len(requests)} distinct job requests "
        f"({', '.join(rules) or 'nothing to run'})"
    )
