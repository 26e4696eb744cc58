"""The Snakemake workflow end to end on a tiny config, incremental reruns, and dry runs."""

from __future__ import annotations

import base64
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
from repo import FIXTURES
from workflow_copy import copy_workflow

from lead import schemas
from lead.config import merge

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
BOXES = {**ENV, "LEAD_JOB_BOXES": "1"}  # Snakemake's job boxes (threads, resources)


def snakemake(workdir: Path, *args: str, check: bool = True, env: dict | None = None
              ) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=workdir,
        env=env or ENV,
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


# What a change to the distillation plans: the four students (three methods and the frozen
# variant) and everything downstream.
DISTILLATION_AND_DESCENDANTS = {
    "distill": 4,
    "encode_corpus": 8,
    "encode_queries": 4,
    "search": 4,
    "evaluate": 4,
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
        "runs/student-lead-s888/test.parquet": schemas.RUN,
        "metrics/student-lead-s888/test/summary.parquet": schemas.METRICS,
        "metrics/teacher-warm/test/per_query.parquet": schemas.PER_QUERY_METRICS,
    }
    for relative, schema in expected.items():
        actual = pq.read_schema(results / relative)
        for field in schema:
            assert actual.field(field.name).type == field.type, relative
    models = ("teacher-init", "teacher-warm", "student-init", "student-none-s888",
              "student-response-s888", "student-lead-s888", "student-frozen-s888")
    for model in models:
        for shard in ("000", "001"):
            embedding = pq.read_schema(results / f"embeddings/{model}/corpus/{shard}.parquet")
            assert embedding.field("embedding").type.value_type == "float"
        assert (results / f"runs/{model}/test.trec").stat().st_size > 0
    log = pq.read_table(results / "training/student-lead-s888.parquet").to_pandas()
    assert {"step", "lr", "dev_RR@10", "teacher_dev_RR@10"} <= set(log.columns)
    assert log["step"].iloc[0] == 0  # the initial model's dev evaluation
    report = (results / "report.md").read_text()
    for model in models:
        assert f"| {model} |" in report
    assert list((results / "plots").glob("*.png"))
    assert not any((results / "checkpoints").iterdir())  # finished runs leave no checkpoint
    # the frozen variant read its teacher from the layer cache
    frozen = (results / "logs/train/student-frozen-s888.log").read_text()
    assert "teacher scores come from its layer cache" in frozen
    assert pq.read_schema(results / "teacher_cache/corpus/000.parquet").names == ["id", "layers"]
    # every stage says what it read, how long it took and how far it is
    for line in ("start distill: teacher", "s/step", "examples/s", "ETA", "done distill in"):
        assert line in frozen, line
    encode_log = (results / "logs/encode/student-lead-s888-corpus-000.log").read_text()
    assert "start encode" in encode_log and "done encode" in encode_log


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
    shard = results / "embeddings/teacher-warm/corpus/001.parquet"
    before = pq.read_table(shard)
    # The state of a run killed while encoding shard 001: nothing downstream of it exists.
    for done in (shard, results / "report.md"):
        done.unlink()
    for done in (results / "runs/teacher-warm", results / "metrics/teacher-warm",
                 results / "plots"):
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
    # Kill it while it writes: once its temporary sibling exists, not after a fixed time.
    while not list(shard.parent.glob(f".{shard.name}.tmp-*")) and encode.poll() is None:
        time.sleep(0.02)
    encode.send_signal(signal.SIGKILL)
    assert encode.wait() == -signal.SIGKILL, "the job ended before it could be killed"
    assert not shard.exists(), "a killed encoding job must leave no output"
    assert list(shard.parent.glob(f".{shard.name}.tmp-*")), "its temporary is left behind"

    assert planned_jobs(tiny_run, "--configfile", "tiny.yaml") == {
        "encode_corpus": 1,
        "search": 1,
        "evaluate": 1,
        "report": 1,
    }
    snakemake(tiny_run, "--configfile", "tiny.yaml")
    assert pq.read_table(shard).equals(before)
    assert not list(shard.parent.glob(".*.tmp-*")), "the rerun cleans the killed job's temporary"


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
        profile,
        "--configfile",
        f"config/{config}",
        env=BOXES,
    )
    jobs = planned_jobs(
        workdir,
        "--workflow-profile",
        profile,
        "--configfile",
        f"config/{config}",
    )
    settings = yaml.safe_load((workdir / "config" / config).read_text())["distillation"]
    rows = len(settings.get("methods", [0, 0, 0])) + len(settings.get("variants", {}))
    assert jobs["distill"] == rows * len(settings.get("seeds") or [0])
    assert jobs["report"] == 1 and jobs["data"] == 1
    if config.startswith("msmarco"):
        assert jobs["negatives_mined"] == 1 and jobs["encode_corpus"] >= 16 * 4
        distill = result.stdout.split("rule distill:", 1)[1].split("\n\n", 1)[0]
        assert "gpu=1" in distill.replace(" ", "")


@pytest.mark.slow
def test_touching_files_or_moving_the_checkout_replans_nothing(tiny_run, tmp_path):
    """Reruns follow the content of the code a stage imports (lead.code), not file times or
    absolute paths."""
    for path in (tiny_run / "lead").rglob("*.py"):
        os.utime(path)
    assert planned_jobs(tiny_run, "--configfile", "tiny.yaml") == {}
    moved = shutil.copytree(tiny_run, tmp_path / "elsewhere", symlinks=True)
    assert planned_jobs(moved, "--configfile", "tiny.yaml") == {}


@pytest.mark.slow
def test_changing_one_variant_reruns_that_variant_only(tiny_run):
    changed = write_config(tiny_run, "variant.yaml", distillation={
        "variants": {"frozen": {"teacher_trainable": False, "layers": {"k": 2}}}})
    assert planned_jobs(tiny_run, "--configfile", str(changed)) == {
        "distill": 1, "encode_corpus": 2, "encode_queries": 1, "search": 1, "evaluate": 1,
        "report": 1,
    }
    seeds = write_config(tiny_run, "seeds.yaml", distillation={"seeds": [888, 7]})
    assert planned_jobs(tiny_run, "--configfile", str(seeds)) == {  # seed 888 exists already
        "distill": 4, "encode_corpus": 8, "encode_queries": 4, "search": 4, "evaluate": 4,
        "report": 1,
    }


@pytest.mark.slow
def test_the_report_of_snakemake_holds_the_description_report_tables_and_plots(tiny_run):
    snakemake(tiny_run, "--configfile", "tiny.yaml", "--report", "report.html")
    html = (tiny_run / "report.html").read_text(errors="replace")
    assert "metrics.tsv" in html and "report.md" in html
    assert "student-lead-s888" in html and "layer-weights" in html
    # The workflow's description (workflow/report/workflow.rst, rendered with the config).
    assert "liberal feature-based distillation" in html and "results/tiny/" in html
    # report.md's text, rendered to HTML by the report rule and embedded as a data URI.
    embedded = re.findall(r"data:text/html;charset=utf8;filename=report\.html;base64,"
                          r"([A-Za-z0-9+/=]+)", html)
    assert len(embedded) == 1
    rendered = base64.b64decode(embedded[0]).decode()
    assert rendered.startswith('<meta charset="utf-8">')
    assert "<h1>LEAD distillation report</h1>" in rendered and "<table>" in rendered
    assert "<td>student-lead-s888</td>" in rendered
    assert rendered == (tiny_run / "results/tiny/report.html").read_text()


def test_config_given_on_the_command_line_goes_on_top_of_the_default(tmp_path):
    workdir = copy_workflow(tmp_path)
    default = yaml.safe_load((workdir / "config" / "default.yaml").read_text())
    out = snakemake(workdir, "--dry-run", "--config", "name=try").stdout
    assert "results/try/report.md" in out
    jobs = planned_jobs(workdir, "--config", "name=try")
    distill = default["distillation"]
    assert jobs["distill"] == (len(distill["methods"]) + len(distill.get("variants", {}))) * len(
        distill["seeds"])
    # several config files merge, in order
    extra = workdir / "extra.yaml"
    extra.write_text("name: merged\n")
    out = snakemake(workdir, "--dry-run", "--configfile", "tiny.yaml", str(extra)).stdout
    assert "results/merged/report.md" in out and "results/tiny" not in out


def test_every_rule_runs_a_stage_of_the_stage_table(tmp_path):
    from lead.__main__ import STAGES, stage_of_rule

    workdir = copy_workflow(tmp_path)
    listing = snakemake(workdir, "--list-rules", "--configfile", "tiny.yaml").stdout
    # one rule per line, with its docstring, which names the stage it runs
    described = {line.split()[0]: line for line in listing.splitlines()
                 if line and not line[0].isspace()}
    rules = [rule for rule in described if rule != "all"]
    for rule in rules:
        assert f"python -m lead {stage_of_rule(rule)}" in described[rule], rule
    assert {"data", "distill", "encode_corpus", "negatives_mined", "cache_teacher_corpus"} <= set(
        rules)
    for rule in rules:
        assert stage_of_rule(rule) in STAGES, rule
    smk = "".join(p.read_text() for p in (workdir / "workflow" / "rules").glob("*.smk"))
    for rule in rules:
        if f"rule {rule}:" not in smk:  # named in a loop (data rules): the docstring says it
            continue
        body = smk.split(f"rule {rule}:", 1)[1].split("\nrule ", 1)[0]
        assert f"python -m lead {stage_of_rule(rule)}" in body or (
            f"{{params.launch}} {stage_of_rule(rule)}" in body), rule


@pytest.mark.slow
def test_a_checkpoint_is_scored_zero_shot_on_a_collection_as_evaluate_model_scores_it(tmp_path):
    """A config of collections only (no training) through the workflow, and the one command
    for any model on any collection: the same summary."""
    workdir = copy_workflow(tmp_path)
    beir = FIXTURES / "data" / "beir"
    config = {
        "name": "zero-shot",
        "teacher": {"init": "package:minilm"},
        "teacher_training": {"enabled": False},
        "distillation": {"methods": []},
        "encode": {"shards": 1},
        "search": {"depth": 100},
        "evaluate": {"collections": {"fixture": {"source": "beir", "beir": {"path": str(beir)},
                                                 "eval_splits": ["test"]}},
                     "report_measures": ["nDCG@10", "RR@10"]},
    }
    (workdir / "zero.yaml").write_text(yaml.safe_dump(config))
    jobs = planned_jobs(workdir, "--configfile", "zero.yaml")
    assert "distill" not in jobs and "data" not in jobs and jobs["data_fixture"] == 1
    snakemake(workdir, "--configfile", "zero.yaml")
    root = workdir / "results/zero-shot/collections/fixture"
    ours = pq.read_table(root / "metrics/teacher-init/test/summary.parquet").to_pylist()
    out = tmp_path / "direct"
    argv = ["evaluate-model", "--model", "package:minilm", "--collection", str(beir),
            "--out", str(out), "--depth", "100", "--query-max-length", "32",
            "--passage-max-length", "256"]
    done = subprocess.run([sys.executable, "-m", "lead", *argv], cwd=workdir, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    direct = {row["measure"]: row["value"]
              for row in pq.read_table(out / "summary.parquet").to_pylist()}
    assert {row["measure"]: row["value"] for row in ours if row["measure"] in direct} == {
        name: value for name, value in direct.items() if name in {r["measure"] for r in ours}}
    assert (out / "run.trec").read_text().splitlines()
    report = (workdir / "results/zero-shot/report.md").read_text()
    assert "### fixture" in report and "| teacher-init |" in report


@pytest.mark.slow
def test_training_rule_with_two_gpus_runs_two_processes(tiny_run):
    """`gpu: 2` launches torchrun with two ranks; on CPU they train with gloo.

    Runs last: it retrains one student, so later plans would include its descendants.
    """
    target = "results/tiny/models/student-lead-s888"
    snakemake(
        tiny_run, "--configfile", "tiny.yaml", "--set-resources", "distill:gpu=2",
        "--forcerun", target, "--", target,
    )
    log = (tiny_run / "results/tiny/logs/train/student-lead-s888.log").read_text()
    assert "2 process(es)" in log
    assert (tiny_run / target / "lead.json").exists()
