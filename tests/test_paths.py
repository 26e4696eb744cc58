"""Split names: one pattern, in the schema and where the data stage builds paths from them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from lead.config import resolve, schema
from lead.data.checks import Checks
from lead.data.splits import Split, write_splits
from lead.errors import ConfigError
from lead.io import write_table
from lead.paths import MAX_NAME_LENGTH, NAME_PATTERN, check_name, child

ROOT = Path(__file__).resolve().parents[1]
BAD_NAMES = ["../../x", "$(touch MARKER)", "a b", ".hidden", "..", "", "a/b", "train\n",
             "x" * (MAX_NAME_LENGTH + 1)]


@pytest.mark.parametrize("name", ["train", "dev-small", "dl19", "trec-covid_v2.1", "A" * 64])
def test_usable_names_pass(name):
    assert check_name(name, "split name") == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unusable_names_are_refused_naming_them(name):
    with pytest.raises(ConfigError) as err:
        check_name(name, "config key dataset.eval_splits")
    message = str(err.value)
    assert message.startswith(f"config key dataset.eval_splits: {name!r} is not a usable name")


def test_child_stays_inside_its_root(tmp_path):
    assert child(tmp_path, "queries", "train.parquet") == tmp_path / "queries" / "train.parquet"
    for parts in (("..", "x"), ("queries", "../../x"), ("/etc", "passwd"), (".",)):
        with pytest.raises(ConfigError, match="does not lie inside"):
            child(tmp_path / "out", *parts)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path)  # resolves outside: refused
    with pytest.raises(ConfigError, match="does not lie inside"):
        child(tmp_path / "out", "link", "x.parquet")


def _dataset(node: dict, *keys: str) -> dict:
    for key in keys:
        node = node["properties"][key]
    return node


def test_the_schema_uses_the_one_name_pattern():
    dataset = schema()["definitions"]["dataset"]
    properties = schema()["properties"]
    constraints = [
        _dataset(dataset, "eval_splits")["items"],
        _dataset(dataset, "local", "queries")["propertyNames"],
        _dataset(dataset, "local", "qrels")["propertyNames"],
        _dataset(dataset, "beir", "splits")["propertyNames"],
        properties["distillation"]["properties"]["variants"]["propertyNames"],
        {key: value for key, value in
         properties["evaluate"]["properties"]["collections"]["propertyNames"].items()
         if key != "not"},
        {"type": "string", **{k: properties["name"][k] for k in ("pattern", "maxLength")}},
    ]
    for constraint in constraints:
        assert constraint == {"type": "string", "pattern": NAME_PATTERN,
                              "maxLength": MAX_NAME_LENGTH}


@pytest.mark.parametrize("name", ["../../x", "$(touch MARKER)", "a b", ".hidden"])
@pytest.mark.parametrize(
    "settings, key",
    [
        (lambda n: {"source": "trec", "eval_splits": [n]}, "dataset.eval_splits.0"),
        (lambda n: {"source": "trec", "local": {"queries": {n: "q.tsv"}}},
         "dataset.local.queries"),
        (lambda n: {"source": "tsv", "local": {"qrels": {n: "r.tsv"}}}, "dataset.local.qrels"),
        (lambda n: {"source": "beir", "beir": {"splits": {n: "test"}}}, "dataset.beir.splits"),
    ],
)
def test_config_validation_names_the_key_and_the_name(name, settings, key):
    with pytest.raises(ConfigError) as err:
        resolve("dataset", settings(name))
    assert str(err.value).startswith(f"config key {key}: {name!r} does not match")


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
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and repr(name) in errors[0] and "dataset.eval_splits" in errors[0]
    assert sorted(tmp_path.rglob("*")) == before  # no MARKER, no output, nothing outside


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
