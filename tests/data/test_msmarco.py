"""MS MARCO and TREC DL (lead.data.msmarco), served locally: collections, checksums."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from data_files import corpus_of, qrels_of, query_ids, splits_of
from data_server import FileServer
from repo import FIXTURES

from lead import schemas
from lead.data.msmarco import convert_collection
from lead.data.sources import build_dataset
from lead.errors import DataError
from lead.io import read_provenance, read_table

PASSAGE = FIXTURES / "data" / "msmarco-passage"
DOCUMENT = FIXTURES / "data" / "msmarco-document"


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
