"""Pre-flight check for a SLURM run: fail in seconds, before the first job is submitted.

Without it, a profile that asks the cluster for something it cannot give (a GPU where there
is none, more memory than any node has) fails only when that job's turn comes, possibly after
hours of upstream jobs; a login node without SLURM's tools fails with a confusing message;
a controller that is down costs each submission its connect retries. The check asks the
cluster itself: `scontrol ping`, then `sbatch --test-only` with the very arguments the slurm
executor plugin builds for each planned job (resources as Snakemake's dry run resolves them).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lead.errors import ConfigError

SLURM_TOOLS = ("sbatch", "squeue", "sinfo", "scontrol")
# Resources Snakemake adds by itself; they never reach sbatch.
_INTERNAL = {"tmpdir", "mem", "mem_mib", "disk", "disk_mib", "disk_mb", "_cores", "_nodes"}


@dataclass(frozen=True)
class JobRequest:
    """What one planned job asks the cluster for, as Snakemake resolved it."""

    rule: str
    threads: int
    resources: tuple[tuple[str, Any], ...]

    def describe(self) -> str:
        asked = ", ".join(f"{name}={value}" for name, value in self.resources)
        return f"rule {self.rule} (threads={self.threads}{', ' + asked if asked else ''})"


class _Resources(SimpleNamespace):
    """The `job.resources` interface the plugin's submit-string builder reads."""

    def get(self, name: str, default: Any = None) -> Any:
        return self.__dict__.get(name, default)


def require_tools(tools: Sequence[str] = SLURM_TOOLS) -> None:
    """The SLURM client tools the executor calls must be on PATH."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise ConfigError(
            f"SLURM client tools not found on PATH: {', '.join(missing)}; run Snakemake with "
            "the slurm profile on a machine that can submit jobs (a login node), or run "
            "without the slurm profile"
        )


def ping_controller(timeout: float) -> None:
    """slurmctld must answer; `scontrol ping` itself returns at once when it is down."""
    result = _run(["scontrol", "ping"], timeout)
    if result.returncode != 0 or "is UP" not in result.stdout:
        answer = " ".join((result.stdout + result.stderr).split()) or f"exit {result.returncode}"
        raise ConfigError(f"the SLURM controller does not answer (scontrol ping: {answer})")


def parse_dry_run(text: str) -> list[JobRequest]:
    """The distinct requests of the cluster jobs in `snakemake --dry-run` output.

    Every rule the job stats count must show its box (rule name, threads, resources): a rule
    whose one-line message hides it would otherwise go unchecked."""
    requests: dict[JobRequest, None] = {}
    seen = set()
    for block in re.split(r"\n(?=\[[^\]\n]+\]\n)", text):
        head = re.search(r"^(localrule|rule) (\S+):$", block, re.MULTILINE)
        if head:
            seen.add(head.group(2))
        if not head or head.group(1) == "localrule":
            continue
        threads = re.search(r"^\s+threads: (\d+)$", block, re.MULTILINE)
        resources = re.search(r"^\s+resources: (.*)$", block, re.MULTILINE)
        requests[
            JobRequest(
                rule=head.group(2),
                threads=int(threads.group(1)) if threads else 1,
                resources=_parse_resources(resources.group(1) if resources else ""),
            )
        ] = None
    stats = text.split("Job stats:", 1)[1].split("\n\n", 1)[0] if "Job stats:" in text else ""
    counted = {rule for rule, _ in re.findall(r"^(\w+)\s+(\d+)$", stats, re.MULTILINE)}
    hidden = sorted(counted - seen - {"total"})
    if hidden:
        raise ConfigError(f"the dry run shows no resources for rule(s) {', '.join(hidden)}: "
                          "their jobs print only a message (run with LEAD_JOB_BOXES=1)")
    return list(requests)


def _parse_resources(line: str) -> tuple[tuple[str, Any], ...]:
    """`name=value` pairs, less Snakemake's own and those that depend on inputs a dry run
    has not made yet (`<TBD>`; Snakemake's default mem_mb grows with the input size)."""
    pairs = []
    for item in re.split(r", (?=\w+=)", line.strip()):
        name, _, value = item.partition("=")
        if name and name not in _INTERNAL and value != "<TBD>":
            pairs.append((name, int(value) if value.isdigit() else value))
    return tuple(sorted(pairs))


def sbatch_test_only_args(request: JobRequest) -> list[str]:
    """`sbatch --test-only` with the options the slurm plugin would submit this job with."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    resources = dict(request.resources)
    job = SimpleNamespace(
        name=request.rule, threads=request.threads, resources=_Resources(**resources)
    )
    params = {
        "run_uuid": "lead-slurm-check",
        "slurm_logfile": "/dev/null",
        "comment_str": f"rule_{request.rule}",
        "account": _option("-A", resources.get("slurm_account")),
        "partition": _option("-p", resources.get("slurm_partition")),
        "workdir": None,
    }
    call = get_submit_command(job, params) + set_gres_string(job)
    args = shlex.split(call)
    return [args[0], "--test-only", *args[1:], "--wrap", "true"]


def _option(flag: str, value: Any) -> str:
    return f"{flag} {shlex.quote(str(value))}" if value is not None else ""


def refusal(request: JobRequest, timeout: float) -> str | None:
    """SLURM's own verdict on one request: None when it could run, else sbatch's reason."""
    result = _run(sbatch_test_only_args(request), timeout)
    if result.returncode == 0:
        return None
    return " ".join(line.strip() for line in result.stderr.splitlines() if line.strip())


def planned_requests(snakemake_args: Sequence[str], cwd: Path, timeout: float) -> list[JobRequest]:
    """The requests of every job the given Snakemake invocation would run now.

    A dry run executes nothing, so Snakemake caps threads at its local cores (1 unless given);
    `--cores` far above any rule's threads lets each job show the threads it will submit with.
    """
    command = [sys.executable, "-m", "snakemake", "--dry-run", "--cores", "4096", *snakemake_args]
    result = _run(command, timeout, cwd=cwd, env={**os.environ, "LEAD_JOB_BOXES": "1"})
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise ConfigError(f"snakemake --dry-run {shlex.join(snakemake_args)} failed:\n{tail}")
    return parse_dry_run(result.stdout)


def check(snakemake_args: Sequence[str], cwd: Path, timeout: float = 60.0) -> list[JobRequest]:
    """Tools, controller, then every planned request; one ConfigError lists every refusal."""
    require_tools()
    ping_controller(timeout)
    requests = planned_requests(snakemake_args, cwd, timeout)
    refusals = {
        request: reason
        for request in requests
        if (reason := refusal(request, timeout)) is not None
    }
    if refusals:
        lines = [f"  {request.describe()}: {reason}" for request, reason in refusals.items()]
        raise ConfigError(
            "the cluster cannot run these jobs as requested (sbatch --test-only):\n"
            + "\n".join(lines)
            + "\nlower the request in the profile (set-resources) or pick a partition that has it"
        )
    return requests


def _run(
    command: Sequence[str], timeout: float, cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout, cwd=cwd,
            stdin=subprocess.DEVNULL, env=env,
        )
    except subprocess.TimeoutExpired as err:
        raise ConfigError(f"`{shlex.join(command)}` did not answer within {timeout:.0f} s") from err
