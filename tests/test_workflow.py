"""The Snakemake workflow end to end on a tiny config, incremental reruns, and dry runs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from workflow_copy import copy_workflow, merge

from lead import schemas

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=workdir,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> number of jobs Snakemake would run now (empty when nothing is to be done)."""
    out = snakemake(workdir, "--dry-run", *args).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1]
    jobs = {}
    for line in table.splitlines():
        match = re.fullmatch(r"\s*([A-Za-z_]\w*)\s+(\d+)\s*", line)
        if match and match.group(1) not in ("job", "total", "all"):
            jobs[match.group(1)] = int(match.group(2))
    return jobs


def write_config(workdir: Path, name: str, **changes) -> Path:
    """The tiny config with nested `changes` (dicts merge, other values replace)."""
    config = merge(yaml.safe_load((workdir / "tiny.yaml").read_text()), changes)
    path = workdir / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("workflow"))
    started = time.perf_counter()
    snakemake(workdir, "--configfile", "tiny.yaml")
    print(f"tiny end-to-end run: {time.perf_counter() - started:.1f} s")
    return workdir


# What a change to the distillation plans: the three students and everything downstream.
DISTILLATION_AND_DESCENDANTS = {
    "distill": 3,
    "encode_corpus": 6,
    "encode_queries": 3,
    "search": 3,
    "evaluate": 3,
    "report": 1,
}


@pytest.mark.slow
def test_every_artifact_has_its_schema(tiny_run):
    results = tiny_run / "results" / "tiny"
    expected = {
        "data/corpus.parquet": schemas.CORPUS,
        "data/queries/test.parquet": schemas.QUERIES,
        "data/qrels/test.parquet": schemas.QRELS,
        "negatives/initial.parquet": schemas.GROUPS,
        "tokens/teacher/corpus.parquet": schemas.TOKENS,
        "tokens/student/queries/train.parquet": schemas.TOKENS,
        "runs/student-lead/test.parquet": schemas.RUN,
        "metrics/student-lead/test/summary.parquet": schemas.METRICS,
        "metrics/teacher/test/per_query.parquet": schemas.PER_QUERY_METRICS,
    }
    for relative, schema in expected.items():
        actual = pq.read_schema(results / relative)
        for field in schema:
            assert actual.field(field.name).type == field.type, relative
    for model in ("teacher", "student-none", "student-response", "student-lead"):
        for shard in ("000", "001"):
            embedding = pq.read_schema(results / f"embeddings/{model}/corpus/{shard}.parquet")
            assert embedding.field("embedding").type.value_type == "float"
        assert (results / f"runs/{model}/test.trec").stat().st_size > 0
    log = pq.read_table(results / "training/student-lead.parquet").to_pandas()
    assert {"step", "lr"} <= set(log.columns)
    report = (results / "report.md").read_text()
    for model in ("teacher", "student-none", "student-response", "student-lead"):
        assert model in report
    assert list((results / "plots").glob("*.png"))


@pytest.mark.slow
def test_rerun_plans_only_what_changed(tiny_run):
    assert planned_jobs(tiny_run, "--configfile", "tiny.yaml") == {}

    faster = write_config(
        tiny_run, "lr.yaml", distillation={"optimisation": {"learning_rate": 2.0e-3}}
    )
    assert planned_jobs(tiny_run, "--configfile", str(faster)) == DISTILLATION_AND_DESCENDANTS

    unrelated = write_config(
        tiny_run, "unrelated.yaml", dataset={"msmarco": {"base_url": "http://example.invalid/"}}
    )
    assert planned_jobs(tiny_run, "--configfile", str(unrelated)) == {}


@pytest.mark.slow
def test_editing_the_loss_module_reruns_distillation_only(tiny_run):
    losses = tiny_run / "lead" / "losses" / "distillation.py"
    original = losses.read_text()
    try:
        losses.write_text(original + "\n# an edit\n")
        assert planned_jobs(tiny_run, "--configfile", "tiny.yaml") == DISTILLATION_AND_DESCENDANTS
    finally:
        losses.write_text(original)
        stamp = time.time() - 3600
        os.utime(losses, (stamp, stamp))
    assert planned_jobs(tiny_run, "--configfile", "tiny.yaml") == {}


@pytest.mark.slow
def test_killed_encoding_job_redoes_its_shard_only(tiny_run):
    results = tiny_run / "results" / "tiny"
    shard = results / "embeddings/teacher/corpus/001.parquet"
    before = pq.read_table(shard)
    # The state of a run killed while encoding shard 001: nothing downstream of it exists.
    for done in (shard, results / "report.md"):
        done.unlink()
    for done in (results / "runs/teacher", results / "metrics/teacher", results / "plots"):
        shutil.rmtree(done)
    encode = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lead",
            "encode",
            "--model",
            str(results / "models/teacher-warm"),
            "--tokens",
            str(results / "tokens/teacher/corpus.parquet"),
            "--role",
            "passage",
            "--shard",
            "1",
            "--num-shards",
            "2",
            "--settings",
            '{"batch_size": 1}',
            "--out",
            str(shard),
        ],
        cwd=tiny_run,
        env=ENV,
    )
    time.sleep(4)
    encode.send_signal(signal.SIGKILL)
    encode.wait()
    assert not shard.exists(), "a killed encoding job must leave no output"

    assert planned_jobs(tiny_run, "--configfile", "tiny.yaml") == {
        "encode_corpus": 1,
        "search": 1,
        "evaluate": 1,
        "report": 1,
    }
    snakemake(tiny_run, "--configfile", "tiny.yaml")
    assert pq.read_table(shard).equals(before)


def test_invalid_config_names_the_key_before_any_job(tmp_path):
    workdir = copy_workflow(tmp_path)
    bad = write_config(workdir, "bad.yaml", search={"index": "annoy"})
    result = snakemake(workdir, "--dry-run", "--configfile", str(bad), check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "search.index" in output and "flat" in output
    assert not (workdir / "results").exists()


@pytest.mark.parametrize("profile", ["default", "slurm"])
@pytest.mark.parametrize(
    "config", ["default.yaml", "msmarco-passage.yaml", "msmarco-document.yaml"]
)
def test_dry_run_shows_the_full_dag(tmp_path, config, profile):
    workdir = copy_workflow(tmp_path)
    result = snakemake(
        workdir,
        "--dry-run",
        "--workflow-profile",
        f"workflow/profiles/{profile}",
        "--configfile",
        f"config/{config}",
    )
    jobs = planned_jobs(
        workdir,
        "--workflow-profile",
        f"workflow/profiles/{profile}",
        "--configfile",
        f"config/{config}",
    )
    assert jobs["distill"] == 3 and jobs["report"] == 1 and jobs["data"] == 1
    if config.startswith("msmarco"):
        assert jobs["mine_negatives"] == 1 and jobs["encode_corpus"] >= 16 * 4
        distill = result.stdout.split("rule distill:", 1)[1].split("\n\n", 1)[0]
        assert "gpu=1" in distill.replace(" ", "")


@pytest.mark.slow
def test_training_rule_with_two_gpus_runs_two_processes(tiny_run):
    """`gpu: 2` launches torchrun with two ranks; on CPU they train with gloo.

    Runs last: it retrains one student, so later plans would include its descendants.
    """
    target = "results/tiny/models/student-lead"
    snakemake(
        tiny_run, "--configfile", "tiny.yaml", "--set-resources", "distill:gpu=2",
        "--forcerun", target, "--", target,
    )
    log = (tiny_run / "results/tiny/logs/train/student-lead.log").read_text()
    assert "2 process(es)" in log
    assert (tiny_run / target / "lead.json").exists()
