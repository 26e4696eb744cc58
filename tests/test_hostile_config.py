"""Hostile configs: strings that reach shell commands or paths (class 1), and configs that
would fail hours into a run (class 4). Both `python -m lead check-config` and
`snakemake --dry-run` refuse them before any job, naming the key; no injected command runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hostile import HOSTILE_NAMES, MARKER, error_line, run_stage
from workflow_copy import TINY, copy_workflow

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def tiny(**changes) -> dict:
    """The tiny config, with top-level sections replaced or updated one level deep."""
    config = yaml.safe_load(TINY.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def named(where: str, name: str) -> dict:
    """The tiny config with `name` used where a name becomes a path or a shell word."""
    config = tiny()
    if where == "name":
        config["name"] = name
    elif where == "dataset.eval_splits":
        config["dataset"]["eval_splits"] = [name]
    elif where == "dataset.local":
        local = config["dataset"]["local"]
        for key in ("queries", "qrels"):
            local[key][name] = local[key].pop("test")
    elif where == "evaluate.collections":
        config["evaluate"]["collections"] = {name: {**config["dataset"], "eval_splits": ["test"]}}
    else:
        config["distillation"]["variants"] = {name: {"layers": {"k": 1}}}
    return config


NAME_KEYS = ["name", "dataset.eval_splits", "dataset.local", "evaluate.collections",
             "distillation.variants"]

FAILS_LATER = {
    # id: (config, the key the refusal must name)
    "k above the student's depth": (tiny(distillation={"layers": {"k": 9}}),
                                    "config key distillation.layers"),
    "pairs outside the models": (
        tiny(distillation={"layers": {"strategy": "pairs", "pairs": [[5, 1]]}}),
        "config key distillation.layers"),
    "a variant's k above the depth": (
        tiny(distillation={"variants": {"deep": {"layers": {"k": 9}}}}),
        "config key distillation.variants.deep.layers"),
    "a colbert teacher as dense miner": (
        tiny(negatives={"source": "dense", "miner": "teacher"}, teacher={"kind": "colbert"}),
        "config key negatives.miner"),
    "a cross-encoder teacher as dense miner": (
        tiny(negatives={"source": "dense", "miner": "teacher"}, teacher={"kind": "cross"}),
        "config key negatives.miner"),
    "an unknown report measure": (tiny(evaluate={"report_measures": ["nDCG@10", "MRR@ten"]}),
                                  "config key evaluate.report_measures"),
    "an unsupported significance measure": (tiny(evaluate={"significance_measure": "ERR@20"}),
                                            "config key evaluate.significance_measure"),
    "training on files without a train split": (
        tiny(dataset={"local": {key: {"test": tiny()["dataset"]["local"][key]["test"]}
                                for key in ("queries", "qrels")}}), "config key dataset"),
    "training on a beir folder without a train split": (
        tiny(dataset={"source": "beir", "beir": {"path": "tests/fixtures/data/beir",
                                                 "splits": {"test": "test"}}}),
        "config key dataset"),
    "a bm25 parameter typo": (tiny(negatives={"bm25": {"k": 1.2}}), "config key negatives.bm25"),
    "a bm25 section typo": (tiny(negatives={"bm_25": {"k1": 1.2}}), "config key negatives"),
    "an evaluation split the source lacks": (tiny(dataset={"eval_splits": ["dl19"]}),
                                             "config key dataset.eval_splits"),
    "given negatives without a file": (tiny(negatives={"source": "given"}),
                                       "config key negatives.given_path"),
    "a given file name Snakemake reads as a wildcard": (
        tiny(negatives={"source": "given", "given_path": "triples.{x}.tsv"}),
        "config key negatives.given_path"),
}


def cases() -> dict[str, tuple[dict, str]]:
    """Every config refused by both check-config and the workflow, with the key named."""
    found = {f"{where}={name!r}": (named(where, name), f"config key {where}")
             for where in NAME_KEYS for name in ("$(touch MARKER)",)}
    return {**found, **FAILS_LATER}


def check_config(capsys, config: dict, folder: Path) -> tuple[int, str]:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return run_stage(capsys, "check-config", path)


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """check-config reads the tiny config's relative paths from the repository root."""
    monkeypatch.chdir(TINY.parents[2])
    return tmp_path


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("where", NAME_KEYS)
def test_check_config_refuses_a_name_that_is_no_path_or_word(capsys, here, where, name):
    before = sorted(os.listdir())
    status, err = check_config(capsys, named(where, name), here)
    line = error_line("check-config", status, err)
    assert f"config key {where}" in line and repr(name) in line
    assert sorted(os.listdir()) == before and os.listdir(here) == ["config.yaml"]


@pytest.mark.parametrize("case", FAILS_LATER)
def test_check_config_refuses_what_would_fail_hours_later(capsys, here, case):
    config, key = FAILS_LATER[case]
    status, err = check_config(capsys, config, here)
    assert key in error_line("check-config", status, err)


def test_check_config_accepts_the_shell_words_it_quotes(capsys, here):
    """The control: a triples file whose name holds shell syntax is a valid config (the
    workflow quotes it; test_a_hostile_given_path_runs_no_command proves it)."""
    status, err = check_config(capsys, tiny(negatives={"source": "given",
                                                       "given_path": "t $(touch MARKER) `x`"}),
                               here)
    assert status == 0, err


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    """`snakemake --dry-run` of every case, each in its own copy of the workflow, all started
    at once (they are independent processes) and each awaited to its end."""
    started = {}
    for case, (config, _) in cases().items():
        workdir = copy_workflow(tmp_path_factory.mktemp("dry-run"), config_name="tiny.yaml")
        (workdir / "case.yaml").write_text(yaml.safe_dump(config))
        output = (workdir / "snakemake.out").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "snakemake", "--cores", "1", "--dry-run", "--configfile",
             "case.yaml"], cwd=workdir, env=ENV, stdout=output, stderr=subprocess.STDOUT)
        started[case] = (process, output, workdir)
    done = {}
    for case, (process, output, workdir) in started.items():
        status = process.wait(timeout=600)
        output.close()
        done[case] = (status, (workdir / "snakemake.out").read_text(), workdir)
    return done


@pytest.mark.slow  # a Snakemake process per case: a minute of CPU in all
@pytest.mark.parametrize("case", cases())
def test_the_workflow_refuses_before_any_job(dry_runs, case):
    status, output, workdir = dry_runs[case]
    key = cases()[case][1]
    assert status != 0, output
    assert key in output and "Job stats" not in output, output
    assert not (workdir / "results").exists() and not any(workdir.rglob(MARKER))


@pytest.mark.slow
def test_a_hostile_given_path_runs_no_command(tmp_path):
    """The workflow's own negatives rule on a real triples file whose name holds `$(...)`, a
    backquote and spaces: the file is read, and neither command runs."""
    workdir = copy_workflow(tmp_path / "workflow")
    name = "triples $(touch MARKER) `touch MARKER2` x.tsv"
    qrels = (workdir / "tests/fixtures/tiny/qrels.train.tsv").read_text().splitlines()
    (workdir / name).write_text("".join(f"{line.split()[0]}\t{line.split()[2]}\td000120\n"
                                        for line in qrels))
    config = tiny(negatives={"source": "given", "given_path": name})
    (workdir / "case.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "case.yaml", "--",
         "results/tiny/negatives/initial.parquet"],
        cwd=workdir, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    import pyarrow.parquet as pq

    groups = pq.read_table(workdir / "results/tiny/negatives/initial.parquet")
    assert groups.num_rows > 0 and {"d000120"} <= set(groups["negatives"].combine_chunks()
                                                      .flatten().to_pylist())
    assert not list(workdir.rglob("MARKER*")) and not list(tmp_path.rglob("MARKER*"))



@pytest.mark.parametrize("text, expect", [
    ("- a list\n- of keys\n", "a config is a mapping of keys, not list"),
    ("name: [tiny\n", "cannot read config"),
    ("name: tiny\n\tsearch: {}\n", "cannot read config"),
])
def test_a_config_file_that_is_no_mapping_is_one_line(capsys, here, text, expect):
    path = here / "config.yaml"
    path.write_text(text)
    status, err = run_stage(capsys, "check-config", path)
    line = error_line("check-config", status, err)
    assert str(path) in line and expect in line


def test_a_config_of_nested_aliases_is_refused_in_one_short_line(capsys, here):
    """Five lines of YAML that stand for 111,110 values."""
    lines = ["name:", "  - &a0 [" + ", ".join(["xxxxxxxxxx"] * 10) + "]"]
    lines += [f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 5)]
    path = here / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    status, err = run_stage(capsys, "check-config", path)
    line = error_line("check-config", status, err)
    assert "config key name" in line and len(line) < 1000
