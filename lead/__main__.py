"""`python -m lead <stage> ...`: every pipeline stage, as the Snakemake rules call it.

A rule runs the stage of its name (`encode_corpus` runs `encode`, `negatives_mined` runs
`negatives`): the stage is the longest entry of STAGES whose name, with `-` as `_`, starts the
rule's name. User errors are one line (exit status 2); --debug shows tracebacks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lead.cli import (
    cache_teacher,
    check_config,
    compare,
    data,
    distill,
    download,
    encode,
    evaluate,
    evaluate_model,
    export_trec,
    init_model,
    negatives,
    rehearsal,
    report,
    search,
    slurm_check,
    tokenize,
    train_tokenizer,
    warmup,
)
from lead.errors import LeadError, one_line

STAGES = {
    "download": download,
    "data": data,
    "train-tokenizer": train_tokenizer,
    "init-model": init_model,
    "tokenize": tokenize,
    "negatives": negatives,
    "warmup": warmup,
    "cache-teacher": cache_teacher,
    "distill": distill,
    "encode": encode,
    "search": search,
    "evaluate": evaluate,
    "export-trec": export_trec,
    "compare": compare,
    "report": report,
    "evaluate-model": evaluate_model,
    "check-config": check_config,
    "slurm-check": slurm_check,
    "rehearsal": rehearsal,
}


def stage_of_rule(rule: str) -> str | None:
    """The stage a rule runs: the longest stage name that, with `-` as `_`, starts it."""
    matches = [name for name in STAGES
               if rule == name.replace("-", "_") or rule.startswith(name.replace("-", "_") + "_")]
    return max(matches, key=len) if matches else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    subparsers = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, module in STAGES.items():
        stage = subparsers.add_parser(name, help=module.HELP, description=module.__doc__)
        stage.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                           help="show tracebacks and debug logs")
        module.add_arguments(stage)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one stage; the exit status is 0, 2 for a user error, 1 for anything else."""
    from lead import logs

    args = build_parser().parse_args(argv)
    logs.setup(args.debug)
    inputs = {name: value for name, value in vars(args).items()
              if isinstance(value, Path) and name not in ("out", "log", "checkpoint_dir")}
    timer = logs.StageTimer(args.stage, inputs)
    try:
        STAGES[args.stage].run(args)
    except LeadError as err:
        print(f"lead {args.stage}: error: {err}", file=sys.stderr)
        return 2
    except (OSError, MemoryError, RuntimeError, ValueError) as err:
        if args.debug:
            raise
        print(f"lead {args.stage}: error: {type(err).__name__}: {one_line(err)} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    timer.done()
    return 0


if __name__ == "__main__":
    sys.exit(main())
