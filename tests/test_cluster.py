"""`lead slurm-check` (lead.cluster) without a cluster: reading the plan, building the test.

The checks against a live SLURM (refusals, a controller that is down) are in
tests/workflow/test_slurm.py.
"""

from __future__ import annotations

import pytest

from lead import cluster
from lead.errors import ConfigError

DRY_RUN = """\
Building DAG of jobs...
Job stats:
job        count
-------  -------
data           1
distill        2
all            1
total          4


[Sat Nov 28 13:19:55 2026]
rule data:
    output: results/tiny/data/corpus.parquet
    log: results/tiny/logs/data.log
    jobid: 1
    reason: Missing output files: results/tiny/data/corpus.parquet
    resources: tmpdir=/tmp, mem_mb=4000, mem=4 GB, mem_mib=3815, runtime=240

[Sat Nov 28 13:19:55 2026]
rule distill:
    input: results/tiny/models/teacher
    output: results/tiny/models/student-lead
    jobid: 2
    wildcards: method=lead
    threads: 2
    resources: tmpdir=/tmp, gpu=1, mem_mb=16000, mem=16 GB, mem_mib=15259, runtime=1440, \
slurm_partition=gpu, slurm_account=proj-42

[Sat Nov 28 13:19:55 2026]
rule distill:
    input: results/tiny/models/teacher
    output: results/tiny/models/student-none
    jobid: 3
    wildcards: method=none
    threads: 2
    resources: tmpdir=/tmp, gpu=1, mem_mb=16000, mem=16 GB, mem_mib=15259, runtime=1440, \
slurm_partition=gpu, slurm_account=proj-42

[Sat Nov 28 13:19:55 2026]
localrule all:
    input: results/tiny/report.md
    jobid: 0
    resources: tmpdir=/tmp
Job stats:
"""


def test_dry_run_gives_one_request_per_distinct_cluster_job():
    requests = cluster.parse_dry_run(DRY_RUN)
    assert requests == [
        cluster.JobRequest("data", 1, (("mem_mb", 4000), ("runtime", 240))),
        cluster.JobRequest(
            "distill",
            2,
            (
                ("gpu", 1),
                ("mem_mb", 16000),
                ("runtime", 1440),
                ("slurm_account", "proj-42"),
                ("slurm_partition", "gpu"),
            ),
        ),
    ]


def test_a_rule_whose_job_shows_no_resources_is_an_error_not_a_pass():
    """A job printed as its one-line message alone (no rule box) cannot be checked."""
    hidden = DRY_RUN.replace("rule data:\n", "data: collection main (trec)\n", 1)
    with pytest.raises(ConfigError, match=r"no resources for rule\(s\) data"):
        cluster.parse_dry_run(hidden)


def test_the_test_submission_carries_what_the_plugin_would_submit():
    _, distill = cluster.parse_dry_run(DRY_RUN)
    args = cluster.sbatch_test_only_args(distill)
    assert args[:2] == ["sbatch", "--test-only"]
    assert args[-2:] == ["--wrap", "true"]
    for expected in (["--gpus=1"], ["--cpus-per-task=2"], ["--mem", "16000"], ["-t", "1440"],
                     ["-p", "gpu"], ["-A", "proj-42"]):
        assert any(args[i:i + len(expected)] == expected for i in range(len(args))), expected


def test_missing_slurm_tools_are_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="SLURM client tools not found on PATH: sbatch, squeue"):
        cluster.require_tools()
