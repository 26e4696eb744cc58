"""Atomic outputs, checked inputs (lead.io): leftovers, outputs in the way, broken inputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile import data, error_line, local_settings, refused, run_stage, small_files
from repo import REPO
from repo import TINY_DATA as TINY

from lead.io import read_table, write_table
from lead.schemas import CORPUS

# A writer of `lead.io.atomic_path` that stops half-way and waits to be killed.
HALF_WRITTEN = """
import sys
from pathlib import Path
from lead.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    if sys.argv[2] == "folder":
        tmp.mkdir()
        (tmp / "corpus.parquet").write_text("half")
    else:
        tmp.write_text("half")
    print("writing", flush=True)
    sys.stdin.read()
"""


class HalfWriter:
    """A real process killed in the middle of an atomic write (or kept waiting in it)."""

    def __init__(self, path: Path, kind: str = "file"):
        self.process = subprocess.Popen(
            [sys.executable, "-c", HALF_WRITTEN, str(path), kind], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert self.process.stdout.readline() == "writing\n"  # waits for the condition
        self.temporary = path.with_name(f".{path.name}.tmp-{self.process.pid}")
        assert self.temporary.exists()

    def kill(self) -> HalfWriter:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process.stdin.close()
        self.process.stdout.close()
        return self


def dead_pid() -> int:
    """The id of a process that has ended (ids are not reused at once)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def data_settings() -> str:
    return json.dumps({"source": "trec", "eval_splits": ["test"], "local": {
        "corpus": str(TINY / "collection.tsv"), "queries": {"test": str(TINY / "queries.test.tsv")},
        "qrels": {"test": str(TINY / "qrels.test.tsv")}}})


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    out = tmp_path / "table.parquet"
    killed = HalfWriter(out).kill()
    assert killed.temporary.exists() and not out.exists()  # nothing to take for finished
    waiting = HalfWriter(out)  # another writer still at work: its temporary is its own
    try:
        write_table(pa.table({"x": [1, 2]}), out)
        assert not killed.temporary.exists() and waiting.temporary.exists()
        assert pq.read_table(out)["x"].to_pylist() == [1, 2]
    finally:
        waiting.kill()
    write_table(pa.table({"x": [3]}), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.parquet"]


def test_a_killed_data_stage_leaves_a_folder_the_next_run_removes(capsys, tmp_path):
    out = tmp_path / "data"
    killed = HalfWriter(out, "folder").kill()
    assert (killed.temporary / "corpus.parquet").exists() and not out.exists()
    status, err = run_stage(capsys, "data", "--settings", data_settings(), "--out", out)
    assert status == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert read_table(out / "corpus.parquet", CORPUS).num_rows == 380


def test_a_folder_set_aside_by_a_killed_replacement_is_put_back_even_if_the_run_fails(
        capsys, tmp_path):
    """Killed between the two renames: the old folder is aside and none is in place."""
    out = tmp_path / "data"
    status, err = run_stage(capsys, "data", "--settings", data_settings(), "--out", out)
    assert status == 0, err
    earlier = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    aside = tmp_path / f".data.old-{dead_pid()}"
    out.rename(aside)
    broken = json.loads(data_settings())
    broken["local"]["corpus"] = str(tmp_path / "missing.tsv")
    status, err = run_stage(capsys, "data", "--settings", json.dumps(broken), "--out", out)
    assert "missing.tsv: file not found" in error_line("data", status, err)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_set_aside_folder_beside_its_replacement_is_removed(capsys, tmp_path):
    out = tmp_path / "data"
    (tmp_path / f".data.old-{dead_pid()}" / "queries").mkdir(parents=True)
    status, err = run_stage(capsys, "data", "--settings", data_settings(), "--out", out)
    assert status == 0, err
    status, err = run_stage(capsys, "data", "--settings", data_settings(), "--out", out)
    assert status == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_leftovers_are_matched_by_the_exact_name_even_with_glob_characters(tmp_path):
    pid = dead_pid()
    mine = tmp_path / f".run[1].parquet.tmp-{pid}"
    other = tmp_path / f".run1.parquet.tmp-{pid}"  # what an unescaped [1] would match
    mine.write_text("half")
    other.write_text("half")
    write_table(pa.table({"x": [1]}), tmp_path / "run[1].parquet")
    assert not mine.exists() and other.exists()


# --- hostile input --------------------------------------------------------------------------------
# Each refusal is one line naming the culprit, and changes no file (hostile.py).


def file_outputs(artifacts: Path) -> dict[str, callable]:
    """Stages writing one file, as argv for a given --out."""
    data = artifacts / "data"
    return {
        "tokenize": lambda out: ["tokenize", "--tokenizer", artifacts / "model", "--input",
                                 data / "queries" / "test.parquet", "--out", out,
                                 "--max-length", 16],
        "encode": lambda out: ["encode", "--model", artifacts / "model", "--tokens",
                               artifacts / "tokens" / "test.parquet", "--role", "query",
                               "--out", out],
        "search": lambda out: ["search", "--queries", artifacts / "embeddings" / "test.parquet",
                               "--corpus", artifacts / "embeddings" / "corpus.parquet",
                               "--out", out],
        "export-trec": lambda out: ["export-trec", "--run", artifacts / "run.parquet", "--out", out,
                                    "--tag", "t"],
        "negatives": lambda out: ["negatives", "--settings", '{"source": "bm25"}', "--corpus",
                                  data / "corpus.parquet", "--queries",
                                  data / "queries" / "train.parquet", "--qrels",
                                  data / "qrels" / "train.parquet", "--threads", 1,
                                  "--out", out],
    }


def folder_outputs(artifacts: Path) -> dict[str, callable]:
    """Stages writing a folder (replaced whole), as argv for a given --out."""
    return {
        "data": lambda out: data(local_settings(TINY / "collection.tsv",
                                                {"test": TINY / "queries.test.tsv"},
                                                {"test": TINY / "qrels.test.tsv"}), out),
        "evaluate": lambda out: ["evaluate", "--run", artifacts / "run.parquet", "--qrels",
                                 artifacts / "data" / "qrels" / "test.parquet", "--out", out],
        "evaluate-model": lambda out: ["evaluate-model", "--model", artifacts / "model",
                                       "--corpus", TINY / "collection.tsv", "--queries",
                                       TINY / "queries.test.tsv", "--qrels",
                                       TINY / "qrels.test.tsv", "--depth", 10, "--out", out],
        "train-tokenizer": lambda out: ["train-tokenizer", "--corpus",
                                        artifacts / "data" / "corpus.parquet", "--out", out,
                                        "--settings", '{"vocab_size": 200}'],
    }


def in_the_way(work: Path, kind: str) -> tuple[Path, tuple[str, ...]]:
    """An --out where no output can go, and what the refusal must say."""
    outside = work / "outside"
    outside.mkdir()
    (outside / "precious").write_text("the user's file\n")
    if kind == "link to a file outside":
        (work / "out").symlink_to(outside / "precious")
        return work / "out", ("is a symbolic link",)
    if kind == "link to a folder outside":
        (work / "out").symlink_to(outside)
        return work / "out", ("is a symbolic link",)
    if kind == "dangling link":
        (work / "out").symlink_to(outside / "nothing")
        return work / "out", ("is a symbolic link",)
    if kind == "folder":
        (work / "out").mkdir()
        return work / "out", ("is a folder",)
    if kind == "file":
        (work / "out").write_text("x\n")
        return work / "out", ("is a file",)
    (work / "plain").write_text("x\n")  # a file where a parent folder would go
    return work / "plain" / "out", ("is a file",)


FILE_CASES = ["link to a file outside", "link to a folder outside", "dangling link", "folder",
              "under a file"]
FOLDER_CASES = ["link to a folder outside", "file", "under a file"]


@pytest.mark.parametrize("kind", FILE_CASES)
@pytest.mark.parametrize("stage", ["tokenize", "encode", "search", "export-trec", "negatives",
                                   "report"])
def test_a_file_output_in_the_way_is_refused_before_any_work(capsys, work, roots, artifacts, stage,
                                                             kind):
    if stage == "report":
        shutil.copytree(artifacts / "metrics", work / "metrics" / "m" / "test")
        argv = ["report", "--metrics", f"main={work / 'metrics'}", "--splits", "main:test",
                "--models", "m", "--plots", work / "plots"]
        out, expect = in_the_way(work, kind)
        refused(capsys, roots, *argv, "--out", out, expect=expect)
        return
    out, expect = in_the_way(work, kind)
    refused(capsys, roots, *file_outputs(artifacts)[stage](out), expect=(str(out), *expect))


@pytest.mark.parametrize("kind", FOLDER_CASES)
@pytest.mark.parametrize("stage", ["data", "evaluate", "evaluate-model", "train-tokenizer"])
def test_a_folder_output_in_the_way_is_refused_before_any_work(capsys, work, roots, artifacts,
                                                               stage, kind):
    out, expect = in_the_way(work, kind)
    refused(capsys, roots, *folder_outputs(artifacts)[stage](out), expect=expect)


def parquet_inputs(artifacts: Path, work: Path) -> dict[str, tuple[list, int]]:
    """Stages with a file input, as (argv, index of the input in argv)."""
    data, emb = artifacts / "data", artifacts / "embeddings"
    qrels = data / "qrels" / "train.parquet"
    return {
        "tokenize --input": (["tokenize", "--tokenizer", artifacts / "model", "--input", None,
                              "--out", work / "t.parquet", "--max-length", 16], 4),
        "encode --tokens": (["encode", "--model", artifacts / "model", "--tokens", None, "--role",
                             "query", "--out", work / "e.parquet"], 4),
        "search --queries": (["search", "--queries", None, "--corpus", emb / "corpus.parquet",
                              "--out", work / "r.parquet"], 2),
        "search --corpus": (["search", "--queries", emb / "test.parquet", "--corpus", None,
                             "--out", work / "r.parquet"], 4),
        "evaluate --run": (["evaluate", "--run", None, "--qrels", qrels, "--out",
                            work / "m"], 2),
        "evaluate --qrels": (["evaluate", "--run", artifacts / "run.parquet", "--qrels", None,
                              "--out", work / "m"], 4),
        "export-trec --run": (["export-trec", "--run", None, "--out", work / "r.trec",
                               "--tag", "t"], 2),
        "compare --per-query": (["compare", "--per-query", None,
                                 artifacts / "metrics" / "per_query.parquet", "--measure", "RR@10",
                                 "--out", work / "c.parquet"], 2),
        "negatives --corpus": (["negatives", "--settings", '{"source": "bm25"}', "--corpus",
                                None, "--queries", data / "queries" / "train.parquet",
                                "--qrels", qrels, "--out", work / "g.parquet"], 4),
        "negatives --qrels": (["negatives", "--settings", '{"source": "bm25"}', "--corpus",
                               data / "corpus.parquet", "--queries",
                               data / "queries" / "train.parquet", "--qrels", None, "--out",
                               work / "g.parquet"], 8),
        "negatives --run": (["negatives", "--settings", '{"source": "dense"}', "--run", None,
                             "--qrels", qrels, "--out", work / "g.parquet"], 4),
        "train-tokenizer --corpus": (["train-tokenizer", "--corpus", None, "--out",
                                      work / "tok"], 2),
        "cache-teacher --tokens": (["cache-teacher", "--model", artifacts / "model", "--tokens",
                                    None, "--role", "query", "--out", work / "c.parquet"], 4),
    }


PARQUET_INPUTS = ["tokenize --input", "encode --tokens", "search --queries", "search --corpus",
                  "evaluate --run", "evaluate --qrels", "export-trec --run",
                  "compare --per-query", "negatives --corpus", "negatives --qrels",
                  "negatives --run", "train-tokenizer --corpus", "cache-teacher --tokens"]


@pytest.mark.parametrize("what", ["a folder", "a text file named .parquet", "an empty file"])
@pytest.mark.parametrize("case", PARQUET_INPUTS)
def test_a_broken_input_file_is_one_line_naming_it(capsys, work, roots, artifacts, case, what):
    """chmod 000 does not bite as root: a folder, or bytes that are not parquet, instead."""
    bad = work / "input.parquet"
    if what == "a folder":
        bad.mkdir()
    else:
        bad.write_bytes(b"" if what == "an empty file" else b"query_id\tdoc_id\n")
    argv, index = parquet_inputs(artifacts, work)[case]
    argv[index] = bad
    refused(capsys, roots, *argv, expect=(str(bad),))


@pytest.mark.parametrize("key", ["corpus", "queries", "qrels", "given"])
def test_a_folder_given_as_a_text_input_is_one_line_naming_it(capsys, work, roots, artifacts, key):
    folder = work / "a-folder"
    folder.mkdir()
    if key == "given":
        argv = ["negatives", "--settings", json.dumps({"source": "given"}), "--given", folder,
                "--corpus", artifacts / "data" / "corpus.parquet", "--qrels",
                artifacts / "data" / "qrels" / "train.parquet", "--out", work / "g.parquet"]
    else:
        settings = small_files(work / "in")
        local = settings["local"]
        if key == "corpus":
            local["corpus"] = str(folder)
        else:
            local[key]["test"] = str(folder)
        argv = data(settings, work / "out")
    refused(capsys, roots, *argv, expect=(str(folder), "is a folder, expected a file"))
