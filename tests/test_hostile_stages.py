"""A careless or malicious user of every stage, by class of hostile input: names that would
leave the output folder, outputs that are links or of the wrong kind, data that would score
silently wrong, inputs that used to end in a traceback. Each refusal is one line naming the
file, line or key (exit status 2), and leaves every file as it was (tests/hostile.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile import HOSTILE_NAMES, refused, run_stage
from tiny_models import make_model, make_tokenizer

from lead.config import resolve
from lead.data.negatives import bm25_groups
from lead.data.sources import build_dataset
from lead.evaluation.evaluate import write_evaluation
from lead.io import read_table, write_table
from lead.retrieval.encode import encode_file
from lead.retrieval.search import search
from lead.schemas import CORPUS
from lead.tokenization import tokenize_file

TINY = Path(__file__).resolve().parent / "fixtures" / "tiny"
SPLITS = ("train", "dev", "test")


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Tiny models run many tiny ops: on a busy machine one thread is far faster than two."""


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Every artifact a stage reads, built once from the tiny fixture with lead's own stages:
    data/, model/, tokens/, embeddings/, run.parquet, run.trec, metrics/, groups.parquet."""
    root = tmp_path_factory.mktemp("built")
    make_model(root / "model", make_tokenizer(root / "tokenizer"), layers=2, hidden=16)
    build_dataset(local_settings(TINY / "collection.tsv", {s: TINY / f"queries.{s}.tsv"
                                                          for s in SPLITS},
                                 {s: TINY / f"qrels.{s}.tsv" for s in SPLITS}), root / "data")
    tokenize_file(root / "model", root / "data" / "corpus.parquet",
                  root / "tokens" / "corpus.parquet", max_length=32)
    for split in SPLITS:
        tokenize_file(root / "model", root / "data" / "queries" / f"{split}.parquet",
                      root / "tokens" / f"{split}.parquet", max_length=16)
    encode = resolve("encode", {"batch_size": 64})
    encode_file(root / "model", root / "tokens" / "corpus.parquet", "passage",
                root / "embeddings" / "corpus.parquet", encode)
    encode_file(root / "model", root / "tokens" / "test.parquet", "query",
                root / "embeddings" / "test.parquet", encode)
    search(root / "embeddings" / "test.parquet", [root / "embeddings" / "corpus.parquet"],
           root / "run.parquet", resolve("search", {"depth": 20}))
    assert run_stage_ok(["export-trec", "--run", root / "run.parquet", "--out",
                         root / "run.trec", "--tag", "tiny"])
    report = resolve("evaluate", {})
    write_evaluation(root / "metrics", root / "run.parquet",
                     root / "data" / "qrels" / "test.parquet",
                     measures=list(dict.fromkeys([*report["report_measures"],
                                                  report["significance_measure"]])))
    bm25_groups(root / "data" / "corpus.parquet", root / "data" / "queries" / "train.parquet",
                root / "data" / "qrels" / "train.parquet", root / "groups.parquet", depth=5,
                retrieve_depth=20, k1=0.9, b=0.4, threads=1)
    return root


def run_stage_ok(argv) -> bool:
    from lead.__main__ import main

    return main([str(arg) for arg in argv]) == 0


def local_settings(corpus, queries: dict, qrels: dict, source: str = "trec",
                   eval_splits=("test",)) -> dict:
    return {"source": source, "eval_splits": list(eval_splits),
            "local": {"corpus": str(corpus), "queries": {k: str(v) for k, v in queries.items()},
                      "qrels": {k: str(v) for k, v in qrels.items()}}}


@pytest.fixture
def work(tmp_path, monkeypatch, built) -> Path:
    """The test's own folder, also the current directory and the download cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEAD_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture
def roots(work, built) -> list[Path]:
    """Where nothing may change when a stage refuses: the test's folder (inputs, outputs,
    the folder links point to) and the shared artifacts."""
    return [work, built]


def small_files(folder: Path, corpus: bytes = b"p0\tsome text\np1\tother text\n",
                queries: bytes = b"q0\ta query\n", qrels: bytes = b"q0 Q0 p0 1\n") -> dict:
    """A trec-source collection of three small files (one `test` split)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.tsv").write_bytes(corpus)
    (folder / "queries.tsv").write_bytes(queries)
    (folder / "qrels.txt").write_bytes(qrels)
    return local_settings(folder / "corpus.tsv", {"test": folder / "queries.tsv"},
                          {"test": folder / "qrels.txt"})


def beir_folder(folder: Path, corpus: bytes = b'{"_id": "p0", "text": "some text"}\n',
                queries: bytes = b'{"_id": "q0", "text": "a query"}\n',
                qrels: bytes = b"query-id\tcorpus-id\tscore\nq0\tp0\t1\n") -> dict:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_bytes(corpus)
    (folder / "queries.jsonl").write_bytes(queries)
    (folder / "qrels" / "test.tsv").write_bytes(qrels)
    return {"source": "beir", "eval_splits": ["test"],
            "beir": {"path": str(folder), "splits": {"test": "test"}}}


def data(settings: dict, out: Path) -> list:
    return ["data", "--settings", json.dumps(settings), "--out", out]


# --------------------------------------------------------------------------------------------
# Class 2: path traversal. Names that become paths, and outputs that are links or in the way.


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


def test_a_beir_file_stem_that_would_leave_the_folder_is_refused(capsys, work, roots):
    settings = beir_folder(work / "in")
    settings["beir"]["splits"] = {"test": "../../../qrels-elsewhere"}
    (work / "qrels-elsewhere.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tp0\t1\n")
    refused(capsys, roots, *data(settings, work / "out"), expect=("does not lie inside",))


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_evaluate_model_refuses_a_hostile_split_name(capsys, work, roots, built, name):
    refused(capsys, roots, "evaluate-model", "--model", built / "model",
            "--corpus", TINY / "collection.tsv", "--queries", TINY / "queries.test.tsv",
            "--qrels", TINY / "qrels.test.tsv", "--split", name, "--out", work / "scored",
            expect=(repr(name),))


@pytest.mark.parametrize("name", ["../../x", ".hidden", "a/b", "$(touch MARKER)"])
def test_report_refuses_a_training_log_name_that_becomes_a_plot_path(capsys, work, roots, built,
                                                                     name):
    metrics = work / "metrics" / "m" / "test"
    shutil.copytree(built / "metrics", metrics)
    log = work / "training.parquet"
    write_table(pa.table({"step": [0, 1], "loss": [1.0, 0.5]}), log)
    refused(capsys, roots, "report", "--metrics", f"main={work / 'metrics'}", "--splits",
            "main:test", "--models", "m", "--logs", f"{name}={log}", "--out", work / "report.md",
            "--plots", work / "plots", expect=(f"log name {name!r}",))


def file_outputs(built: Path) -> dict[str, callable]:
    """Stages writing one file, as argv for a given --out."""
    data = built / "data"
    return {
        "tokenize": lambda out: ["tokenize", "--tokenizer", built / "model", "--input",
                                 data / "queries" / "test.parquet", "--out", out,
                                 "--max-length", 16],
        "encode": lambda out: ["encode", "--model", built / "model", "--tokens",
                               built / "tokens" / "test.parquet", "--role", "query",
                               "--out", out],
        "search": lambda out: ["search", "--queries", built / "embeddings" / "test.parquet",
                               "--corpus", built / "embeddings" / "corpus.parquet",
                               "--out", out],
        "export-trec": lambda out: ["export-trec", "--run", built / "run.parquet", "--out", out,
                                    "--tag", "t"],
        "negatives": lambda out: ["negatives", "--settings", '{"source": "bm25"}', "--corpus",
                                  data / "corpus.parquet", "--queries",
                                  data / "queries" / "train.parquet", "--qrels",
                                  data / "qrels" / "train.parquet", "--threads", 1,
                                  "--out", out],
    }


def folder_outputs(built: Path) -> dict[str, callable]:
    """Stages writing a folder (replaced whole), as argv for a given --out."""
    return {
        "data": lambda out: data(local_settings(TINY / "collection.tsv",
                                                {"test": TINY / "queries.test.tsv"},
                                                {"test": TINY / "qrels.test.tsv"}), out),
        "evaluate": lambda out: ["evaluate", "--run", built / "run.parquet", "--qrels",
                                 built / "data" / "qrels" / "test.parquet", "--out", out],
        "evaluate-model": lambda out: ["evaluate-model", "--model", built / "model",
                                       "--corpus", TINY / "collection.tsv", "--queries",
                                       TINY / "queries.test.tsv", "--qrels",
                                       TINY / "qrels.test.tsv", "--depth", 10, "--out", out],
        "train-tokenizer": lambda out: ["train-tokenizer", "--corpus",
                                        built / "data" / "corpus.parquet", "--out", out,
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
def test_a_file_output_in_the_way_is_refused_before_any_work(capsys, work, roots, built, stage,
                                                             kind):
    if stage == "report":
        shutil.copytree(built / "metrics", work / "metrics" / "m" / "test")
        argv = ["report", "--metrics", f"main={work / 'metrics'}", "--splits", "main:test",
                "--models", "m", "--plots", work / "plots"]
        out, expect = in_the_way(work, kind)
        refused(capsys, roots, *argv, "--out", out, expect=expect)
        return
    out, expect = in_the_way(work, kind)
    refused(capsys, roots, *file_outputs(built)[stage](out), expect=(str(out), *expect))


@pytest.mark.parametrize("kind", FOLDER_CASES)
@pytest.mark.parametrize("stage", ["data", "evaluate", "evaluate-model", "train-tokenizer"])
def test_a_folder_output_in_the_way_is_refused_before_any_work(capsys, work, roots, built,
                                                               stage, kind):
    out, expect = in_the_way(work, kind)
    refused(capsys, roots, *folder_outputs(built)[stage](out), expect=expect)


def test_search_writes_both_outputs_or_neither(capsys, work, roots, built):
    """A --trec that cannot be written (a bad tag, a folder in the way) is found before the run
    is written, not after."""
    argv = ["search", "--queries", built / "embeddings" / "test.parquet", "--corpus",
            built / "embeddings" / "corpus.parquet", "--out", work / "run.parquet"]
    refused(capsys, roots, *argv, "--trec", work / "run.trec", "--tag", "two words",
            expect=("run tag",))
    (work / "run.trec").mkdir()
    refused(capsys, roots, *argv, "--trec", work / "run.trec", expect=("is a folder",))


@pytest.mark.parametrize("existing", ["summary.md", "per_query.parquet", "summary.parquet"])
def test_evaluate_writes_none_of_its_files_unless_all_can_be(capsys, work, roots, built,
                                                             existing):
    out = work / "metrics"
    (out / existing).mkdir(parents=True)
    refused(capsys, roots, "evaluate", "--run", built / "run.parquet", "--qrels",
            built / "data" / "qrels" / "test.parquet", "--out", out,
            expect=(str(out / existing), "is a folder"))


@pytest.mark.parametrize("culprit", ["--out is a link", "--plots is a link to a folder outside"])
def test_report_writes_nothing_unless_every_output_can_be_written(capsys, work, roots, built,
                                                                  culprit):
    shutil.copytree(built / "metrics", work / "metrics" / "m" / "test")
    log = work / "training.parquet"
    write_table(pa.table({"step": [0, 1], "loss": [1.0, 0.5]}), log)
    (work / "outside").mkdir()
    out, plots = work / "report.md", work / "plots"
    if culprit == "--out is a link":
        (work / "outside" / "report.md").write_text("the user's file\n")
        out.symlink_to(work / "outside" / "report.md")
    else:
        plots.symlink_to(work / "outside")
    refused(capsys, roots, "report", "--metrics", f"main={work / 'metrics'}", "--splits",
            "main:test", "--models", "m", "--logs", f"student={log}", "--out", out,
            "--tables", work / "metrics.tsv", "--plots", plots, expect=("symbolic link",))


# --------------------------------------------------------------------------------------------
# Class 5: inputs that would score silently wrong.


def trec_run(path: Path, rows: list[tuple[str, str, int, float]]) -> Path:
    path.write_text("".join(f"{q} Q0 {d} {r} {s} t\n" for q, d, r, s in rows))
    return path


@pytest.fixture
def qrels_1_2(work) -> Path:
    path = work / "qrels.txt"
    path.write_text("1 0 d1 1\n2 0 d2 1\n")
    return path


@pytest.mark.parametrize("form", ["trec", "parquet"])
def test_float_query_ids_against_integer_ones_are_refused(capsys, work, roots, qrels_1_2, form):
    if form == "trec":
        run = trec_run(work / "run.trec", [("1.0", "d1", 1, 2.0), ("2.0", "d2", 1, 1.0)])
    else:  # a run exported by pandas with numeric ids
        run = work / "run.parquet"
        pq.write_table(pa.table({"query_id": [1.0, 2.0], "doc_id": ["d1", "d2"],
                                 "score": [2.0, 1.0]}), run)
    refused(capsys, roots, "evaluate", "--run", run, "--qrels", qrels_1_2, "--out",
            work / "metrics", expect=(str(run), "shares no query", "'1.0'", "'1'"))


def test_a_run_half_in_another_spelling_scores_with_a_written_warning(capsys, work, qrels_1_2):
    run = trec_run(work / "run.trec", [("1", "d1", 1, 2.0), ("2.0", "d2", 1, 1.0)])
    status, err = run_stage(capsys, "evaluate", "--run", run, "--qrels", qrels_1_2,
                            "--out", work / "metrics", "--measures", "RR@10")
    assert status == 0, err
    summary = (work / "metrics" / "summary.md").read_text()
    assert "covers 1 of the 2 counted queries" in summary and "1 missing (scored 0)" in summary


def test_a_run_sharing_no_query_with_the_qrels_is_refused(capsys, work, roots, built):
    run = trec_run(work / "run.trec", [("q-unknown", "d000120", 1, 1.0)])
    refused(capsys, roots, "evaluate", "--run", run, "--qrels",
            built / "data" / "qrels" / "test.parquet", "--out", work / "metrics",
            expect=("shares no query",))


@pytest.mark.parametrize("stage", ["evaluate", "export-trec"])
@pytest.mark.parametrize("form", ["trec", "parquet"])
def test_ranks_that_contradict_scores_are_refused(capsys, work, roots, qrels_1_2, stage, form):
    rows = [("1", "d1", 1, 0.5), ("1", "d9", 2, 0.9)]  # rank 2 scores above rank 1
    if form == "trec":
        run = trec_run(work / "run.trec", rows)
        where = f"{run}:2"
    else:
        run = work / "run.parquet"
        q, d, r, s = zip(*rows, strict=True)
        pq.write_table(pa.table({"query_id": q, "doc_id": d, "rank": r, "score": s}), run)
        where = f"{run} (row 1)"
    argv = (["evaluate", "--run", run, "--qrels", qrels_1_2, "--out", work / "metrics"]
            if stage == "evaluate" else ["export-trec", "--run", run, "--out", work / "o.trec",
                                         "--tag", "t"])
    refused(capsys, roots, *argv, expect=(where, "ranks must follow descending scores"))


@pytest.mark.parametrize("score", ["nan", "inf", "-inf", "1e999"])
def test_a_run_with_a_non_finite_score_is_refused(capsys, work, roots, qrels_1_2, score):
    run = work / "run.trec"
    run.write_text(f"1 Q0 d1 1 {score} t\n")
    refused(capsys, roots, "evaluate", "--run", run, "--qrels", qrels_1_2, "--out",
            work / "metrics", expect=(f"{run}:1", "is not a finite number"))


@pytest.mark.parametrize("doc_id", ["p0 x", "p0\u00a0x", "p0\u2003x", "p0\x0bx", "p0\x1fx"])
def test_a_corpus_id_with_whitespace_or_control_characters_is_refused(capsys, work, roots,
                                                                      doc_id):
    settings = small_files(work / "in", corpus=f"{doc_id}\tsome text\n".encode())
    refused(capsys, roots, *data(settings, work / "out"),
            expect=(f"{work / 'in' / 'corpus.tsv'}:1", repr(doc_id), "whitespace"))


@pytest.mark.parametrize("file, first_line", [
    ("corpus.tsv", b"doc_id\ttext\n"), ("corpus.tsv", b"id\ttitle\ttext\n"),
    ("corpus.tsv", b"docno\ttext\n"), ("queries.tsv", b"qid\ttext\n"),
    ("qrels.txt", b"query_id iteration doc_id relevance\n"),
])
def test_a_header_line_is_not_taken_for_a_record(capsys, work, roots, file, first_line):
    contents = {"corpus": b"p0\tsome text\np1\tother text\n", "queries": b"q0\ta query\n",
                "qrels": b"q0 Q0 p0 1\n"}
    stem = file.split(".")[0]
    contents[stem] = first_line + contents[stem]
    settings = small_files(work / "in", **contents)
    refused(capsys, roots, *data(settings, work / "out"), expect=(f"{work / 'in' / file}:1",))


@pytest.mark.parametrize("file, contents, message", [
    ("corpus.tsv", b"p0\tsome\x00text\n", "NUL byte"),
    ("queries.tsv", b"q0\ta\x00query\n", "NUL byte"),
    ("queries.tsv", "q0\ta query\n".encode("utf-16-le"), "NUL byte"),
    ("queries.tsv", "q0\ta query\n".encode("utf-16"), "invalid UTF-8"),  # with its BOM
])
def test_nul_bytes_and_utf16_are_refused_naming_the_line(capsys, work, roots, file, contents,
                                                         message):
    settings = small_files(work / "in", **{file.split(".")[0]: contents})
    refused(capsys, roots, *data(settings, work / "out"),
            expect=(f"{work / 'in' / file}:1", message))


def test_a_nul_character_in_a_beir_text_is_refused(capsys, work, roots):
    settings = beir_folder(work / "in", corpus=b'{"_id": "p0", "text": "some\\u0000text"}\n')
    refused(capsys, roots, *data(settings, work / "out"),
            expect=(f"{work / 'in' / 'corpus.jsonl'}:1", "NUL"))


@pytest.mark.parametrize("source", ["trec", "beir"])
def test_a_byte_order_mark_mid_file_never_becomes_part_of_an_id(capsys, work, source):
    """Files concatenated with cat: the second one's BOM starts a line."""
    if source == "trec":
        settings = small_files(work / "in", corpus=b"p0\tsome text\n\xef\xbb\xbfp1\tother\n",
                               queries=b"q0\ta query\n\xef\xbb\xbfq1\tanother\n",
                               qrels=b"q0 Q0 p0 1\nq1 Q0 p1 1\n")
    else:
        settings = beir_folder(
            work / "in", corpus=b'{"_id": "p0", "text": "x"}\n\xef\xbb\xbf{"_id": "p1", '
                                b'"text": "y"}\n',
            queries=b'{"_id": "q0", "text": "a"}\n\xef\xbb\xbf{"_id": "q1", "text": "b"}\n',
            qrels=b"query-id\tcorpus-id\tscore\nq0\tp0\t1\nq1\tp1\t1\n")
    status, err = run_stage(capsys, *data(settings, work / "out"))
    assert status == 0, err
    assert read_table(work / "out" / "corpus.parquet", CORPUS)["doc_id"].to_pylist() == [
        "p0", "p1"]
    assert pq.read_table(work / "out" / "qrels" / "test.parquet")["query_id"].to_pylist() == [
        "q0", "q1"]


@pytest.mark.parametrize("how", ["the same file", "a link to it", "a copy of it"])
def test_train_and_test_built_from_the_same_judgments_are_refused(capsys, work, roots, how):
    settings = small_files(work / "in")
    local = settings["local"]
    train = Path(local["qrels"]["test"])
    if how == "a link to it":
        (work / "in" / "train.txt").symlink_to(train)
        train = work / "in" / "train.txt"
    elif how == "a copy of it":
        shutil.copy(train, work / "in" / "train.txt")
        train = work / "in" / "train.txt"
    local["queries"]["train"], local["qrels"]["train"] = local["queries"]["test"], str(train)
    refused(capsys, roots, *data(settings, work / "out"), expect=("leakage",))


# --------------------------------------------------------------------------------------------
# Class 6: inputs that used to end in a traceback (or an exit status of 1).


def parquet_inputs(built: Path, work: Path) -> dict[str, tuple[list, int]]:
    """Stages with a file input, as (argv, index of the input in argv)."""
    data, emb = built / "data", built / "embeddings"
    qrels = data / "qrels" / "train.parquet"
    return {
        "tokenize --input": (["tokenize", "--tokenizer", built / "model", "--input", None,
                              "--out", work / "t.parquet", "--max-length", 16], 4),
        "encode --tokens": (["encode", "--model", built / "model", "--tokens", None, "--role",
                             "query", "--out", work / "e.parquet"], 4),
        "search --queries": (["search", "--queries", None, "--corpus", emb / "corpus.parquet",
                              "--out", work / "r.parquet"], 2),
        "search --corpus": (["search", "--queries", emb / "test.parquet", "--corpus", None,
                             "--out", work / "r.parquet"], 4),
        "evaluate --run": (["evaluate", "--run", None, "--qrels", qrels, "--out",
                            work / "m"], 2),
        "evaluate --qrels": (["evaluate", "--run", built / "run.parquet", "--qrels", None,
                              "--out", work / "m"], 4),
        "export-trec --run": (["export-trec", "--run", None, "--out", work / "r.trec",
                               "--tag", "t"], 2),
        "compare --per-query": (["compare", "--per-query", None,
                                 built / "metrics" / "per_query.parquet", "--measure", "RR@10",
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
        "cache-teacher --tokens": (["cache-teacher", "--model", built / "model", "--tokens",
                                    None, "--role", "query", "--out", work / "c.parquet"], 4),
    }


PARQUET_INPUTS = ["tokenize --input", "encode --tokens", "search --queries", "search --corpus",
                  "evaluate --run", "evaluate --qrels", "export-trec --run",
                  "compare --per-query", "negatives --corpus", "negatives --qrels",
                  "negatives --run", "train-tokenizer --corpus", "cache-teacher --tokens"]


@pytest.mark.parametrize("what", ["a folder", "a text file named .parquet", "an empty file"])
@pytest.mark.parametrize("case", PARQUET_INPUTS)
def test_a_broken_input_file_is_one_line_naming_it(capsys, work, roots, built, case, what):
    """chmod 000 does not bite as root: a folder, or bytes that are not parquet, instead."""
    bad = work / "input.parquet"
    if what == "a folder":
        bad.mkdir()
    else:
        bad.write_bytes(b"" if what == "an empty file" else b"query_id\tdoc_id\n")
    argv, index = parquet_inputs(built, work)[case]
    argv[index] = bad
    refused(capsys, roots, *argv, expect=(str(bad),))


@pytest.mark.parametrize("key", ["corpus", "queries", "qrels", "given"])
def test_a_folder_given_as_a_text_input_is_one_line_naming_it(capsys, work, roots, built, key):
    folder = work / "a-folder"
    folder.mkdir()
    if key == "given":
        argv = ["negatives", "--settings", json.dumps({"source": "given"}), "--given", folder,
                "--corpus", built / "data" / "corpus.parquet", "--qrels",
                built / "data" / "qrels" / "train.parquet", "--out", work / "g.parquet"]
    else:
        settings = small_files(work / "in")
        local = settings["local"]
        if key == "corpus":
            local["corpus"] = str(folder)
        else:
            local[key]["test"] = str(folder)
        argv = data(settings, work / "out")
    refused(capsys, roots, *argv, expect=(str(folder), "is a folder, expected a file"))


def test_a_folder_given_as_a_beir_file_is_one_line_naming_it(capsys, work, roots):
    settings = beir_folder(work / "in")
    (work / "in" / "corpus.jsonl").unlink()
    (work / "in" / "corpus.jsonl").mkdir()
    refused(capsys, roots, *data(settings, work / "out"),
            expect=(str(work / "in" / "corpus.jsonl"), "is a folder"))


@pytest.mark.parametrize("file", ["corpus.jsonl", "queries.jsonl"])
@pytest.mark.parametrize("nesting", [b"[" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000])
def test_a_deeply_nested_json_line_is_one_line_naming_it(capsys, work, roots, file, nesting):
    line = b'{"_id": "x", "text": ' + nesting + b"}\n"
    settings = beir_folder(work / "in", **{file.split(".")[0]: line})
    refused(capsys, roots, *data(settings, work / "out"),
            expect=(f"{work / 'in' / file}:1", "nested too deeply"))


@pytest.mark.parametrize("damage", ["not gzip at all", "cut short"])
@pytest.mark.parametrize("file", ["corpus", "queries", "given triples"])
def test_a_broken_gzip_input_is_one_line_naming_it(capsys, work, roots, built, file, damage):
    import gzip

    if file == "given triples":
        text = b"".join(f"{q}\t{d}\td000120\n".encode() for q, d in zip(
            pq.read_table(built / "data" / "qrels" / "train.parquet")["query_id"].to_pylist(),
            pq.read_table(built / "data" / "qrels" / "train.parquet")["doc_id"].to_pylist(),
            strict=True)) * 200
    else:
        text = (TINY / ("collection.tsv" if file == "corpus" else "queries.test.tsv")
                ).read_bytes()
    packed = gzip.compress(text)
    broken = text if damage == "not gzip at all" else packed[: len(packed) // 2]
    path = work / "in" / "file.tsv.gz"
    path.parent.mkdir()
    path.write_bytes(broken)
    if file == "given triples":
        argv = ["negatives", "--settings", json.dumps({"source": "given"}), "--given", path,
                "--corpus", built / "data" / "corpus.parquet", "--qrels",
                built / "data" / "qrels" / "train.parquet", "--out", work / "g.parquet"]
    else:
        queries = path if file == "queries" else TINY / "queries.test.tsv"
        corpus = path if file == "corpus" else TINY / "collection.tsv"
        argv = data(local_settings(corpus, {"test": queries}, {"test": TINY / "qrels.test.tsv"}),
                    work / "out")
    refused(capsys, roots, *argv, expect=(str(path),))


def damaged_model(built: Path, work: Path, damage: str, name: str = "model") -> Path:
    model = work / name
    shutil.copytree(built / "model", model)
    weights = model / "model.safetensors"
    config = json.loads((model / "config.json").read_text())
    if damage == "empty weights":
        weights.write_bytes(b"")
    elif damage == "weights cut in the header":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "weights cut at the end":
        weights.write_bytes(weights.read_bytes()[:-64])
    elif damage == "weights a folder":
        weights.unlink()
        weights.mkdir()
    else:
        changes = {"config: hidden size": {"hidden_size": 32},
                   "config: more layers": {"num_hidden_layers": 4},
                   "config: fewer layers": {"num_hidden_layers": 1},
                   "config: another model type": {"model_type": "gpt2"}}[damage]
        (model / "config.json").write_text(json.dumps({**config, **changes}))
    return model


DAMAGES = ["empty weights", "weights cut in the header", "weights cut at the end",
           "weights a folder", "config: hidden size", "config: more layers",
           "config: fewer layers", "config: another model type"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_encode_refuses_a_broken_model_directory(capsys, work, roots, built, damage):
    model = damaged_model(built, work, damage)
    refused(capsys, roots, "encode", "--model", model, "--tokens",
            built / "tokens" / "test.parquet", "--role", "query", "--out", work / "e.parquet",
            expect=(str(model),))


@pytest.mark.parametrize("shard, shards", [(0, 0), (2, 2), (-1, 2)])
def test_encode_refuses_a_shard_that_does_not_exist(capsys, work, roots, built, shard, shards):
    """`--num-shards 0` used to be taken for "the settings' number", and encoded everything."""
    refused(capsys, roots, "encode", "--model", built / "model", "--tokens",
            built / "tokens" / "test.parquet", "--role", "query", "--shard", shard,
            "--num-shards", shards, "--out", work / "e.parquet",
            expect=(f"shard {shard} of {shards}",))


def training_argv(built: Path, work: Path, stage: str, teacher: Path, student: Path) -> list:
    optimisation = {"steps": 2, "batch_size": 2, "negatives_per_query": 1, "eval_every": 1,
                    "checkpoint_every": 1}
    tokens = built / "tokens"
    common = ["--groups", built / "groups.parquet", "--dev-query-tokens", tokens / "dev.parquet",
              "--dev-qrels", built / "data" / "qrels" / "dev.parquet", "--out", work / "trained",
              "--log", work / "training.parquet", "--checkpoint-dir", work / "checkpoints"]
    if stage == "warmup":
        return ["warmup", "--settings", json.dumps({"optimisation": optimisation}), "--model",
                student, "--corpus-tokens", tokens / "corpus.parquet", "--query-tokens",
                tokens / "train.parquet", *common]
    return ["distill", "--method", "response", "--settings",
            json.dumps({"distillation": {"optimisation": optimisation}}), "--teacher", teacher,
            "--student", student, *(arg for role in ("teacher", "student") for arg in (
                f"--{role}-corpus-tokens", tokens / "corpus.parquet",
                f"--{role}-query-tokens", tokens / "train.parquet")), *common]


@pytest.mark.parametrize("damage", ["empty weights", "weights cut at the end",
                                    "config: more layers"])
@pytest.mark.parametrize("role", ["teacher", "student"])
def test_distill_refuses_a_broken_model_directory(capsys, work, roots, built, role, damage):
    model = damaged_model(built, work, damage, name=role)
    teacher, student = (model, built / "model") if role == "teacher" else (built / "model", model)
    refused(capsys, roots, *training_argv(built, work, "distill", teacher, student),
            expect=(str(model),))


@pytest.mark.parametrize("checkpoint", ["garbage", "empty", "a folder", "a zip of nothing"])
@pytest.mark.parametrize("stage", ["warmup", "distill"])
def test_a_corrupt_checkpoint_is_one_line_naming_it(capsys, work, roots, built, stage,
                                                    checkpoint):
    path = work / "checkpoints" / "checkpoint.pt"
    path.parent.mkdir()
    if checkpoint == "a folder":
        path.mkdir()
    elif checkpoint == "a zip of nothing":
        import zipfile

        with zipfile.ZipFile(path, "w"):
            pass
    else:
        path.write_bytes(b"" if checkpoint == "empty" else b"not a checkpoint at all")
    refused(capsys, roots, *training_argv(built, work, stage, built / "model", built / "model"),
            expect=(str(path), "corrupt checkpoint"))


BAD_VALUES = {"encode": ('{"batch_size": "x"}', "config key encode.batch_size"),
              "search": ('{"depth": 0}', "config key search.depth"),
              "negatives": ('{"depth": -1}', "config key negatives.depth")}


@pytest.mark.parametrize("settings", ["[1, 2]", '"a string"', "42", "a bad value",
                                      '{"unknown_key": 1}'])
@pytest.mark.parametrize("stage", ["encode", "search", "negatives"])
def test_settings_that_are_not_the_stage_section_are_one_line(capsys, work, roots, built, stage,
                                                              settings):
    argv = {"encode": ["encode", "--model", built / "model", "--tokens",
                       built / "tokens" / "test.parquet", "--role", "query"],
            "search": ["search", "--queries", built / "embeddings" / "test.parquet", "--corpus",
                       built / "embeddings" / "corpus.parquet"],
            "negatives": ["negatives", "--qrels", built / "data" / "qrels" / "train.parquet"],
            }[stage]
    if settings == "a bad value":
        settings, expect = BAD_VALUES[stage]
    elif "unknown_key" in settings:
        expect = f"config key {stage}: Additional properties are not allowed ('unknown_key'"
    else:
        expect = f"--settings must be a mapping, got {type(json.loads(settings)).__name__}"
    refused(capsys, roots, *argv, "--settings", settings, "--out", work / "out.parquet",
            expect=(expect,))


@pytest.mark.parametrize("settings", ["{a: [", "key: value: other", "\t- tab"])
def test_settings_that_are_not_yaml_are_one_line(capsys, work, roots, built, settings):
    refused(capsys, roots, "encode", "--model", built / "model", "--tokens",
            built / "tokens" / "test.parquet", "--role", "query", "--settings", settings,
            "--out", work / "e.parquet", expect=("--settings is not valid JSON/YAML",))


@pytest.mark.parametrize("tokenizer", ["an empty folder", "a broken tokenizer.json"])
@pytest.mark.parametrize("stage", ["tokenize", "init-model"])
def test_a_folder_that_is_no_tokenizer_is_one_line(capsys, work, roots, built, stage, tokenizer):
    folder = work / "tokenizer"
    folder.mkdir()
    if tokenizer == "a broken tokenizer.json":
        (folder / "tokenizer.json").write_text('{"version": ')
    argv = (["tokenize", "--tokenizer", folder, "--input",
             built / "data" / "queries" / "test.parquet", "--out", work / "t.parquet",
             "--max-length", 16] if stage == "tokenize" else
            ["init-model", "--settings", json.dumps({"init": "random"}), "--tokenizer", folder,
             "--out", work / "model"])
    refused(capsys, roots, *argv, expect=(str(folder), "cannot load a tokenizer"))


@pytest.mark.parametrize("tokens", [[[2, 10**6, 3]], [[2, -1, 3]], [[]], [None]])
def test_encode_refuses_tokens_the_model_cannot_read(capsys, work, roots, built, tokens):
    path = work / "tokens.parquet"
    pq.write_table(pa.table({"id": ["x"], "input_ids": pa.array(tokens,
                                                                pa.list_(pa.int32()))}), path)
    refused(capsys, roots, "encode", "--model", built / "model", "--tokens", path, "--role",
            "query", "--out", work / "e.parquet", expect=(str(path),))


@pytest.mark.parametrize("vectors", ["another dimension", "non-finite"])
def test_search_refuses_embeddings_that_do_not_fit(capsys, work, roots, built, vectors):
    queries = work / "queries.parquet"
    dim = 8 if vectors == "another dimension" else 16
    values = np.full((1, dim), np.nan if vectors == "non-finite" else 1.0, dtype=np.float32)
    pq.write_table(pa.table({"id": ["q0"], "embedding": pa.FixedSizeListArray.from_arrays(
        pa.array(values.ravel()), dim)}), queries)
    refused(capsys, roots, "search", "--queries", queries, "--corpus",
            built / "embeddings" / "corpus.parquet", "--out", work / "run.parquet",
            expect=(str(queries) if vectors == "non-finite" else "dimension",))


def test_an_unexpected_failure_is_one_line_and_debug_gives_the_traceback(capsys, monkeypatch):
    """A failure lead did not foresee (a library's RuntimeError over several lines) still ends
    in one line with status 1, pointing at --debug; --debug raises it with its traceback."""
    from lead.cli import check_config

    def fails(args):
        raise RuntimeError("a kernel failed\n  at line 3\n    ^^^^")

    monkeypatch.setattr(check_config, "run", fails)
    status, err = run_stage(capsys, "check-config")
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 1 and len(lines) == 1, err
    assert lines[0] == ("lead check-config: error: RuntimeError: a kernel failed at line 3 ^^^^ "
                        "(rerun with --debug for the traceback)")
    with pytest.raises(RuntimeError, match="a kernel failed"):
        run_stage(capsys, "check-config", "--debug")
