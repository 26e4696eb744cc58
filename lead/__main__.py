"""`python -m lead <stage> ...`: every pipeline stage, as the Snakemake rules call it.

A rule runs the stage of its name (`encode_corpus` runs `encode`, `negatives_mined` runs
`negatives`): the stage is the longest entry of STAGES whose name, with `-` as `_`, starts the
rule's name. User errors are one line (exit status 2); --debug shows tracebacks.
"""

from __future__ import annotations

import argparse
import itertools
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


class _Parser(argparse.ArgumentParser):
    """argparse, with its refusals in lead's one-line form (`lead STAGE: error: ...`)."""

    def error(self, message: str) -> None:
        stage = self.prog.removeprefix("python -m lead").strip() or "lead"
        prefix = "lead" if stage == "lead" else f"lead {stage}"
        self.exit(2, f"{prefix}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m lead", description=__doc__.split("\n\n")[0])
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

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # --help (0), or a refused argument (2, one line printed)
        return exit.code
    from lead.io import claim_output  # after --help, which then stays fast
    logs.setup(args.debug)
    module = STAGES[args.stage]
    outputs = {name: kind for name, kind in getattr(module, "OUTPUTS", {}).items()
               if getattr(args, name, None) is not None}
    inputs = input_paths(args, outputs)
    timer = logs.StageTimer(args.stage, inputs)
    try:
        _distinct(args, outputs)
        for name, kind in outputs.items():
            claim_output(getattr(args, name), args.stage, folder=kind == "folder",
                         inputs=list(inputs.values()))
        module.run(args)
    except LeadError as err:
        print(f"lead {args.stage}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # one line for whatever a library raises; --debug shows it whole
        if args.debug:
            raise
        print(f"lead {args.stage}: error: {type(err).__name__}: {one_line(err)} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    timer.done()
    return 0


def _distinct(args: argparse.Namespace, outputs: dict[str, str]) -> None:
    """Refuse two outputs of one command at the same path, or one inside the other: each
    would replace or delete the other (a model folder that is also the checkpoint folder is
    removed with the checkpoints; a run and its TREC copy would be one file)."""
    from lead.errors import DataError

    paths = {name: Path(getattr(args, name)).resolve() for name in outputs}
    for first, second in itertools.combinations(paths, 2):
        a, b = paths[first], paths[second]
        if a == b:
            problem = f"{_flag(first)} and {_flag(second)} are the same path"
        elif a.is_relative_to(b) or b.is_relative_to(a):
            relation = "is inside" if a.is_relative_to(b) else "holds"
            problem = f"{_flag(first)} {relation} {_flag(second)} ({getattr(args, second)})"
        else:
            continue
        raise DataError(getattr(args, first), None,
                        f"{problem}: give each output a path of its own")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def input_paths(args: argparse.Namespace, outputs: dict[str, str]) -> dict[str, Path]:
    """The paths a stage reads, named as in its start line: every path argument that is not
    an output, each of a list (`name[i]`), and text arguments (or NAME=PATH values) that name
    an existing path with a `/` in it (a method name never counts, a model folder does)."""
    found: dict[str, Path] = {}
    for name, value in vars(args).items():
        if name in outputs or name in ("stage", "debug"):
            continue
        values = value if isinstance(value, list) else [value]
        for index, item in enumerate(values):
            path = None
            if isinstance(item, Path):
                path = item
            elif isinstance(item, str) and "/" in item and not item.startswith(("{", "[")):
                candidate = Path(item.partition("=")[2] or item)
                try:
                    path = candidate if candidate.exists() else None
                except (OSError, ValueError):  # not a name a path can have
                    path = None
            if path is not None:
                found[name if len(values) == 1 else f"{name}[{index}]"] = path
    return found


if __name__ == "__main__":
    sys.exit(main())
