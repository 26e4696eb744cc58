"""The data stage (lead.data.sources): its output folder, its splits, names, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from data_files import CORPUS, QRELS, QUERIES, splits_of, write_local
from hostile import HOSTILE_NAMES, beir_folder, data, refused, small_files
from repo import REPO

from lead.__main__ import main
from lead.data.sources import build_dataset
from lead.errors import ConfigError, LeadError


def test_output_folder_is_replaced_whole_and_guarded(tmp_path):
    out = tmp_path / "data"
    build_dataset(write_local(tmp_path, CORPUS, QUERIES, QRELS), out)
    stale = out / "queries" / "old-split.parquet"
    stale.write_bytes(b"stale")
    build_dataset(write_local(tmp_path, CORPUS, QUERIES, QRELS), out)
    assert not stale.exists() and splits_of(out) == ["dev", "train"]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(LeadError, match=r"notes\.txt"):
        build_dataset(write_local(tmp_path, CORPUS, QUERIES, QRELS), out)
    assert (out / "notes.txt").exists()


def test_eval_splits_must_be_produced(tmp_path):
    settings = write_local(tmp_path, CORPUS, QUERIES, QRELS, eval_splits=["test"])
    with pytest.raises(ConfigError, match=r"eval_splits names \['test'\]"):
        build_dataset(settings, tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_cli(tmp_path, capsys):
    settings = write_local(tmp_path, CORPUS, QUERIES, QRELS)
    assert main(["data", "--settings", json.dumps(settings), "--out", str(tmp_path / "d")]) == 0
    assert splits_of(tmp_path / "d") == ["dev", "train"]
    bad = write_local(tmp_path, CORPUS, QUERIES, [*QRELS, "q0 Q0 p0 x"])
    assert main(["data", "--settings", json.dumps(bad), "--out", str(tmp_path / "e")]) == 2
    assert "qrels.txt:4: relevance grade 'x' is not an integer" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../../x", "$(touch MARKER)", "a b", ".hidden"])
def test_the_data_stage_refuses_a_bad_split_name_and_writes_nothing(tmp_path, name):
    work = tmp_path / "work"
    work.mkdir()
    for file, line in (("corpus.tsv", "p0\tsome text"), ("queries.tsv", "q0\ta query"),
                       ("qrels.txt", "q0 Q0 p0 1")):
        (work / file).write_text(line + "\n")
    settings = {"source": "trec", "eval_splits": [name],
                "local": {"corpus": str(work / "corpus.tsv"),
                          "queries": {name: str(work / "queries.tsv")},
                          "qrels": {name: str(work / "qrels.txt")}}}
    before = sorted(tmp_path.rglob("*"))
    done = subprocess.run(
        [sys.executable, "-m", "lead", "data", "--settings", json.dumps(settings),
         "--out", str(work / "data")],
        cwd=work, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and repr(name) in errors[0] and "dataset.eval_splits" in errors[0]
    assert sorted(tmp_path.rglob("*")) == before  # no MARKER, no output, nothing outside


# Hostile input: each refusal is one line naming the culprit, and changes no file (hostile.py).


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("where", ["eval_splits", "local split", "beir split"])
def test_a_split_name_that_would_leave_the_output_is_refused(capsys, work, roots, name, where):
    if where == "beir split":
        settings = beir_folder(work / "in")
        settings["beir"]["splits"] = {name: "test"}
        settings["eval_splits"] = [name]
    else:
        settings = small_files(work / "in")
        if where == "local split":
            settings["local"]["queries"] = {name: settings["local"]["queries"]["test"]}
            settings["local"]["qrels"] = {name: settings["local"]["qrels"]["test"]}
        settings["eval_splits"] = [name]
    line = refused(capsys, roots, *data(settings, work / "out" / "data"))
    assert repr(name) in line and ("config key dataset." in line or "split name" in line)


MSMARCO = json.dumps({"source": "msmarco-passage",
                      "msmarco": {"base_url": "http://127.0.0.1:9/unreachable"}})


@pytest.mark.parametrize("where", ["--cache a file", "--cache under a file", "$LEAD_CACHE a file"])
@pytest.mark.parametrize("stage", ["download", "data"])
def test_a_download_cache_where_a_file_stands_is_one_line(capsys, monkeypatch, work, roots, stage,
                                                          where):
    """It used to end in NotADirectoryError with status 1 (nothing is fetched: the cache is
    checked first)."""
    blocker = work / "a-file"
    blocker.write_text("not a folder\n")
    cache = blocker / "cache" if where == "--cache under a file" else blocker
    if where == "$LEAD_CACHE a file":
        monkeypatch.setenv("LEAD_CACHE", str(blocker))
        options = []
    else:
        options = ["--cache", cache]
    argv = ["download", "--settings", MSMARCO] if stage == "download" else [
        "data", "--settings", MSMARCO, "--out", work / "out"]
    refused(capsys, roots, *argv, *options,
            expect=(f"{blocker}: is a file, so the download cache {cache} cannot be a folder",))
