"""Before a SLURM run: SLURM tools on PATH, controller up, and every planned job's request
accepted by `sbatch --test-only`. Example: python -m lead slurm-check -- --workflow-profile
slurm --configfile config/msmarco-passage.yaml"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "check that a SLURM cluster will take every planned job"


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> None:
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
