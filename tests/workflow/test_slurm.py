"""The slurm profile on a real SLURM: one node on this machine (tests/slurm/cluster.py).

Every Snakemake job of the tiny config goes through sbatch and SLURM's own records (squeue with
MinJobAge, scontrol) must show it COMPLETED with the threads and memory it asked for; the
outputs must equal a local run's. The real profile's GPU rules must reach sbatch with their
GPU request. Failures (a failing job, a request the cluster cannot give, no sbatch, a
controller that is down) must end with a clear message in bounded time.

Needs root (it installs and starts SLURM): skipped otherwise; under CI=true a cluster that
cannot be started fails the tests instead of skipping them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from repo import REPO, TESTS
from workflow_copy import copy_workflow

from lead import cluster as preflight

pytestmark = pytest.mark.slurm

SLURM_PROFILE = REPO / "profiles" / "slurm"
TEST_PROFILE = TESTS / "slurm" / "profile"
# The tiny config with one student, its `frozen` variant (LEAD from the teacher's layer
# cache): every rule still runs, in fewer jobs, and the two-CPU test node gets through it
# within the suite's time.
TINY = Path("tiny-lead.yaml")
RESULTS = Path("results") / "tiny"
# The real profile first, the test cluster's override on top (it replaces whole top-level keys).
ON_TEST_CLUSTER = [
    "--profile", str(SLURM_PROFILE), "--profile", str(TEST_PROFILE), "--workflow-profile", "none",
]
SLURM_CLIENT_TOOLS = {
    "sacct", "sacctmgr", "salloc", "sattach", "sbatch", "sbcast", "scancel", "scontrol", "sdiag",
    "sinfo", "sprio", "squeue", "sreport", "srun", "sshare", "sstat", "strigger",
}
RUN_TIMEOUT_S = 1200  # a guard against a hung run, not a time the run must beat


def _load_cluster_module():
    spec = importlib.util.spec_from_file_location(
        "slurm_test_cluster", TESTS / "slurm" / "cluster.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


cluster = _load_cluster_module()


@pytest.fixture(scope="session")
def slurm_node():
    """A running single-node SLURM for the session; stopped afterwards if we started it."""
    if os.geteuid() != 0:
        pytest.skip("a real SLURM needs root (apt-get install, slurmctld, slurmd)")
    was_running = cluster.CONF.exists() and cluster.node_state(cluster.this_node()) == "idle"
    try:
        node = cluster.start()
    except cluster.ClusterError as err:
        message = f"could not start the SLURM test cluster: {err}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.CONF)
    yield node
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous
    if not was_running:
        cluster.stop()


def tiny_workflow(dest: Path) -> Path:
    """The workflow with the tiny config reduced to one distillation method."""
    return copy_workflow(dest, str(TINY), distillation={"methods": []})


@dataclass
class Run:
    workdir: Path
    result: subprocess.CompletedProcess
    wall_s: float

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr


def snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: float = RUN_TIMEOUT_S):
    """One bounded Snakemake run on the tiny config."""
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--configfile", str(TINY), *args],
        cwd=workdir, env=env or dict(os.environ), capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )
    return Run(workdir, result, time.monotonic() - start)


def require_success(run: Run) -> Run:
    assert run.result.returncode == 0, run.output[-6000:]
    return run


def slurm_jobs(run_uuid: str) -> dict[str, dict[str, str]]:
    """SLURM's record of every job of one Snakemake run (the plugin names jobs by run id)."""
    listing = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--name", run_uuid, "--format=%i"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()
    return {job_id: job_record(job_id) for job_id in listing}


def job_record(job_id: str) -> dict[str, str]:
    """`scontrol show job` as a dict (JobState, ExitCode, CPUs/Task, MinMemoryNode, ...)."""
    record = subprocess.run(
        ["scontrol", "--oneliner", "show", "job", job_id],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    return dict(re.findall(r"(\S+?)=(\S*)", record))


def megabytes(value: str) -> int:
    """scontrol's memory figure (`2000M`, `2G`) in MB."""
    return int(float(value[:-1]) * {"M": 1, "G": 1024, "T": 1024**2}[value[-1]])


def submissions(output: str) -> dict[str, str]:
    """SLURM job id -> the plugin's log file, as Snakemake reported each submission."""
    return dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", output))


def job_stats(output: str) -> Counter:
    """Rule -> jobs, from the first `Job stats` table Snakemake prints."""
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)
    return Counter({rule: int(count) for rule, count in rows if rule != "total"})


def parquet_files(workdir: Path, *parts: str) -> dict[str, bytes]:
    root = workdir / RESULTS
    return {
        str(path.relative_to(root)): path.read_bytes()
        for part in parts
        for path in sorted((root / part).rglob("*.parquet"))
    }


@dataclass
class Comparison:
    local: Run
    slurm: Run
    run_uuid: str


@pytest.fixture(scope="module")
def tiny_runs(slurm_node, tmp_path_factory) -> Comparison:
    """The tiny config run locally and on the SLURM test cluster, from fresh copies, side by
    side: the SLURM run spends most of its time waiting on the plugin's status polls.

    The local run takes the test cluster's thread counts: Snakemake hands a job's threads to
    torch (OMP_NUM_THREADS), and the split of float reductions across threads changes the
    trained weights' last bits, so only runs with equal threads can be byte-identical.
    """
    threads = yaml.safe_load((TEST_PROFILE / "config.yaml").read_text())["set-threads"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        slurm_run = pool.submit(  # with each job's box: the rule, threads and resources
            snakemake, tiny_workflow(tmp_path_factory.mktemp("slurm")), *ON_TEST_CLUSTER,
            env={**os.environ, "LEAD_JOB_BOXES": "1"},
        )
        local_run = pool.submit(
            snakemake, tiny_workflow(tmp_path_factory.mktemp("local")), "--cores", "2",
            "--set-threads", *(f"{rule}={n}" for rule, n in threads.items()),
        )
        local, slurm = require_success(local_run.result()), require_success(slurm_run.result())
    run_uuid = re.search(r"SLURM run ID: (\S+)", slurm.output).group(1)
    print(f"\ntiny config wall time: local {local.wall_s:.1f} s, SLURM {slurm.wall_s:.1f} s")
    return Comparison(local, slurm, run_uuid)


def test_test_cluster_runs_batch_jobs_side_by_side(slurm_node):
    """The cluster script's node takes sbatch jobs, runs 1-CPU jobs at once, and keeps
    finished jobs visible to squeue/scontrol (the plugin's status source here)."""
    assert cluster.start().name == slurm_node.name  # idempotent: already up, returns at once
    job_ids = [
        subprocess.run(
            ["sbatch", "--parsable", "--cpus-per-task=1", "--mem=100", "--output=/dev/null",
             "--wrap", "sleep 2"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()
        for _ in range(min(2, slurm_node.cpus))
    ]
    deadline = time.monotonic() + 120  # a guard: the scheduler retries every 2 s
    states = {}
    while time.monotonic() < deadline:
        states = {job_id: job_record(job_id) for job_id in job_ids}
        if all(record["JobState"] == "COMPLETED" for record in states.values()):
            break
        time.sleep(0.5)
    assert [record["JobState"] for record in states.values()] == ["COMPLETED"] * len(job_ids), (
        {job_id: (r["JobState"], r["Reason"]) for job_id, r in states.items()},
        cluster.node_state(slurm_node),
        cluster.log_tails(),
    )
    starts = {record["StartTime"] for record in states.values()}
    assert len(starts) == 1, f"the 1-CPU jobs did not run side by side: {starts}"


@pytest.mark.slow
def test_every_job_but_the_local_rules_is_an_sbatch_job_that_completed(tiny_runs):
    run = tiny_runs.slurm
    submitted = submissions(run.output)
    records = slurm_jobs(tiny_runs.run_uuid)
    print("SLURM jobs:", {job_id: (r["Comment"], r["JobState"]) for job_id, r in records.items()})
    assert set(records) == set(submitted)
    assert {job_id: r["JobState"] for job_id, r in records.items()} == dict.fromkeys(
        submitted, "COMPLETED"
    )
    assert {r["ExitCode"] for r in records.values()} == {"0:0"}
    # One sbatch job per Snakemake job: the plugin's comment names each job's rule.
    per_rule = Counter(r["Comment"].removeprefix("rule_").split("_wildcards_")[0]
                       for r in records.values())
    # The report is a local rule: seconds of work, on the node Snakemake runs on.
    local_rules = set(re.findall(r"^localrule (\w+):$", run.output, re.MULTILINE))
    assert local_rules == {"all", "report"}
    expected = job_stats(run.output)
    del expected["all"], expected["report"]
    assert per_rule == expected
    # Each job got the threads and memory it asked for.
    requests = {
        request.rule: request
        for request in preflight.parse_dry_run(run.output)
    }
    for record in records.values():
        rule = record["Comment"].removeprefix("rule_").split("_wildcards_")[0]
        resources = dict(requests[rule].resources)
        assert int(record["CPUs/Task"]) == requests[rule].threads, (rule, record)
        assert megabytes(record["MinMemoryNode"]) == resources["mem_mb"], (rule, record)
        assert record["Partition"] == "debug"
        if rule.startswith("search"):
            # Computed from the embeddings once they exist (tiny: the least limit, 1 hour).
            assert record["TimeLimit"] == "01:00:00", (rule, record)


@pytest.mark.slow
def test_slurm_outputs_equal_local_outputs(tiny_runs):
    local = parquet_files(tiny_runs.local.workdir, "metrics", "runs")
    slurm = parquet_files(tiny_runs.slurm.workdir, "metrics", "runs")
    assert local, "the local run wrote no metrics or runs"
    assert sorted(slurm) == sorted(local)
    differing = [name for name in local if local[name] != slurm[name]]
    assert not differing, f"differ between the local and the SLURM run: {differing}"


def gpu_rules() -> dict[str, int]:
    """The rules the real profile gives a GPU, with the GPUs it asks for."""
    profile = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())
    return {
        rule: resources["gpu"]
        for rule, resources in profile["set-resources"].items()
        if resources.get("gpu")
    }


def test_test_override_takes_the_gpu_off_every_gpu_rule():
    """The override replaces set-resources wholesale: it must cover each GPU rule."""
    override = yaml.safe_load((TEST_PROFILE / "config.yaml").read_text())["set-resources"]
    assert set(gpu_rules()) <= set(override)
    assert all(override[rule]["gpu"] == 0 for rule in gpu_rules())


def recording_sbatch(bin_dir: Path, record: Path) -> dict:
    """An env whose `sbatch` writes its argv as JSON to a file of its own in the folder
    `record` (concurrent calls never share a file), then runs the real sbatch."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    record.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "sbatch"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"call=$(mktemp {record}/call-XXXXXXXX)\n"
        f"{sys.executable} -c 'import json, sys; print(json.dumps(sys.argv[2:]), "
        "file=open(sys.argv[1], \"w\"))' \"$call\" \"$@\"\n"
        f"exec {shutil.which('sbatch')} \"$@\"\n"
    )
    wrapper.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def recorded_calls(record: Path) -> list[list[str]]:
    return [json.loads(path.read_text()) for path in sorted(record.glob("call-*"))]


GPU_JOB_OPTIONS = ("--gpus", "--cpus-per-task", "--mem", "-t")


def sbatch_option(argv: list[str], name: str) -> str | None:
    """The value of `--name=V`, `--name V` or `-n V` in an sbatch argv."""
    for index, arg in enumerate(argv):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name:
            return argv[index + 1]
    return None


@pytest.mark.slow
def test_gpu_rules_are_submitted_with_their_gpu_request(tiny_runs, tmp_path):
    """The real profile (only the test cluster's account/status settings on the command line)
    against the live cluster, each GPU rule forced to rerun on the local run's results: a
    wrapper records the plugin's sbatch call and hands it to the real sbatch, which refuses
    the GPU on this GPU-less node - at submission, with the call in Snakemake's report."""
    workdir = tmp_path / "gpu"
    shutil.copytree(tiny_runs.local.workdir, workdir)
    record = tmp_path / "sbatch-calls"
    env = recording_sbatch(tmp_path / "bin", record)
    real_profile = [
        "--profile", str(SLURM_PROFILE), "--workflow-profile", "none", "--slurm-no-account",
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
    ]
    requests = {
        r.rule: r for r in preflight.planned_requests(
            [*real_profile, "--configfile", str(TINY), "--forceall"], workdir, 120
        )
    }
    # Downstream rules first, so that one rule's failed (and cleaned) outputs never take
    # another's inputs away.
    for rule in ("encode_queries", "encode_corpus", "distill", "cache_teacher_corpus",
                 "cache_teacher_queries", "warmup"):
        assert rule in gpu_rules()
        run = snakemake(workdir, *real_profile, "--forcerun", rule, "--until", rule,
                        env=env, timeout=600)
        assert run.result.returncode != 0
        assert "Invalid generic resource (gres) specification" in run.output, run.output[-3000:]
        assert "sbatch call:" in run.output
    calls = recorded_calls(record)
    submitted_rules = set()
    for argv in calls:
        rule = sbatch_option(argv, "--comment").removeprefix("rule_").split("_wildcards_")[0]
        submitted_rules.add(rule)
        print("sbatch", rule, *(f"{o}={sbatch_option(argv, o)}" for o in GPU_JOB_OPTIONS))
        resources = dict(requests[rule].resources)
        assert sbatch_option(argv, "--gpus") == str(gpu_rules()[rule]), argv
        assert sbatch_option(argv, "--cpus-per-task") == str(requests[rule].threads), argv
        assert sbatch_option(argv, "--mem") == str(resources["mem_mb"]), argv
        assert sbatch_option(argv, "-t") == str(resources["runtime"]), argv
    assert submitted_rules == set(gpu_rules())


@pytest.mark.slow
def test_failing_job_is_reported_with_its_logs_and_leaves_no_output(slurm_node, tmp_path):
    """A malformed query file fails the data job on the cluster: Snakemake names the job's
    SLURM state and both logs (the rule's, with the DataError, and SLURM's), and nothing
    of the job's outputs is left behind."""
    workdir = tiny_workflow(tmp_path)
    queries = workdir / "tests" / "fixtures" / "tiny" / "queries.test.tsv"
    bad_line = len(queries.read_text().splitlines()) + 1
    with queries.open("a") as file:
        file.write("a query line without its id\n")
    run = snakemake(workdir, *ON_TEST_CLUSTER, "data", timeout=600)
    assert run.result.returncode != 0
    (job_id, slurm_log), = submissions(run.output).items()
    assert slurm_jobs(re.search(r"SLURM run ID: (\S+)", run.output).group(1))[job_id][
        "JobState"] == "FAILED"
    assert "Error in rule data" in run.output
    assert f"SLURM-job '{job_id}' failed, SLURM status is: 'FAILED'" in run.output
    rule_log = RESULTS / "logs" / "data" / "main.log"
    assert str(rule_log) in run.output and slurm_log in run.output
    assert f"queries.test.tsv:{bad_line}: expected 2 tab-separated columns" in (
        workdir / rule_log
    ).read_text()
    assert Path(slurm_log).exists()
    leftovers = [p for p in (workdir / RESULTS / "data").rglob("*") if p.is_file()]
    assert not leftovers, f"the failed job left files behind: {leftovers}"


def without_slurm_tools(tmp_path: Path) -> dict:
    """An env whose PATH has every usual command but none of SLURM's client tools."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tools = {}
    for directory in ("/bin", "/usr/bin", "/usr/local/bin"):  # the last wins, as first on PATH
        tools |= {tool.name: tool for tool in Path(directory).iterdir() if tool.is_file()}
    for name, tool in tools.items():
        if name not in SLURM_CLIENT_TOOLS:
            (bin_dir / name).symlink_to(tool)
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{bin_dir}"}


def test_missing_sbatch_fails_fast_and_the_check_says_why(slurm_node, tmp_path):
    workdir = tiny_workflow(tmp_path / "wf")
    env = without_slurm_tools(tmp_path)
    run = snakemake(workdir, *ON_TEST_CLUSTER, "data", env=env, timeout=600)
    assert run.result.returncode != 0
    assert "Error in rule data" in run.output
    assert run.wall_s < 60
    check = lead_cli(workdir, "slurm-check", "--", *ON_TEST_CLUSTER, "--configfile", str(TINY),
                     env=env)
    assert check.returncode == 2
    assert "SLURM client tools not found on PATH: sbatch, squeue, sinfo, scontrol" in check.stderr


def lead_cli(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lead", *args], cwd=workdir, env=env or dict(os.environ),
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )


def test_requests_beyond_the_cluster_are_refused_before_and_at_submission(slurm_node, tmp_path):
    """The real profile's GPUs on a GPU-less node, and more memory than the node has: the
    check lists every refused rule up front; Snakemake itself fails at the first sbatch."""
    workdir = tiny_workflow(tmp_path)
    too_much = f"data:mem_mb={2 * slurm_node.memory_mb}"
    real = ["--profile", str(SLURM_PROFILE), "--workflow-profile", "none", "--slurm-no-account",
            "--configfile", str(TINY)]
    check = lead_cli(workdir, "slurm-check", "--", *real, "--set-resources", too_much)
    assert check.returncode == 2, check.stdout + check.stderr
    refused = dict(re.findall(r"^  rule (\w+) \(.*\): (.*)$", check.stderr, re.MULTILINE))
    assert set(refused) == {"data", *gpu_rules()}, check.stderr
    assert "Requested node configuration is not available" in refused["data"]
    assert all("Invalid generic resource" in refused[rule] for rule in gpu_rules())

    accepted = lead_cli(workdir, "slurm-check", "--", *ON_TEST_CLUSTER, "--configfile", str(TINY))
    assert accepted.returncode == 0, accepted.stderr
    assert "the cluster accepts all" in accepted.stdout

    run = snakemake(workdir, *ON_TEST_CLUSTER, "data", "--set-resources", too_much,
                    timeout=120)
    assert run.result.returncode != 0
    assert "SLURM sbatch failed" in run.output
    assert "Memory specification can not be satisfied" in run.output
    assert f"--mem {2 * slurm_node.memory_mb}" in run.output  # the sbatch call is reported


@pytest.mark.slow
def test_scheduler_down_fails_in_bounded_time_with_a_clear_message(slurm_node, tmp_path):
    workdir = tiny_workflow(tmp_path)
    cluster.stop_daemon(cluster.ROOT / "slurmctld.pid")
    try:
        start = time.monotonic()
        check = lead_cli(workdir, "slurm-check", "--", *ON_TEST_CLUSTER, "--configfile",
                         str(TINY))
        assert check.returncode == 2
        assert "the SLURM controller does not answer" in check.stderr
        assert time.monotonic() - start < 30
        run = snakemake(workdir, *ON_TEST_CLUSTER, "data", timeout=600)
        assert run.result.returncode != 0
        assert "Unable to contact slurm controller" in run.output
    finally:
        cluster.start()
    leftovers = [p for p in (workdir / RESULTS).rglob("*.parquet")]
    assert not leftovers


@pytest.mark.slow
def test_the_rehearsal_runs_through_slurm_with_downloads_and_report_local(slurm_node, tmp_path):
    """The MS MARCO rehearsal at test size through the real profile: the downloads (which need
    the internet a compute node may lack) and the report run on the node Snakemake runs on,
    every other job is an sbatch job that completes."""
    from lead.data import rehearsal

    data = tmp_path / "collection"
    rehearsal.generate(data, 2000)
    workdir = copy_workflow(tmp_path / "workflow", str(TINY))
    with rehearsal.serve(data) as server:
        layer = yaml.safe_load((data / "checksums.yaml").read_text())
        layer["extends"] = [str(REPO / "tests" / "configs" / "rehearsal.yaml")]
        layer["dataset"]["msmarco"].update(base_url=f"{server.url}/", trec_url=f"{server.url}/",
                                           rocketqa_url=f"{server.url}/marco.tar.gz")
        (workdir / "rehearsal.yaml").write_text(yaml.safe_dump(layer))
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "snakemake", "--configfile", "rehearsal.yaml",
             *ON_TEST_CLUSTER],
            cwd=workdir, env={**os.environ, "LEAD_JOB_BOXES": "1"}, capture_output=True,
            text=True, timeout=2 * RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
        run = require_success(Run(workdir, result, time.monotonic() - start))
    print(f"\nrehearsal through SLURM: {run.wall_s:.0f} s")
    local_rules = set(re.findall(r"^localrule (\w+):$", run.output, re.MULTILINE))
    assert local_rules == {"all", "download", "report"}
    records = slurm_jobs(re.search(r"SLURM run ID: (\S+)", run.output).group(1))
    per_rule = Counter(r["Comment"].removeprefix("rule_").split("_wildcards_")[0]
                       for r in records.values())
    expected = job_stats(run.output)
    for local in ("all", "download", "report"):
        del expected[local]
    assert per_rule == expected and {r["JobState"] for r in records.values()} == {"COMPLETED"}
    assert (workdir / "results" / "rehearsal-test" / "report.md").exists()
