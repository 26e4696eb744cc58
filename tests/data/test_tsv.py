"""Tab-separated files (lead.data.tsv): blocks, CRLF, BOM, no final newline, broken gzip."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from hostile import data, local_settings, refused
from repo import TINY_DATA as TINY

from lead.data.tsv import iter_tsv
from lead.errors import DataError


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


# Hostile input: each refusal is one line naming the culprit, and changes no file (hostile.py).


@pytest.mark.parametrize("damage", ["not gzip at all", "cut short"])
@pytest.mark.parametrize("file", ["corpus", "queries", "given triples"])
def test_a_broken_gzip_input_is_one_line_naming_it(capsys, work, roots, artifacts, file, damage):
    import gzip

    if file == "given triples":
        text = b"".join(f"{q}\t{d}\td000120\n".encode() for q, d in zip(
            pq.read_table(artifacts / "data" / "qrels" / "train.parquet")["query_id"].to_pylist(),
            pq.read_table(artifacts / "data" / "qrels" / "train.parquet")["doc_id"].to_pylist(),
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
                "--corpus", artifacts / "data" / "corpus.parquet", "--qrels",
                artifacts / "data" / "qrels" / "train.parquet", "--out", work / "g.parquet"]
    else:
        queries = path if file == "queries" else TINY / "queries.test.tsv"
        corpus = path if file == "corpus" else TINY / "collection.tsv"
        argv = data(local_settings(corpus, {"test": queries}, {"test": TINY / "qrels.test.tsv"}),
                    work / "out")
    refused(capsys, roots, *argv, expect=(str(path),))
