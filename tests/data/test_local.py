"""BEIR folders and TREC/TSV files (lead.data.local): what is read, every bad line named."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from data_files import (
    CORPUS,
    QRELS,
    QUERIES,
    corpus_of,
    qrels_of,
    query_ids,
    splits_of,
    write_local,
)
from hostile import beir_folder, data, refused, run_stage, small_files
from repo import FIXTURES

from lead import schemas
from lead.data.sources import build_dataset
from lead.errors import DataError
from lead.io import read_table

DATA = FIXTURES / "data"  # small files of every source


def test_beir_directory(tmp_path):
    out = tmp_path / "data"
    settings = {"source": "beir", "dev_queries": 1, "beir": {"path": str(DATA / "beir")}}
    build_dataset(settings, out)
    corpus = corpus_of(out)
    assert list(corpus) == ["doc-a", "doc-b", "doc-c", "doc-d", "doc-e"]
    assert corpus["doc-b"]["title"] == "" and corpus["doc-a"]["title"] == "Aspirin"
    assert splits_of(out) == ["dev", "test", "train"]
    assert sorted(query_ids(out, "train") + query_ids(out, "dev")) == ["q-1", "q-2", "q-3"]
    assert query_ids(out, "test") == ["q-4", "q-5"]
    assert qrels_of(out, "test") == [("q-4", "doc-d", 1), ("q-5", "doc-a", 0), ("q-5", "doc-e", 2)]


@pytest.mark.parametrize("source, suffix", [("trec", "trec"), ("tsv", "tsv")])
def test_local_files(tmp_path, source, suffix):
    local = DATA / "local"
    settings = {
        "source": source,
        "dev_queries": 1,
        "local": {
            "corpus": str(local / "corpus.tsv"),
            "queries": {s: str(local / f"queries.{s}.tsv") for s in ("train", "test")},
            "qrels": {s: str(local / f"qrels.{s}.{suffix}") for s in ("train", "test")},
        },
    }
    out = tmp_path / "data"
    build_dataset(settings, out)
    assert corpus_of(out)["p0"] == {"doc_id": "p0", "title": "Aspirin",
                                     "text": "Aspirin reduces fever and pain."}
    assert splits_of(out) == ["dev", "test", "train"]
    assert qrels_of(out, "test") == [("e1", "p3", 1), ("e2", "p0", 0), ("e2", "p4", 2)]
    assert len(query_ids(out, "train")) == 2 and len(query_ids(out, "dev")) == 1


@pytest.mark.parametrize(
    "corpus, queries, qrels, source, where, message",
    [
        ([*CORPUS[:2], "p2\tthird\tpassage"], QUERIES, QRELS, "trec", "corpus.tsv:3",
         "expected 2 tab-separated columns, found 3"),
        (CORPUS, QUERIES, [*QRELS[:1], "q1 Q0 p1 high"], "trec", "qrels.txt:2",
         "relevance grade 'high' is not an integer"),
        (CORPUS, QUERIES, [*QRELS[:2], "q2 Q0 p2"], "trec", "qrels.txt:3",
         "expected 4 blank-separated columns, found 3"),
        (CORPUS, QUERIES, QRELS, "tsv", "qrels.txt:1", "expected 4 tab-separated columns, found 1"),
        ([*CORPUS, "p0\tagain"], QUERIES, QRELS, "trec", "corpus.tsv:4",
         "duplicate document id 'p0' (first at line 1)"),
        (CORPUS, [*QUERIES, "q1\tagain"], QRELS, "trec", "queries.tsv:4",
         "duplicate query id 'q1' (first at line 2)"),
        (CORPUS, QUERIES, [*QRELS, "q0 Q0 p0 2"], "trec", "qrels.txt:4",
         "duplicate judgment of query 'q0' and document 'p0' (first at line 1)"),
        ([*CORPUS, "\tno id"], QUERIES, QRELS, "trec", "corpus.tsv:4", "empty document id"),
        ([*CORPUS[:1], b"p1\tcaf\xe9 latin-1", *CORPUS[2:]], QUERIES, QRELS, "trec",
         "corpus.tsv:2", "invalid UTF-8 at byte 7 of the line"),
        ([*CORPUS[:1], "p1\t  ", *CORPUS[2:]], QUERIES, QRELS, "trec", "corpus.tsv:2",
         "empty document text"),
        (CORPUS, [*QUERIES[:1], "q1\t", *QUERIES[2:]], QRELS, "trec", "queries.tsv:2",
         "empty query text"),
        (CORPUS, QUERIES, [*QRELS, "zz Q0 p1 1"], "trec", "qrels.txt:4",
         "query 'zz' is not in"),
        (CORPUS, QUERIES, [*QRELS[:1], "q1 Q0 p9 1", *QRELS[2:]], "trec", "qrels.txt:2",
         "document 'p9' is not in the corpus"),
        # A header line would become a document or a query.
        (["id\ttext", *CORPUS], QUERIES, QRELS, "trec", "corpus.tsv:1",
         "starts with a header line ('id' is a column name, not an id): remove the header"),
        (["docid\ttitle\ttext", *CORPUS], QUERIES, QRELS, "trec", "corpus.tsv:1",
         "('docid' is a column name"),
        (["PID\tpassage", *CORPUS], QUERIES, QRELS, "trec", "corpus.tsv:1", "('PID' is a column"),
        (["_id\ttext", *CORPUS], QUERIES, QRELS, "trec", "corpus.tsv:1", "('_id' is a column"),
        (CORPUS, ["qid\tquery", *QUERIES], QRELS, "trec", "queries.tsv:1", "('qid' is a column"),
        (CORPUS, QUERIES, ["qid Q0 docid rel", *QRELS], "trec", "qrels.txt:1",
         "('qid' is a column"),
        # NUL bytes: binary data or UTF-16, never text.
        ([*CORPUS[:1], "p1\tsec\x00ond", *CORPUS[2:]], QUERIES, QRELS, "trec", "corpus.tsv:2",
         "NUL byte at byte 7 of the line"),
        (CORPUS, [*QUERIES[:2], "q2\tquery\x00"], QRELS, "trec", "queries.tsv:3",
         "NUL byte at byte 9 of the line"),
        # Ids with blanks break the TREC run format.
        ([*CORPUS, "p 3\tfourth passage"], QUERIES, QRELS, "trec", "corpus.tsv:4",
         "document id 'p 3' contains whitespace"),
        (CORPUS, [*QUERIES[:1], "q\u00a01\tquery one", *QUERIES[2:]], QRELS, "trec",
         "queries.tsv:2", "query id 'q\\xa01' contains whitespace"),
        (CORPUS, QUERIES, [*[line.replace(" ", "\t") for line in QRELS], "q0\t0\tp 1\t1"],
         "tsv", "qrels.txt:4", "document id 'p 1' contains whitespace"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, corpus, queries, qrels, source, where, message):
    out = tmp_path / "data"
    with pytest.raises(DataError) as err:
        build_dataset(write_local(tmp_path, corpus, queries, qrels, source), out)
    assert f"{where}: " in str(err.value) and message in str(err.value)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_lenient_mode_counts_and_drops(tmp_path, caplog):
    settings = write_local(
        tmp_path,
        [*CORPUS, "p3\t "],
        QUERIES,
        [*QRELS, "zz Q0 p1 1", "q1 Q0 p9 1", "q2 Q0 p8 1"],
        strict=False,
    )
    out = tmp_path / "data"
    with caplog.at_level("WARNING"):
        build_dataset(settings, out)
    assert corpus_of(out)["p3"]["text"] == " "  # kept, as counted
    qrels = qrels_of(out, "train") + qrels_of(out, "dev")
    assert sorted(qrels) == [("q0", "p0", 1), ("q1", "p1", 1), ("q2", "p2", 1)]
    assert "1 data problems: drop judgments of unknown queries" in caplog.text
    assert "2 data problems: drop judgments of unknown documents" in caplog.text
    assert "qrels.txt:6: document 'p8'" not in caplog.text  # only the first case is shown


def test_byte_order_marks_starting_a_line_are_removed_and_counted(tmp_path, caplog):
    """Files concatenated with `cat` carry a BOM at each junction, which would end up in an
    id; a U+FEFF inside a text is a (zero-width) character and stays."""
    bom = "\ufeff"
    corpus = [f"{bom}{CORPUS[0]}", CORPUS[1], f"{bom}p2\tthird{bom} passage"]
    settings = write_local(tmp_path, corpus, [*QUERIES[:2], bom + QUERIES[2]],
                           [*QRELS[:2], bom + QRELS[2]])
    out = tmp_path / "data"
    with caplog.at_level("INFO"):
        build_dataset(settings, out)
    assert sorted(corpus_of(out)) == ["p0", "p1", "p2"]
    assert corpus_of(out)["p2"]["text"] == f"third{bom} passage"
    assert sorted(query_ids(out, "train") + query_ids(out, "dev")) == ["q0", "q1", "q2"]
    # the BOM opening the corpus file is expected and not counted; the three others are
    assert "3 repaired: byte-order marks starting a line removed" in caplog.text


def test_beir_ids_and_texts_are_checked_as_tsv_ones(tmp_path, caplog):
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "q"}\n')
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\ta\t1\n")
    settings = {"source": "beir", "eval_splits": ["test"],
                "beir": {"path": str(root), "splits": {"test": "test"}}}
    for corpus, message in (
        ('{"_id": "a", "text": "x"}\n{"_id": "b", "text": "nul\\u0000"}\n',
         r"corpus\.jsonl:2: field 'text' contains a NUL character"),
        ('{"_id": "a", "text": "x"}\n{"_id": "b c", "text": "y"}\n',
         r"corpus\.jsonl:2: document id 'b c' contains whitespace"),
    ):
        (root / "corpus.jsonl").write_text(corpus)
        with pytest.raises(DataError, match=message):
            build_dataset(settings, tmp_path / "out")
    (root / "corpus.jsonl").write_text('\ufeff{"_id": "a", "text": "x"}\n'
                                       '\ufeff{"_id": "b", "text": "y"}\n')
    with caplog.at_level("INFO"):
        build_dataset(settings, tmp_path / "out")
    assert sorted(corpus_of(tmp_path / "out")) == ["a", "b"]
    assert "1 repaired: byte-order marks starting a line removed" in caplog.text


def test_bad_beir_files(tmp_path):
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": 3}\n')
    (root / "queries.jsonl").write_text('{"_id": 1, "text": "q"}\n')
    (root / "qrels" / "test.tsv").write_text("1\ta\t1\n")
    settings = {"source": "beir", "beir": {"path": str(root), "splits": {"test": "test"}}}
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: field 'text' is a int"):
        build_dataset(settings, tmp_path / "out")
    (root / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: invalid JSON"):
        build_dataset(settings, tmp_path / "out")
    (root / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n')
    with pytest.raises(DataError, match=r"test\.tsv:1: expected the header line"):
        build_dataset(settings, tmp_path / "out")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\ta\t1\n")
    build_dataset(settings, tmp_path / "out")  # numeric JSON ids become strings
    assert qrels_of(tmp_path / "out", "test") == [("1", "a", 1)]


# Hostile input: each refusal is one line naming the culprit, and changes no file (hostile.py).


def test_a_beir_file_stem_that_would_leave_the_folder_is_refused(capsys, work, roots):
    settings = beir_folder(work / "in")
    settings["beir"]["splits"] = {"test": "../../../qrels-elsewhere"}
    (work / "qrels-elsewhere.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tp0\t1\n")
    refused(capsys, roots, *data(settings, work / "out"), expect=("does not lie inside",))


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
    assert read_table(work / "out" / "corpus.parquet", schemas.CORPUS)["doc_id"].to_pylist() == [
        "p0", "p1"]
    assert pq.read_table(work / "out" / "qrels" / "test.parquet")["query_id"].to_pylist() == [
        "q0", "q1"]


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


@pytest.mark.parametrize("grade", [b"65536", b"-100000000", b"999999999"])
def test_a_relevance_grade_scoring_could_not_afford_is_refused(capsys, work, roots, grade):
    """The data stage took 999999999, which evaluate then costs 8 GB of trec_eval's memory
    for (lead.schemas.MAX_RELEVANCE): refused here, before any training."""
    settings = small_files(work / "in", qrels=b"q0 Q0 p0 1\nq0 Q0 p1 " + grade + b"\n")
    refused(capsys, roots, *data(settings, work / "out"), expect=(
        f"{work / 'in' / 'qrels.txt'}:2: relevance grade {int(grade)} is outside "
        "-65535..65535",))
