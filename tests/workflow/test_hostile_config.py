"""Hostile configs: `snakemake --dry-run` refuses them, naming the key; no command runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hostile import MARKER, cases, tiny
from workflow_copy import copy_workflow

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


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


# Where the workflow reads a config otherwise than check-config: Snakemake loads the files
# itself (plain YAML keeps a key given twice), and lead layers what they extend underneath.
SNAKEFILE_PATH = {
    # case: (files written into the workflow copy, snakemake's config options, what it says)
    "a key given twice in the config file": (
        {"case.yaml": "name: tiny\nsearch: {depth: 5}\nsearch: {depth: 9}\n"},
        ["--configfile", "tiny.yaml", "case.yaml"], "key 'search' given twice"),
    "a key given twice in a file it extends": (
        {"base.yaml": "name: a\nname: b\n", "case.yaml": "extends: [base.yaml]\n"},
        ["--configfile", "tiny.yaml", "case.yaml"], "key 'name' given twice"),
    "an extends cycle": (
        {"base.yaml": "extends: [case.yaml]\n", "case.yaml": "extends: [base.yaml]\n"},
        ["--configfile", "tiny.yaml", "case.yaml"], "config key extends: a cycle"),
    "an extended file that is missing": (
        {"case.yaml": "extends: [missing.yaml]\n"}, ["--configfile", "tiny.yaml", "case.yaml"],
        "missing.yaml: cannot read config"),
    "extends given with --config": (
        {"base.yaml": "search: {depth: 7}\n"},
        ["--configfile", "tiny.yaml", "--config", "extends=[base.yaml]"],
        "config key extends is read from config files only"),
}


@pytest.fixture(scope="module")
def snakefile_dry_runs(tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    started = {}
    for case, (files, options, _) in SNAKEFILE_PATH.items():
        workdir = copy_workflow(tmp_path_factory.mktemp("dry-run"), config_name="tiny.yaml")
        for name, text in files.items():
            (workdir / name).write_text(text)
        output = (workdir / "snakemake.out").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "snakemake", "--cores", "1", "--dry-run", *options],
            cwd=workdir, env=ENV, stdout=output, stderr=subprocess.STDOUT)
        started[case] = (process, output, workdir)
    done = {}
    for case, (process, output, workdir) in started.items():
        status = process.wait(timeout=600)
        output.close()
        done[case] = (status, (workdir / "snakemake.out").read_text(), workdir)
    return done


@pytest.mark.slow  # a Snakemake process per case
@pytest.mark.parametrize("case", SNAKEFILE_PATH)
def test_the_workflow_reads_config_files_as_check_config_does(snakefile_dry_runs, case):
    status, output, workdir = snakefile_dry_runs[case]
    assert status != 0, output
    assert SNAKEFILE_PATH[case][2] in output and "Job stats" not in output, output
    assert not (workdir / "results").exists()
