"""Atomic outputs, checked inputs (lead.io): leftovers, outputs in the way, broken inputs."""

from __future__ import annotations

import errno
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
from hostile import (
    data,
    error_line,
    failed,
    local_settings,
    refused,
    run_stage,
    small_files,
    training_argv,
)
from repo import REPO
from repo import TINY_DATA as TINY

from lead.io import OUTPUT_MARKER, read_table, write_table
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


# --- the output rule: nothing of the user's is ever destroyed ------------------------------------
# lead.__main__ claims every output a stage declares (OUTPUTS, lead.io.claim_output) before any
# work: a new path, or one this command made before; never the user's files, never an input,
# never another output of the same command.

USERS_FILE = "thesis.tex"
TINY_RANDOM = json.dumps({"init": "random", "tokenizer": {"from": None}, "architecture": {
    "num_hidden_layers": 1, "hidden_size": 8, "num_attention_heads": 1, "intermediate_size": 8}})


def users_folder(path: Path) -> Path:
    """A folder of the user's: one file of theirs in it."""
    path.mkdir(parents=True, exist_ok=True)
    (path / USERS_FILE).write_text("the user's own work\n")
    return path


def training(artifacts: Path, work: Path, stage: str, **paths: Path) -> list:
    """warmup or distill (hostile.training_argv) with some of its paths replaced (out=, log=,
    checkpoint_dir=)."""
    argv = training_argv(artifacts, work, stage, artifacts / "model", artifacts / "model")
    for name, path in paths.items():
        argv[argv.index("--" + name.replace("_", "-")) + 1] = path
    return argv


def report(artifacts: Path, work: Path, *, out: Path | None = None, tables: Path | None = None,
           plots: Path | None = None) -> list:
    """report over the shared evaluation, copied into the test's folder as model m's test
    split; --tables only when given."""
    metrics = work / "metrics"
    if not metrics.exists():
        shutil.copytree(artifacts / "metrics", metrics / "m" / "test")
    return ["report", "--metrics", f"main={metrics}", "--splits", "main:test", "--models", "m",
            "--out", out or work / "report.md", "--plots", plots or work / "plots",
            *(["--tables", tables] if tables else [])]


def every_file_output(artifacts: Path, work: Path) -> dict[str, callable]:
    """Every file a stage writes, as argv for a given path (file_outputs' and the rest)."""
    per_query = artifacts / "metrics" / "per_query.parquet"
    return {
        **{f"{stage} --out": argv for stage, argv in file_outputs(artifacts).items()},
        "search --trec": lambda out: [*file_outputs(artifacts)["search"](work / "run.parquet"),
                                      "--trec", out],
        "cache-teacher --out": lambda out: [
            "cache-teacher", "--model", artifacts / "model", "--tokens",
            artifacts / "tokens" / "test.parquet", "--role", "query", "--out", out],
        "compare --out": lambda out: ["compare", "--per-query", per_query, per_query, "--measure",
                                      "RR@10", "--out", out],
        "report --out": lambda out: report(artifacts, work, out=out),
        "report --tables": lambda out: report(artifacts, work, tables=out),
        "warmup --log": lambda out: training(artifacts, work, "warmup", log=out),
        "distill --log": lambda out: training(artifacts, work, "distill", log=out),
    }


def every_folder_output(artifacts: Path, work: Path) -> dict[str, callable]:
    """Every folder a stage writes, as argv for a given path (folder_outputs' and the rest)."""
    found = {f"{stage} --out": argv for stage, argv in folder_outputs(artifacts).items()}
    found["init-model --out"] = lambda out: ["init-model", "--settings", TINY_RANDOM,
                                             "--tokenizer", artifacts / "tokenizer", "--out", out]
    found["rehearsal --out"] = lambda out: ["rehearsal", "generate", "--out", out]
    found["report --plots"] = lambda out: report(artifacts, work, plots=out)
    for stage in ("warmup", "distill"):
        found[f"{stage} --out"] = lambda out, s=stage: training(artifacts, work, s, out=out)
        found[f"{stage} --checkpoint-dir"] = lambda out, s=stage: training(
            artifacts, work, s, checkpoint_dir=out)
    return found


FILE_OUTPUTS = ["tokenize --out", "encode --out", "search --out", "search --trec",
                "export-trec --out", "negatives --out", "cache-teacher --out", "compare --out",
                "report --out", "report --tables", "warmup --log", "distill --log"]
FOLDER_OUTPUTS = ["data --out", "evaluate --out", "evaluate-model --out", "train-tokenizer --out",
                  "init-model --out", "rehearsal --out", "report --plots", "warmup --out",
                  "warmup --checkpoint-dir", "distill --out", "distill --checkpoint-dir"]


@pytest.mark.parametrize("users", ["a note of one line", "another stage's parquet"])
@pytest.mark.parametrize("output", FILE_OUTPUTS)
def test_a_file_of_the_users_is_never_replaced(capsys, work, roots, artifacts, output, users):
    """A one-line note is no TREC run (search and export-trec may replace one they wrote)."""
    path = work / "mine.txt"
    if users == "a note of one line":
        path.write_text("remember the milk\n")
    else:
        shutil.copy(artifacts / "data" / "corpus.parquet", path)
    stage = output.split()[0]
    refused(capsys, roots, *every_file_output(artifacts, work)[output](path),
            expect=(f"{path}: exists and is not a file `lead {stage}` wrote",))


# What a user's folder may hold besides their file: a marker lead never wrote for this command.
FORGED = {"no marker": None, "another command's marker": '{"command": "export-trec"}',
          "a marker that is a list": '["evaluate", "data"]', "a marker that is not JSON": "{",
          "a marker whose command is a list": '{"command": ["data"], "entries": ["thesis.tex"]}',
          "a marker whose entries are text": '{"command": "data", "entries": "thesis.tex"}'}


@pytest.mark.parametrize("marker", FORGED)
@pytest.mark.parametrize("output", FOLDER_OUTPUTS)
def test_a_folder_of_the_users_is_never_replaced(capsys, work, roots, artifacts, output, marker):
    """Whatever marker it holds: only this command's, listing everything there, lets it
    replace a folder. (An entries-less marker of the right command is a training run's
    work folder, which the run owns entirely.)"""
    folder = users_folder(work / "mine")
    stage = output.split()[0]
    if FORGED[marker] is not None:
        (folder / OUTPUT_MARKER).write_text(FORGED[marker].replace('"data"', f'"{stage}"'))
    refused(capsys, roots, *every_folder_output(artifacts, work)[output](folder),
            expect=(f"{folder}: holds files `lead {stage}` did not write ({USERS_FILE})",))


def _model_copy(artifacts: Path, work: Path) -> Path:
    shutil.copytree(artifacts / "model", work / "model")
    return work / "model"


def _beir_copy(artifacts: Path, work: Path) -> Path:
    shutil.copytree(REPO / "tests" / "fixtures" / "data" / "beir", work / "beir")
    return work / "beir"


def _evaluate_model(model, out, collection=None) -> list:
    source = (["--collection", collection] if collection else
              ["--corpus", TINY / "collection.tsv", "--queries", TINY / "queries.test.tsv",
               "--qrels", TINY / "qrels.test.tsv"])
    return ["evaluate-model", "--model", model, *source, "--depth", 10, "--out", out]


INPUTS = {
    # case: (argv of (artifacts, work), what the refusal says)
    "evaluate-model --out at the model": (
        lambda a, w: _evaluate_model(_model_copy(a, w), w / "model"), "is the input"),
    "evaluate-model --out at the BEIR collection": (
        lambda a, w: _evaluate_model(a / "model", w / "beir", _beir_copy(a, w)), "is the input"),
    "evaluate-model --out inside the BEIR collection": (
        lambda a, w: _evaluate_model(a / "model", w / "beir" / "scores", _beir_copy(a, w)),
        "is inside the input"),
    "evaluate-model --out holding the model": (
        lambda a, w: (_model_copy(a, w), _evaluate_model(w / "model", w))[1], "holds the input"),
    "compare --out at one of its inputs": (
        lambda a, w: ["compare", "--per-query", shutil.copy(a / "metrics" / "per_query.parquet",
                                                            w / "a.parquet"),
                      a / "metrics" / "per_query.parquet", "--measure", "RR@10", "--out",
                      w / "a.parquet"], "is the input"),
    "export-trec --out at its TREC run": (
        lambda a, w: ["export-trec", "--run", shutil.copy(a / "run.trec", w / "run.trec"),
                      "--out", w / "run.trec", "--tag", "t"], "is the input"),
    "warmup --out at its model": (
        lambda a, w: training(a, w, "warmup", out=_model_copy(a, w), model=w / "model"),
        "is the input"),
    "distill --checkpoint-dir at the teacher": (
        lambda a, w: training(a, w, "distill", checkpoint_dir=_model_copy(a, w),
                              teacher=w / "model"), "is the input"),
    "train-tokenizer --out holding its corpus": (
        lambda a, w: ["train-tokenizer", "--corpus", shutil.copy(a / "data" / "corpus.parquet",
                                                                w / "corpus.parquet"),
                      "--out", w], "holds the input"),
    "report --plots at its metrics": (
        lambda a, w: report(a, w, plots=w / "metrics"), "is the input"),
}


@pytest.mark.parametrize("case", INPUTS)
def test_an_output_that_is_one_of_the_inputs_is_refused(capsys, work, roots, artifacts, case):
    make, expect = INPUTS[case]
    refused(capsys, roots, *make(artifacts, work), expect=(expect, "give the output a path of its "
                                                                   "own"))


OVERLAPS = {
    "warmup --out at its --checkpoint-dir": (
        lambda a, w: training(a, w, "warmup", checkpoint_dir=w / "trained"),
        "--out and --checkpoint-dir are the same path"),
    "distill --log inside its --out": (
        lambda a, w: training(a, w, "distill", log=w / "trained" / "log.parquet"),
        "--out holds --log"),
    "distill --out inside its --checkpoint-dir": (
        lambda a, w: training(a, w, "distill", out=w / "checkpoints" / "model"),
        "--out is inside --checkpoint-dir"),
    "search --out at its --trec": (
        lambda a, w: [*file_outputs(a)["search"](w / "run"), "--trec", w / "run"],
        "--out and --trec are the same path"),
    "report --out at its --tables": (
        lambda a, w: report(a, w, out=w / "r.md", tables=w / "r.md"),
        "--out and --tables are the same path"),
    "report --tables inside its --plots": (
        lambda a, w: report(a, w, tables=w / "plots" / "metrics.tsv"),
        "--tables is inside --plots"),
}


@pytest.mark.parametrize("case", OVERLAPS)
def test_two_outputs_of_one_command_at_one_path_are_refused(capsys, work, roots, artifacts, case):
    """Each would replace or remove the other: warmup used to save its model into its
    checkpoint folder, then remove the folder, and end with status 0 and no model."""
    make, expect = OVERLAPS[case]
    refused(capsys, roots, *make(artifacts, work),
            expect=(expect, "give each output a path of its own"))


RERUN = ["data --out", "evaluate --out", "train-tokenizer --out", "init-model --out",
         "tokenize --out", "encode --out", "search --out", "search --trec", "export-trec --out",
         "negatives --out", "cache-teacher --out", "compare --out", "report --out",
         "report --tables"]


@pytest.mark.parametrize("output", RERUN)
def test_an_output_this_command_made_is_replaced_by_its_rerun(capsys, work, artifacts,
                                                              one_torch_thread, output):
    folder = output in FOLDER_OUTPUTS
    make = (every_folder_output if folder else every_file_output)(artifacts, work)[output]
    out = work / ("out" if folder else "out.file")
    for _ in range(2):
        status, err = run_stage(capsys, *make(out))
        assert status == 0, err
    assert out.is_dir() == folder
    if folder:
        assert json.loads((out / OUTPUT_MARKER).read_text())["command"] == output.split()[0]
    assert not [p.name for p in work.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


@pytest.mark.parametrize("inside", [[], ["logs"], ["a", "a/b", "c"]])
@pytest.mark.parametrize("output", ["data --out", "evaluate --out", "train-tokenizer --out"])
def test_snakemakes_empty_output_folders_are_not_the_users_files(capsys, work, artifacts, output,
                                                                 inside):
    """Snakemake makes the folders of a job's outputs before the job runs: a folder holding
    nothing but (empty) folders is replaced."""
    out = work / "out"
    out.mkdir()
    for name in inside:
        (out / name).mkdir()
    status, err = run_stage(capsys, *every_folder_output(artifacts, work)[output](out))
    assert status == 0, err
    assert (out / OUTPUT_MARKER).is_file() and not any((out / name).exists() for name in inside)


@pytest.mark.parametrize("stage", ["warmup", "distill"])
def test_a_training_runs_checkpoints_are_resumed_by_its_stage_and_refused_to_the_other(
        capsys, work, roots, artifacts, one_torch_thread, stage):
    """A kept (or killed) run's checkpoint folder is resumed by the next run of its stage,
    which then removes it; the other training stage may not take it over."""
    status, err = run_stage(capsys, *training(artifacts, work, stage), "--keep-checkpoint")
    assert status == 0, err
    checkpoints = work / "checkpoints"
    assert json.loads((checkpoints / OUTPUT_MARKER).read_text()) == {"command": stage}
    other = "distill" if stage == "warmup" else "warmup"
    refused(capsys, roots, *training(artifacts, work, other, out=work / "other",
                                     log=work / "other.parquet"),
            expect=(f"{checkpoints}: holds files `lead {other}` did not write",))
    status, err = run_stage(capsys, *training(artifacts, work, stage))
    assert status == 0, err
    assert (work / "trained").is_dir() and not checkpoints.exists()


# --- outputs that land as a set ------------------------------------------------------------------

def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("earlier", [False, True])
def test_evaluate_leaves_its_three_files_or_none_when_the_disk_fills(capsys, monkeypatch, work,
                                                                     roots, artifacts, earlier):
    """The disk fills after per_query.parquet and summary.md: no folder of two files (or an
    earlier evaluation with one file replaced) is left for a rerun to take as complete."""
    from lead.evaluation import evaluate

    argv = folder_outputs(artifacts)["evaluate"](work / "metrics")
    if earlier:
        assert run_stage(capsys, *argv)[0] == 0
    written = []

    def fills_on_the_second(table, path, prov=None):
        if written:
            _full_disk()
        written.append(path)
        write_table(table, path, prov)

    monkeypatch.setattr(evaluate, "write_table", fills_on_the_second)
    failed(capsys, roots, *argv, expect=("OSError", "No space left on device"))
    assert [Path(p).name for p in written] == ["per_query.parquet"]


@pytest.mark.parametrize("earlier", [False, True])
def test_search_leaves_no_run_when_its_trec_copy_fails(capsys, monkeypatch, work, roots,
                                                       artifacts, earlier):
    """run.parquet and run.trec land as a set: a TREC export that fails (the disk fills)
    leaves neither, or both as they were."""
    from lead.evaluation import runs

    argv = [*file_outputs(artifacts)["search"](work / "run.parquet"), "--trec", work / "run.trec"]
    if earlier:
        assert run_stage(capsys, *argv)[0] == 0
    monkeypatch.setattr(runs, "export_trec", _full_disk)
    failed(capsys, roots, *argv, expect=("No space left on device",))
    assert (work / "run.parquet").exists() == earlier == (work / "run.trec").exists()
