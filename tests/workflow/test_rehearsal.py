"""The MS MARCO rehearsal through the workflow (config/rehearsal.yaml at test size): a generated
MS MARCO-shaped collection served over HTTP, downloaded, converted and run through every stage
of the reproduction config, so that the path a user rehearses before spending GPU hours keeps
working."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from repo import REPO
from workflow_copy import copy_workflow

from lead.data import rehearsal

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
PASSAGES = 2000


def rehearsal_config(workdir: Path, data: Path, url: str) -> Path:
    """The test-size rehearsal with this server's URLs and the collection's checksums."""
    layer = yaml.safe_load((data / "checksums.yaml").read_text())
    layer["extends"] = [str(REPO / "tests" / "configs" / "rehearsal.yaml")]
    layer["dataset"]["msmarco"].update(base_url=f"{url}/", trec_url=f"{url}/",
                                       rocketqa_url=f"{url}/marco.tar.gz")
    path = workdir / "rehearsal-case.yaml"
    path.write_text(yaml.safe_dump(layer))
    return path


def download_folder(config: Path) -> str:
    """resources/<source>-<hash>: a folder of its own for a served collection's files."""
    from lead.config import layered
    from lead.data.sources import download_folder

    return Path(download_folder(layered([config], [])[1]["dataset"])).name


@pytest.mark.slow
def test_the_rehearsal_runs_every_stage_of_the_reproduction(tmp_path):
    data = tmp_path / "collection"
    rehearsal.generate(data, PASSAGES)
    workdir = copy_workflow(tmp_path / "workflow")
    with rehearsal.serve(data) as server:
        config = rehearsal_config(workdir, data, server.url)
        done = subprocess.run(
            [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", str(config)],
            cwd=workdir, env=ENV, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = workdir / "results" / "rehearsal-test"
    # Every stage of the reproduction ran: dense mining, warm-ups, ColBERT distillation.
    for path in ("negatives/initial.parquet", "negatives/mined.parquet",
                 "models/teacher-warm/lead.json", "models/student-warm/lead.json",
                 "models/student-lead-s888/lead.json", "report.md"):
        assert (results / path).exists(), path
    for split, queries in (("dev-small", 20), ("dl19", 5), ("dl20", 5)):
        metrics = pq.read_table(results / "metrics" / "student-lead-s888" / split /
                                "per_query.parquet")
        assert len(set(metrics.column("query_id").to_pylist())) >= queries
    # The downloads went into a folder of their own, not the real MS MARCO's.
    assert not (workdir / "resources" / "msmarco-passage").exists()
    assert [p.name for p in (workdir / "resources").iterdir()] == [download_folder(config)]
    # The files are pinned by their URLs and checksums: new download code re-fetches nothing
    # (the data stage, which converts them with that code, reruns).
    with (workdir / "lead" / "data" / "download.py").open("a") as module:
        module.write("# an edit\n")
    plan = subprocess.run(
        [sys.executable, "-m", "snakemake", "--dry-run", "--configfile", str(config)],
        cwd=workdir, env=ENV, capture_output=True, text=True, timeout=600)
    jobs = re.findall(r"^(\w+)\s+\d+$", plan.stdout, flags=re.MULTILINE)
    assert "data" in jobs and "download" not in jobs, plan.stdout[-4000:]
