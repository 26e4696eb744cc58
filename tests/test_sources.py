"""Every data source to parquet: MS MARCO (served locally), BEIR, TREC/TSV files, bad input."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from data_server import FileServer

from lead import schemas
from lead.__main__ import main
from lead.data.msmarco import convert_collection
from lead.data.sources import build_dataset
from lead.data.text import repair_mojibake_text
from lead.data.tsv import iter_tsv
from lead.errors import ConfigError, DataError
from lead.io import read_provenance, read_table

FIXTURES = Path(__file__).parent / "fixtures" / "data"
PASSAGE, DOCUMENT = FIXTURES / "msmarco-passage", FIXTURES / "msmarco-document"


def _gz(path: Path) -> bytes:
    return gzip.compress(path.read_bytes(), mtime=0)


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def marco():
    """MS MARCO, TREC and RocketQA files, shrunk to fixtures, on a local server."""
    inside = ["collection.tsv", "queries.train.tsv", "queries.dev.small.tsv", "qrels.train.tsv",
              "qrels.dev.small.tsv"]
    files = {
        "/marco/collectionandqueries.tar.gz":
            _tar_gz({name: (PASSAGE / name).read_bytes() for name in inside}),
        "/rocketqa/marco.tar.gz": _tar_gz({f"marco/{name}": (PASSAGE / name).read_bytes()
                                           for name in ("para.txt", "para.title.txt")}),
    }
    for year in ("2019", "2020"):
        name = f"msmarco-test{year}-queries.tsv"
        files[f"/marco/{name}.gz"] = _gz(PASSAGE / name)
        files[f"/trec/{year}qrels-pass.txt"] = (PASSAGE / f"{year}qrels-pass.txt").read_bytes()
        files[f"/trec/{year}qrels-docs.txt"] = (DOCUMENT / f"{year}qrels-docs.txt").read_bytes()
    for path in DOCUMENT.glob("msmarco-*.tsv"):
        files[f"/marco/{path.name}.gz"] = _gz(path)
    with FileServer(files) as server:
        yield server


def marco_settings(server: FileServer, source: str, **msmarco) -> dict:
    splits = ["dev-small", "dl19", "dl20"] if source == "msmarco-passage" else ["dl19", "dl20"]
    return {
        "source": source,
        "eval_splits": splits,
        "dev_queries": 2,
        "msmarco": {
            "base_url": f"{server.url}/marco",
            "trec_url": f"{server.url}/trec/",
            "rocketqa_url": f"{server.url}/rocketqa/marco.tar.gz",
            "verify_checksums": False,
            **msmarco,
        },
    }


def corpus_of(out: Path) -> dict[str, dict]:
    rows = read_table(out / "corpus.parquet", schemas.CORPUS).to_pylist()
    return {row["doc_id"]: row for row in rows}


def query_ids(out: Path, split: str) -> list[str]:
    return read_table(out / "queries" / f"{split}.parquet", schemas.QUERIES)["query_id"].to_pylist()


def qrels_of(out: Path, split: str) -> list[tuple[str, str, int]]:
    rows = read_table(out / "qrels" / f"{split}.parquet", schemas.QRELS).to_pylist()
    return [(r["query_id"], r["doc_id"], r["relevance"]) for r in rows]


def splits_of(out: Path) -> list[str]:
    return sorted(p.stem for p in (out / "queries").glob("*.parquet"))


def test_msmarco_passage_end_to_end(tmp_path, marco):
    out, cache = tmp_path / "data", tmp_path / "cache"
    build_dataset(marco_settings(marco, "msmarco-passage"), out, cache)

    corpus = corpus_of(out)
    assert list(corpus) == [str(pid) for pid in range(12)]
    assert corpus["2"]["text"] == "The café served a naïve espresso to Dvořák fans."
    assert corpus["3"]["text"] == "A genuine café sits next to the résumé office."
    assert corpus["11"]["text"].startswith("It\u00e2\u20ac\u2122s")  # not latin-1: untouched
    assert {row["title"] for row in corpus.values()} == {""}

    assert splits_of(out) == ["dev", "dev-small", "dl19", "dl20", "train"]
    train, dev = query_ids(out, "train"), query_ids(out, "dev")
    assert len(dev) == 2 and not set(dev) & set(train)
    assert sorted(train + dev) == [str(q) for q in range(1000, 1009)]  # 1009 has no judgment
    assert train == sorted(train)
    assert query_ids(out, "dl19") == ["3001", "3002"]  # the unjudged 3003 is left out
    assert qrels_of(out, "dl19") == [("3001", "0", 3), ("3001", "5", 0), ("3002", "1", 2),
                                     ("3002", "3", 1)]
    assert qrels_of(out, "dev-small") == [("2000", "2", 1), ("2001", "6", 1)]
    judged_twice = [r for split in ("train", "dev") for r in qrels_of(out, split) if r[0] == "1007"]
    assert judged_twice == [("1007", "2", 1), ("1007", "9", 1)]  # sorted by document id
    prov = read_provenance(out / "qrels" / "dl20.parquet")
    assert prov["source"] == "msmarco-passage" and prov["settings"]["dev_queries"] == 2

    # Same settings, warm cache: no download, byte-identical artifacts.
    requests = len(marco.requests)
    build_dataset(marco_settings(marco, "msmarco-passage"), tmp_path / "again", cache)
    assert len(marco.requests) == requests
    for path in sorted(out.rglob("*.parquet")):
        assert path.read_bytes() == (tmp_path / "again" / path.relative_to(out)).read_bytes()


def test_msmarco_passage_titled_and_unrepaired(tmp_path, marco):
    out = tmp_path / "data"
    build_dataset(marco_settings(marco, "msmarco-passage", titled=True, repair_encoding=False),
                  out, tmp_path / "cache")
    corpus = corpus_of(out)
    assert corpus["0"]["title"] == "Manhattan Project"
    assert corpus["0"]["text"].startswith("The Manhattan Project")
    assert "cafÃ©" in corpus["2"]["text"]  # repair switched off: kept as served


def test_recorded_checksums_are_verified(tmp_path, marco):
    settings = marco_settings(marco, "msmarco-passage", verify_checksums=True)
    with pytest.raises(DataError, match=r"collectionandqueries\.tar\.gz.*md5: expected 3164"):
        build_dataset(settings, tmp_path / "data", tmp_path / "cache")
    assert not (tmp_path / "data").exists()
    left = sorted(p.name for p in (tmp_path / "cache" / "msmarco-passage").iterdir())
    assert left == ["collectionandqueries.tar.gz.lock"]  # neither the file nor a .partial


def test_msmarco_document_end_to_end(tmp_path, marco):
    out = tmp_path / "data"
    build_dataset(marco_settings(marco, "msmarco-document"), out, tmp_path / "cache")
    corpus = corpus_of(out)
    assert list(corpus) == ["D10", "D11", "D12", "D13", "D14", "D15"]
    assert corpus["D12"]["title"] == "Café"
    assert corpus["D12"]["text"].startswith("The café")
    assert splits_of(out) == ["dev", "dev-docs", "dl19", "dl20", "train"]
    assert sorted(query_ids(out, "train") + query_ids(out, "dev")) == ["5001", "5002", "5003",
                                                                       "5004"]
    assert qrels_of(out, "dev-docs") == [("6001", "D12", 1), ("6002", "D15", 1)]
    assert qrels_of(out, "dl19") == [("3001", "D10", 3), ("3002", "D11", 2), ("3002", "D12", 0)]


def test_beir_directory(tmp_path):
    out = tmp_path / "data"
    settings = {"source": "beir", "dev_queries": 1, "beir": {"path": str(FIXTURES / "beir")}}
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
    local = FIXTURES / "local"
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


def write_local(tmp_path: Path, corpus: list[str], queries: list[str], qrels: list[str],
                source: str = "trec", **settings) -> dict:
    """A trec/tsv dataset of one `train` split from the given lines."""
    files = {"corpus.tsv": corpus, "queries.tsv": queries, "qrels.txt": qrels}
    for name, lines in files.items():
        (tmp_path / name).write_bytes(b"".join(
            (line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return {
        "source": source,
        "dev_queries": 1,
        "eval_splits": ["train"],
        "local": {"corpus": str(tmp_path / "corpus.tsv"),
                  "queries": {"train": str(tmp_path / "queries.tsv")},
                  "qrels": {"train": str(tmp_path / "qrels.txt")}},
        **settings,
    }


CORPUS = ["p0\tfirst passage", "p1\tsecond passage", "p2\tthird passage"]
QUERIES = ["q0\tquery zero", "q1\tquery one", "q2\tquery two"]
QRELS = ["q0 Q0 p0 1", "q1 Q0 p1 1", "q2 Q0 p2 1"]


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


def _two_splits(tmp_path: Path, train_queries: list[str], test_queries: list[str],
                same_qrels: bool = False) -> dict:
    settings = write_local(tmp_path, CORPUS, train_queries,
                           [f"{line.split()[0]} Q0 p0 1" for line in train_queries])
    test_qrels = tmp_path / "test-qrels.txt"
    test_qrels.write_text("".join(f"{line.split()[0]} Q0 p1 1\n" for line in test_queries))
    (tmp_path / "test-queries.tsv").write_text("".join(line + "\n" for line in test_queries))
    local = settings["local"]
    local["queries"]["test"] = str(tmp_path / "test-queries.tsv")
    local["qrels"]["test"] = local["qrels"]["train"] if same_qrels else str(test_qrels)
    settings["eval_splits"] = ["test"]
    return settings


def test_train_and_evaluation_queries_must_not_overlap(tmp_path):
    out = tmp_path / "data"
    settings = _two_splits(tmp_path, QUERIES, ["t0\ttest zero", "q1\tquery one", "q2\tagain"])
    with pytest.raises(DataError) as err:
        build_dataset(settings, out)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'test-qrels.txt'}:2: query 'q1' of split 'test' is "
                              f"also judged in the training split ({tmp_path / 'qrels.txt'})")
    assert "2 queries are shared" in message and "leakage" in message
    settings = _two_splits(tmp_path, QUERIES, QUERIES, same_qrels=True)
    with pytest.raises(ConfigError, match=r"splits 'train' and 'test' are built from the same "
                                          r"judgments file .*qrels\.txt: .*leakage"):
        build_dataset(settings, out)
    assert not out.exists()
    build_dataset(_two_splits(tmp_path, QUERIES, ["t0\ttest zero"]), out)  # disjoint: fine
    assert query_ids(out, "test") == ["t0"]


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


def test_mojibake_repair_is_safe():
    assert repair_mojibake_text("cafÃ© and naÃ¯ve") == "café and naïve"
    # Each run is repaired on its own; a run that is not UTF-8 once re-encoded stays as it is.
    assert repair_mojibake_text("â\x80\x9cquoted\x80") == "\u201cquoted\x80"
    assert repair_mojibake_text("café next to cafÃ©") == "café next to café"  # per run
    assert repair_mojibake_text("It\u00e2\u20ac\u2122s") == "It\u00e2\u20ac\u2122s"
    assert repair_mojibake_text("Ã©â\x80\x99s") == "é’s"


def test_lines_across_blocks_crlf_bom_and_missing_newline(tmp_path):
    path = tmp_path / "many.tsv"
    lines = [f"{i}\t{'x' * (i % 7)}text {i}" for i in range(60)]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())  # BOM, CRLF, no final \n
    batches = list(iter_tsv(path, 2, block_size=50))
    assert len(batches) > 5
    ids = [v for b in batches for v in b.columns[0].to_pylist()]
    texts = [v for b in batches for v in b.columns[1].to_pylist()]
    assert ids == [str(i) for i in range(60)]
    assert texts == [line.split("\t")[1] for line in lines]
    assert [n for b in batches for n in b.lines] == list(range(1, 61))
    lines[44] = "44\tbroken\tline"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"many\.tsv:45: expected 2"):
        list(iter_tsv(path, 2, block_size=50))


def test_convert_collection_streams_row_groups_and_checks_titles(tmp_path):
    out = tmp_path / "corpus.parquet"
    count = convert_collection(PASSAGE / "collection.tsv", out)
    assert count == 12 and pq.ParquetFile(out).metadata.num_rows == 12
    titles = tmp_path / "titles.tsv"
    lines = (PASSAGE / "para.title.txt").read_text().splitlines()
    titles.write_text("\n".join([*lines[:5], "99\tWrong", *lines[6:]]) + "\n")
    with pytest.raises(DataError, match=r"titles\.tsv:6: id '99' where line 6 .* has '5'"):
        convert_collection(PASSAGE / "para.txt", tmp_path / "titled.parquet", titles=titles)
    titles.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match=r"titles\.tsv: has fewer lines"):
        convert_collection(PASSAGE / "para.txt", tmp_path / "titled.parquet", titles=titles)
    assert not (tmp_path / "titled.parquet").exists()


def test_dev_hold_out_is_seeded(tmp_path):
    queries = [f"q{i}\tquery {i}" for i in range(30)]
    qrels = [f"q{i} Q0 p{i % 3} 1" for i in range(30)]

    def dev_with(seed: int) -> list[str]:
        out = tmp_path / f"out-{seed}-{len(list(tmp_path.iterdir()))}"
        build_dataset(write_local(tmp_path, CORPUS, queries, qrels, dev_queries=5, seed=seed), out)
        assert not set(query_ids(out, "dev")) & set(query_ids(out, "train"))
        return query_ids(out, "dev")

    assert dev_with(1) == dev_with(1)
    assert dev_with(1) != dev_with(2)
    with pytest.raises(ConfigError, match="dev_queries is 30"):
        build_dataset(write_local(tmp_path, CORPUS, queries, qrels, dev_queries=30), tmp_path / "x")


def test_output_folder_is_replaced_whole_and_guarded(tmp_path):
    out = tmp_path / "data"
    build_dataset(write_local(tmp_path, CORPUS, QUERIES, QRELS), out)
    stale = out / "queries" / "old-split.parquet"
    stale.write_bytes(b"stale")
    build_dataset(write_local(tmp_path, CORPUS, QUERIES, QRELS), out)
    assert not stale.exists() and splits_of(out) == ["dev", "train"]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"notes\.txt"):
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


def test_invalid_utf8_is_decoded_as_windows_1252_only_when_repairing(tmp_path):
    source = tmp_path / "collection.tsv"
    source.write_bytes(b"0\tplain\n1\tcaf\xe9 \x93quoted\x94\n2\tcaf\xc3\x83\xc2\xa9\n")
    out = tmp_path / "corpus.parquet"
    assert convert_collection(source, out) == 3
    texts = read_table(out, schemas.CORPUS)["text"].to_pylist()
    assert texts == ["plain", "café \u201cquoted\u201d", "café"]
    with pytest.raises(DataError, match=r"collection\.tsv:2: invalid UTF-8 at byte 6"):
        convert_collection(source, tmp_path / "raw.parquet", repair_encoding=False)
    assert not (tmp_path / "raw.parquet").exists()


def test_duplicate_ids_found_across_batches_and_sort_windows(monkeypatch):
    import numpy as np
    import pyarrow as pa

    from lead.data import corpus

    monkeypatch.setattr(corpus, "_WINDOW", 3)
    unique = corpus.UniqueIds("ids.tsv", "id")
    unique.add(pa.array([str(i) for i in range(10)]), np.arange(1, 11))
    unique.add(pa.array([str(i) for i in range(10, 20)] + ["15", "7"]), np.arange(11, 23))
    with pytest.raises(DataError, match=r"ids\.tsv:21: duplicate id '15' \(first at line 16\)"):
        unique.check()
