"""Splits (lead.data.splits): the seeded dev hold-out, no leakage, usable names."""

from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

import pyarrow as pa
import pytest
from data_files import CORPUS, QUERIES, query_ids, write_local
from hostile import data, refused, small_files

from lead.data.checks import Checks
from lead.data.sources import build_dataset
from lead.data.splits import Split, write_splits
from lead.errors import ConfigError, DataError
from lead.io import write_table


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


@pytest.mark.parametrize("name", ["../../x", ".hidden", "a b"])
def test_write_splits_refuses_a_bad_name_even_past_the_schema(tmp_path, name):
    """A source that names its own splits goes through the same check."""
    corpus = tmp_path / "out" / "corpus.parquet"
    write_table(pa.table({"doc_id": ["p0"], "title": [""], "text": ["x"]}), corpus)
    queries = pa.table({"query_id": ["q0"], "text": ["a query"], "line": pa.array([1])})
    qrels = pa.table({"query_id": ["q0"], "doc_id": ["p0"], "relevance": pa.array([1], pa.int32()),
                      "line": pa.array([1])})
    split = Split(name, queries, qrels, tmp_path / "q.tsv", tmp_path / "r.txt")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ConfigError, match=f"split name: {name!r} is not a usable name"):
        write_splits([split], tmp_path / "out", corpus_path=corpus, corpus_source=corpus,
                     checks=Checks(), settings={"dev_queries": 1, "seed": 1}, prov={})
    assert sorted(tmp_path.rglob("*")) == before


# Hostile input: each refusal is one line naming the culprit, and changes no file (hostile.py).


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


NFC, NFD = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")


@pytest.mark.parametrize("which", ["document", "query"])
def test_an_unknown_id_that_only_differs_by_normalisation_names_its_twin(capsys, work, roots,
                                                                          which):
    """`café` written two ways prints the same: the refusal shows both code point sequences
    (for a document, the corpus is searched for its twin)."""
    if which == "document":
        settings = small_files(work / "in", corpus=f"{NFC}\tsome text\np1\tother\n".encode(),
                               qrels=f"q0 Q0 {NFD} 1\nq0 Q0 p1 1\n".encode())
        where = f"the corpus ({work / 'in' / 'corpus.tsv'})"
    else:
        settings = small_files(work / "in", queries=f"{NFC}\ta query\n".encode(),
                               qrels=f"{NFD} Q0 p0 1\n".encode())
        where = str(work / "in" / "queries.tsv")
    refused(capsys, roots, *data(settings, work / "out"), expect=(
        f"{work / 'in' / 'qrels.txt'}:1: {which} {NFD!r} is not in {where}; it has {NFC!r}, the "
        "same text in another Unicode normalisation (U+0063 U+0061 U+0066 U+0065 U+0301 here, "
        "U+0063 U+0061 U+0066 U+00E9 there)",))
