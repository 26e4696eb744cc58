"""Turn a run's Snakemake benchmark files into a table of every stage: wall time, CPU time, peak
RSS and disk written.

Every rule writes `results/<name>/benchmarks/<stage>/<job>.tsv` (Snakemake's `benchmark:`
directive: wall seconds, CPU seconds, the largest RSS sampled and the bytes written, of the job
and its children) beside its log `results/<name>/logs/<stage>/<job>.log`. Snakemake samples
memory every 30 s, so a short peak can fall between samples; the stage's own end line ("done
... peak memory N MB", the process's ru_maxrss) is exact, and the table takes the larger of
the two. Disk written is the benchmark's count of bytes the job's processes wrote to storage.

    python benchmarks/stage_table.py results/rehearsal                # markdown to stdout
    python benchmarks/stage_table.py results/rehearsal --jobs         # one row per job too
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

PEAK = re.compile(r"\bdone \S+ in [\d.]+ s, peak memory (\d+) MB")


@dataclass
class Job:
    stage: str  # the folder under benchmarks/ (the rule's family)
    name: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    written_mb: float


def read_jobs(results: Path) -> list[Job]:
    """Every benchmark file of a run: the main collection's and each collection's."""
    jobs = []
    for folder in sorted(p for p in results.rglob("benchmarks") if p.is_dir()):
        for tsv in sorted(folder.rglob("*.tsv")):
            with tsv.open() as handle:
                rows = list(csv.DictReader(handle, delimiter="\t"))
            if not rows:
                continue
            row, relative = rows[-1], tsv.relative_to(folder)
            peak = _number(row.get("max_rss"))
            log = (folder.parent / "logs" / relative).with_suffix(".log")
            if log.is_file():
                found = PEAK.findall(log.read_text(errors="replace"))
                if found:
                    peak = max(peak, float(found[-1]))
            stage = relative.parts[0] if len(relative.parts) > 1 else relative.stem
            jobs.append(Job(stage, str(relative.with_suffix("")), _number(row.get("s")),
                            _number(row.get("cpu_time")), peak, _number(row.get("io_out"))))
    return jobs


def _number(text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return 0.0


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def table(jobs: list[Job], per_job: bool) -> str:
    by_stage: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        by_stage[job.stage].append(job)
    lines = ["| stage | jobs | wall (sum) | wall (longest job) | CPU time | peak RSS (largest "
             "job) | disk written |", "|---|---:|---:|---:|---:|---:|---:|"]
    for stage, group in sorted(by_stage.items(), key=lambda item: -sum(j.wall_s for j in item[1])):
        lines.append(
            f"| {stage} | {len(group)} | {duration(sum(j.wall_s for j in group))} "
            f"| {duration(max(j.wall_s for j in group))} "
            f"| {duration(sum(j.cpu_s for j in group))} "
            f"| {max(j.peak_rss_mb for j in group) / 1024:.2f} GB "
            f"| {sum(j.written_mb for j in group) / 1024:.2f} GB |"
        )
    lines.append(
        f"| **all** | {len(jobs)} | {duration(sum(j.wall_s for j in jobs))} "
        f"| {duration(max((j.wall_s for j in jobs), default=0))} "
        f"| {duration(sum(j.cpu_s for j in jobs))} "
        f"| {max((j.peak_rss_mb for j in jobs), default=0) / 1024:.2f} GB "
        f"| {sum(j.written_mb for j in jobs) / 1024:.2f} GB |"
    )
    if per_job:
        lines += ["", "| job | wall | CPU time | peak RSS | disk written |",
                  "|---|---:|---:|---:|---:|"]
        for job in sorted(jobs, key=lambda j: -j.wall_s):
            lines.append(f"| {job.name} | {duration(job.wall_s)} | {duration(job.cpu_s)} "
                         f"| {job.peak_rss_mb:.0f} MB | {job.written_mb:.0f} MB |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a run's results folder, results/<name>")
    parser.add_argument("--jobs", action="store_true", help="also one row per job")
    args = parser.parse_args()
    jobs = read_jobs(args.results)
    if not jobs:
        raise SystemExit(f"{args.results}: no benchmark files under benchmarks/")
    print(table(jobs, args.jobs))


if __name__ == "__main__":
    main()
