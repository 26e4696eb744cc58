"""The embedded default dataset (lead.data.embedded): splits, sizes, schemas, same bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from repo import REPO

from lead import schemas
from lead.config import resolve
from lead.data import docstrings, embedded
from lead.data.embedded import Entry
from lead.errors import LeadError
from lead.io import read_provenance, read_table

FILES = ["corpus.parquet"] + [
    f"{kind}/{split}.parquet" for kind in ("queries", "qrels") for split in ("train", "dev", "test")
]


def _entry(module: str, line: int, query: str | None, passage: str) -> Entry:
    return Entry(module, line, module, query, passage)


def test_private_submodules_belong_to_their_public_module():
    assert embedded.family_of("scipy.stats._stats_py") == "scipy.stats"
    assert embedded.family_of("numpy._core.fromnumeric") == "numpy"
    assert embedded.family_of("email.mime.text") == "email.mime.text"
    assert embedded.family_of("_pydecimal") == "_pydecimal"


def test_near_duplicates_are_kept_once_and_shared_summaries_lose_their_query():
    base = ("The scaler multiplies the loss by a large factor so that small gradients do not "
            "underflow in half precision, and divides them again before the optimizer step.")
    entries = [
        _entry("amp.a", 1, "Scale the loss before the backward pass.", base),
        # the same text re-exported elsewhere with a trailing remark: a near-duplicate
        _entry("amp.b", 1, "Scale a loss for mixed precision training.", base + " Deprecated."),
        _entry("io.c", 1, "Return a copy of the object here.",
               "Readers share buffers with their source, so changes show through " * 3),
        _entry("io.d", 1, "Return a copy of the object here.",
               "Writers flush their buffer to disk whenever the threshold is reached " * 3),
    ]
    kept = embedded.deduplicate(entries)
    assert [e.family for e in kept] == ["amp.a", "io.c", "io.d"]
    assert kept[0].query == "Scale the loss before the backward pass."
    assert kept[1].query is None and kept[2].query is None  # ambiguous summary


def test_splits_keep_families_apart_with_exact_sizes():
    entries = [_entry(f"pkg.module{m:02d}", line, f"q{m} {line}", f"p{m} {line}")
               for m in range(40) for line in range(1 + m % 7)]
    split_of = embedded.assign_splits(entries, seed=3, test_queries=20, dev_queries=10)
    families = {name: {entries[i].family for i, s in split_of.items() if s == name}
                for name in ("train", "dev", "test")}
    assert sum(s == "test" for s in split_of.values()) == 20
    assert sum(s == "dev" for s in split_of.values()) == 10
    assert not families["train"] & (families["test"] | families["dev"])
    assert not families["test"] & families["dev"]
    assert split_of == embedded.assign_splits(entries, seed=3, test_queries=20, dev_queries=10)
    assert split_of != embedded.assign_splits(entries, seed=4, test_queries=20, dev_queries=10)


def test_too_little_documentation_is_a_clear_error_and_writes_nothing(tmp_path):
    settings = resolve("dataset", {"source": "embedded"})
    small = [embedded.Source("", "python", subtrees=("json",))]
    with pytest.raises(LeadError, match=r"train queries \(need 2000\).*passages \(need 5000\)"):
        embedded.build(settings, tmp_path / "out", sources=small)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("embedded")
    embedded.build(resolve("dataset", {"source": "embedded"}), out)
    return out


def _column(path: Path, schema, name: str) -> list:
    return read_table(path, schema).column(name).to_pylist()


@pytest.mark.slow
def test_default_build_meets_the_sizes_with_the_artifact_schemas(built):
    expected = {"corpus": schemas.CORPUS, "queries": schemas.QUERIES, "qrels": schemas.QRELS}
    for name in FILES:
        kind = name.split("/")[0].removesuffix(".parquet")
        assert pq.read_schema(built / name).remove_metadata().equals(expected[kind]), name
    assert pq.read_metadata(built / "corpus.parquet").num_rows >= 5000
    sizes = {split: pq.read_metadata(built / "queries" / f"{split}.parquet").num_rows
             for split in ("train", "dev", "test")}
    assert sizes["train"] >= 2000 and sizes["dev"] == 200 and sizes["test"] == 300
    prov = read_provenance(built / "corpus.parquet")
    assert prov["source"] == "embedded" and prov["python"] and "numpy" in prov["documentation"]


@pytest.mark.slow
def test_default_build_ids_qrels_and_texts_are_consistent(built):
    doc_ids = _column(built / "corpus.parquet", schemas.CORPUS, "doc_id")
    texts = _column(built / "corpus.parquet", schemas.CORPUS, "text")
    assert len(set(doc_ids)) == len(doc_ids)
    assert len({docstrings.normalise(t) for t in texts}) == len(texts)
    assert all(docstrings.MIN_PASSAGE_WORDS <= len(t.split()) <= docstrings.MAX_PASSAGE_WORDS
               for t in texts)
    passage = dict(zip(doc_ids, texts, strict=True))
    all_queries: list[str] = []
    for split in ("train", "dev", "test"):
        ids = _column(built / "queries" / f"{split}.parquet", schemas.QUERIES, "query_id")
        queries = _column(built / "queries" / f"{split}.parquet", schemas.QUERIES, "text")
        qrels = read_table(built / "qrels" / f"{split}.parquet", schemas.QRELS).to_pylist()
        assert {r["query_id"] for r in qrels} == set(ids)  # every query has a relevant passage
        assert all(r["doc_id"] in passage and r["relevance"] == 1 for r in qrels)
        query_text = dict(zip(ids, queries, strict=True))
        assert not any(docstrings.normalise(query_text[r["query_id"]])
                       in docstrings.normalise(passage[r["doc_id"]]) for r in qrels)
        all_queries += [docstrings.normalise(q) for q in queries]
    assert len(set(all_queries)) == len(all_queries)


@pytest.mark.slow
def test_default_build_keeps_evaluation_modules_out_of_training(built):
    modules = {embedded.family_of(module) for source in embedded.SOURCES
               for module, _ in embedded.source_files(source)}

    def module_of(title: str) -> str:  # the title is the public module, then classes
        parts = title.split(".")
        return next(".".join(parts[:n]) for n in range(len(parts), 0, -1)
                    if ".".join(parts[:n]) in modules)

    title = dict(zip(_column(built / "corpus.parquet", schemas.CORPUS, "doc_id"),
                     _column(built / "corpus.parquet", schemas.CORPUS, "title"), strict=True))
    families = {split: {module_of(title[d]) for d in
                        _column(built / "qrels" / f"{split}.parquet", schemas.QRELS, "doc_id")}
                for split in ("train", "dev", "test")}
    assert not families["train"] & families["test"]
    assert not families["train"] & families["dev"]
    assert not families["dev"] & families["test"]
    assert len(families["test"]) >= 10  # an evaluation split spans many modules


@pytest.mark.slow
def test_default_build_is_byte_identical_in_another_process(built, tmp_path):
    """Another interpreter, with another string-hash seed, writes the same bytes."""
    script = ("import sys; from lead.config import resolve; from lead.data import embedded; "
              "embedded.build(resolve('dataset', {'source': 'embedded'}), sys.argv[1])")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=REPO, env=env)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (built / name).read_bytes(), name
