"""The MS MARCO passage reproduction, rehearsed end to end in one command: the real configs'
sizes, depths, shards and stages, on generated data and tiny models (config/rehearsal.yaml).

1. Generates the MS MARCO-shaped collection once into resources/rehearsal/<passages>/
   (`python -m lead rehearsal generate`; an existing folder of the same size is reused).
2. Serves it on 127.0.0.1:8765, the URLs config/rehearsal.yaml points at, for the run.
3. Runs Snakemake on config/rehearsal.yaml (layered on config/msmarco-passage.yaml) and the
   collection's checksums.yaml, with the default profile or through profiles/slurm
   (`--profile slurm`: on the single-node test cluster of tests/slurm/cluster.py, which it
   starts; needs root). Each size and profile runs under its own name (rehearsal,
   rehearsal-slurm, rehearsal-20000, ...).
4. Writes the stage table (wall, CPU, peak RSS, disk written; benchmarks/stage_table.py) to
   results/<name>/stages.md and prints it.

    .venv/bin/python benchmarks/rehearsal.py                           # full size, locally
    .venv/bin/python benchmarks/rehearsal.py --profile slurm           # through SLURM
    .venv/bin/python benchmarks/rehearsal.py --passages 20000 -- -n    # extra snakemake args

Snakemake resumes an interrupted run where it stopped: run the same command again.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PORT = 8765  # config/rehearsal.yaml's URLs
FULL = "full"


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", default=FULL,
                        help="'full' (8,841,823, MS MARCO's counts) or a smaller collection")
    parser.add_argument("--profile", choices=["default", "slurm"], default="default")
    parser.add_argument("--data", type=Path,
                        help="the generated collection (default: resources/rehearsal/<passages>)")
    parser.add_argument("--workdir", type=Path, default=REPO,
                        help="where Snakemake runs and writes results/ (default: the checkout)")
    parser.add_argument("snakemake", nargs=argparse.REMAINDER,
                        help="more snakemake arguments, after `--`")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from lead.data import rehearsal

    args = arguments(argv)
    passages = rehearsal.parse_passages(args.passages)
    size = FULL if args.passages == FULL else str(passages)
    data = (args.data or REPO / "resources" / "rehearsal" / size).resolve()
    if not (data / "checksums.yaml").is_file():
        print(f"generating the {size} collection into {data}", flush=True)
        rehearsal.generate(data, args.passages)
    # One results folder per size and profile: a SLURM run never resumes a local one's jobs.
    name = "rehearsal" + ("" if size == FULL else f"-{size}") + (
        "-slurm" if args.profile == "slurm" else "")
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--configfile", str(REPO / "config" / "rehearsal.yaml"), str(data / "checksums.yaml"),
        "--config", f"name={name}",
    ]
    env = dict(os.environ)
    if args.profile == "slurm":
        cluster = load(REPO / "tests" / "slurm" / "cluster.py", "slurm_test_cluster")
        cluster.start()
        env["SLURM_CONF"] = str(cluster.CONF)
        command += ["--profile", str(REPO / "profiles" / "slurm"),
                    "--profile", str(REPO / "tests" / "slurm" / "profile"),
                    "--workflow-profile", "none"]
    extra = args.snakemake[1:] if args.snakemake[:1] == ["--"] else args.snakemake
    with rehearsal.serve(data, "127.0.0.1", PORT) as server:
        print(f"serving {data} at {server.url}/; running: {' '.join(command + extra)}",
              flush=True)
        status = subprocess.run(command + extra, cwd=args.workdir, env=env).returncode
    results = args.workdir / "results" / name
    if status == 0 and not {"-n", "--dry-run", "--unlock"} & set(extra):
        stages = load(REPO / "benchmarks" / "stage_table.py", "stage_table")
        table = stages.table(stages.read_jobs(results), per_job=True)
        (results / "stages.md").write_text(table + "\n")
        print(table)
    return status


if __name__ == "__main__":
    sys.exit(main())
