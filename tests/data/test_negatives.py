"""Training groups: BM25, given triples and dense-run negatives never contain a positive."""

from __future__ import annotations

import gzip
import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lead import schemas
from lead.__main__ import main
from lead.config import resolve
from lead.data.negatives import GroupCounts, bm25_groups, dense_groups, given_groups
from lead.errors import ConfigError, DataError
from lead.io import read_provenance, write_table

# "7" and "07" are different passages that an int() would merge: "07" nearly duplicates "7".
CORPUS = [
    ("7", "Volcano", "volcano eruption lava magma ash cloud"),
    ("07", "", "volcano eruption lava magma ash"),
    ("007", "", "volcano lava flows slowly downhill"),
    ("12", "", "ocean tides follow the moon"),
    ("12.0", "", "ocean waves and tides on the beach"),
    ("a", "", "piano sonata in a minor"),
    ("b", "", "piano concerto orchestra"),
    ("c", "", "violin concerto orchestra soloist"),
    ("d", "", "ash trees grow in cold forests"),
    ("e", "", ""),
]
QUERIES = [
    ("q7", "volcano eruption lava"),
    ("q07", "volcano eruption magma"),
    ("q12", "ocean tides"),
    ("music", "piano concerto orchestra"),
    ("unjudged", "volcano"),
    ("nothing", "quantum chromodynamics"),
]
QRELS = [
    ("q7", "7", 1),
    ("q07", "07", 1),
    ("q12", "12", 2),
    ("q12", "007", 0),  # judged, not relevant: a fine negative
    ("music", "b", 1),
    ("music", "a", 1),
    ("nothing", "e", 1),
]


def _table(rows, schema):
    return pa.Table.from_pylist([dict(zip(schema.names, row, strict=True)) for row in rows],
                                schema)


@pytest.fixture
def data(tmp_path):
    paths = {name: tmp_path / f"{name}.parquet" for name in ("corpus", "queries", "qrels")}
    write_table(_table(CORPUS, schemas.CORPUS), paths["corpus"])
    write_table(_table(QUERIES, schemas.QUERIES), paths["queries"])
    write_table(_table(QRELS, schemas.QRELS), paths["qrels"])
    paths["root"] = tmp_path
    return paths


def _groups(path) -> dict[str, tuple[list[str], list[str]]]:
    table = pq.read_table(path)
    assert table.schema.equals(schemas.GROUPS, check_metadata=False)
    return {row["query_id"]: (row["positives"], row["negatives"]) for row in table.to_pylist()}


def _assert_no_positive_among_negatives(groups):
    positives = {}
    for query_id, doc_id, relevance in QRELS:
        if relevance > 0:
            positives.setdefault(query_id, set()).add(doc_id)
    for query_id, (group_positives, negatives) in groups.items():
        assert set(group_positives) == positives[query_id]
        assert not set(negatives) & positives[query_id], query_id
        assert len(negatives) == len(set(negatives))


def test_bm25_removes_every_positive_compared_as_strings(data, caplog):
    out = data["root"] / "groups.parquet"
    with caplog.at_level(logging.WARNING):
        counts = bm25_groups(data["corpus"], data["queries"], data["qrels"], out,
                             depth=3, retrieve_depth=10, k1=1.5, b=0.75)
    groups = _groups(out)
    _assert_no_positive_among_negatives(groups)
    # Query order kept; "unjudged" has no positive, "nothing" matches no passage at all.
    assert list(groups) == ["q7", "q07", "q12", "music"]
    assert counts == GroupCounts(groups=4, without_positive=1, without_negatives=1)
    assert "1 queries have no positive" in caplog.text
    assert "1 queries have no negative left" in caplog.text
    assert groups["q7"][1][0] == "07"  # the near-duplicate is the hardest negative
    assert groups["q07"][1][0] == "7"  # and the other way round
    assert groups["q12"][1] == ["12.0"]  # only one other passage shares a term
    assert groups["music"] == (["a", "b"], ["c"])  # positives sorted
    assert all(len(negatives) <= 3 for _, negatives in groups.values())
    prov = read_provenance(out)
    assert prov["settings"]["bm25"]["k1"] == 1.5 and prov["counts"]["groups"] == 4


def test_bm25_depths(data):
    out = data["root"] / "groups.parquet"
    bm25_groups(data["corpus"], data["queries"], data["qrels"], out,
                depth=1, retrieve_depth=10, k1=1.5, b=0.75)
    assert all(len(negatives) == 1 for _, negatives in _groups(out).values())
    # Only the top 2 are retrieved; for q7 those are the positive and "07".
    bm25_groups(data["corpus"], data["queries"], data["qrels"], out,
                depth=5, retrieve_depth=2, k1=1.5, b=0.75)
    assert _groups(out)["q7"][1] == ["07"]


def test_bm25_is_deterministic_and_strict_mode_fails(data):
    first, second = data["root"] / "a.parquet", data["root"] / "b.parquet"
    for out in (first, second):
        bm25_groups(data["corpus"], data["queries"], data["qrels"], out,
                    depth=4, retrieve_depth=8, k1=1.2, b=0.75)
    assert first.read_bytes() == second.read_bytes()
    strict_out = data["root"] / "strict.parquet"
    with pytest.raises(DataError, match=r"'unjudged'.*no positive"):
        bm25_groups(data["corpus"], data["queries"], data["qrels"], strict_out,
                    depth=4, retrieve_depth=8, k1=1.2, b=0.75, strict=True)
    assert not strict_out.exists()


def test_bm25_groups_do_not_depend_on_the_thread_count(data):
    outs = [data["root"] / f"t{threads}.parquet" for threads in (1, 2, 4)]
    for threads, out in zip((1, 2, 4), outs, strict=True):
        bm25_groups(data["corpus"], data["queries"], data["qrels"], out, depth=3,
                    retrieve_depth=10, k1=1.5, b=0.75, threads=threads)
    assert outs[0].read_bytes() == outs[1].read_bytes() == outs[2].read_bytes()


def _write_triples(path, lines):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as file:
        file.write("".join(line + "\n" for line in lines))
    return path


TRIPLES = [
    "q7\t7\t07",
    "q7\t7\t7",  # a positive offered as a negative
    "q12\t12\t12.0",
    "q7\t7\t007",
    "q7\t7\t07",  # duplicate
    "unjudged\t1\t2",
    "q7\t7\tc",
    "q12\t12\t007",
    "music\ta\tb",  # the only "negative" is a positive
]


def test_given_negatives_must_be_in_the_corpus(data, caplog):
    """A negative missing from the corpus would only fail in training, a stage later."""
    lines = ["q7\t7\t07", "q7\t7\tghost", "q7\t7\t007", "q7\t7\tc", "q12\t12\tphantom",
             "q12\t12\t12.0", "q7\t7\tghost"]
    triples = _write_triples(data["root"] / "t.tsv", lines)
    out = data["root"] / "groups.parquet"
    with pytest.raises(DataError) as err:
        given_groups(triples, data["qrels"], out, corpus=data["corpus"], depth=2, strict=True)
    assert str(err.value).startswith(f"{triples}:2: negative 'ghost' is not in the corpus")
    assert "2 such documents" in str(err.value)
    assert not out.exists()
    # Lenient: those triples are dropped as if absent, so they take no place among the first
    # `depth` (q7 still gets two negatives), and they are counted.
    with caplog.at_level(logging.WARNING):
        counts = given_groups(triples, data["qrels"], out, corpus=data["corpus"], depth=2)
    assert _groups(out) == {"q7": (["7"], ["07", "007"]), "q12": (["12"], ["12.0"])}
    assert counts.unknown_documents == 3
    assert read_provenance(out)["counts"]["unknown_documents"] == 3
    assert "3 triples (first at line 2) name 2 documents that are not in the corpus" in caplog.text


def test_bm25_settings_refuse_unknown_keys():
    with pytest.raises(ConfigError, match=r"negatives\.bm25: .*'k_1' was unexpected"):
        resolve("negatives", {"bm25": {"k_1": 0.9}})
    assert resolve("negatives", {"bm25": {"k1": 0.9}})["bm25"] == {"k1": 0.9, "b": 0.75}


@pytest.mark.parametrize("name", ["triples.tsv", "triples.tsv.gz"])
def test_given_triples(data, caplog, name):
    triples = _write_triples(data["root"] / name, TRIPLES)
    out = data["root"] / "groups.parquet"
    with caplog.at_level(logging.WARNING):
        counts = given_groups(triples, data["qrels"], out, corpus=data["corpus"])
    groups = _groups(out)
    _assert_no_positive_among_negatives(groups)
    assert groups == {"q7": (["7"], ["07", "007", "c"]), "q12": (["12"], ["12.0", "007"])}
    assert counts == GroupCounts(groups=2, without_positive=1, without_negatives=1)
    given_groups(triples, data["qrels"], out, corpus=data["corpus"], depth=2)
    assert _groups(out)["q7"][1] == ["07", "007"]


def test_given_triples_bad_lines(data):
    out = data["root"] / "groups.parquet"
    for bad, line in (("q7\t7", 2), ("q7\t\t07", 2), ("q7\t7\t07\textra", 2)):
        triples = _write_triples(data["root"] / "bad.tsv", ["q7\t7\t07", bad, "q12\t12\t007"])
        with pytest.raises(DataError, match=r"bad\.tsv:2: expected 3 non-empty") as error:
            given_groups(triples, data["qrels"], out, corpus=data["corpus"])
        assert error.value.where == line
    (data["root"] / "latin.tsv").write_bytes(b"q7\t7\t07\nq7\t7\tcaf\xe9\n")
    with pytest.raises(DataError, match=r"latin\.tsv:2: not UTF-8"):
        given_groups(data["root"] / "latin.tsv", data["qrels"], out, corpus=data["corpus"])
    with pytest.raises(DataError, match="file not found"):
        given_groups(data["root"] / "absent.tsv", data["qrels"], out, corpus=data["corpus"])
    assert not out.exists()


def _write_run(path, rows):
    """Rows of (query, doc, rank); written shuffled, as a merge of shards may leave them."""
    rows = sorted(rows, key=lambda row: (row[1], row[0]))
    table = pa.table(
        {"query_id": [r[0] for r in rows], "doc_id": [r[1] for r in rows],
         "rank": pa.array([r[2] for r in rows], pa.int32()),
         "score": pa.array([10.0 - r[2] for r in rows], pa.float32())},
        schema=schemas.RUN,
    )
    write_table(table, path)
    return path


RUN = [
    ("q12", "007", 1), ("q12", "12", 2), ("q12", "12.0", 3), ("q12", "a", 4),
    ("q7", "7", 1), ("q7", "b", 2), ("q7", "07", 3), ("q7", "c", 4), ("q7", "d", 5),
    ("unjudged", "a", 1),
    ("music", "a", 1), ("music", "b", 2),
]


def test_dense_run(data, caplog):
    run = _write_run(data["root"] / "run.parquet", RUN)
    out = data["root"] / "groups.parquet"
    with caplog.at_level(logging.WARNING):
        counts = dense_groups(run, data["qrels"], out, depth=3)
    groups = _groups(out)
    _assert_no_positive_among_negatives(groups)
    assert list(groups) == ["q12", "q7"]  # first appearance in the run (shuffled rows)
    assert groups["q12"] == (["12"], ["007", "12.0", "a"])
    assert groups["q7"] == (["7"], ["b", "07", "c"])
    assert counts == GroupCounts(groups=2, without_positive=1, without_negatives=1)
    dense_groups(run, data["qrels"], out, depth=3, retrieve_depth=3)
    assert _groups(out)["q7"][1] == ["b", "07"]


def test_command_line(data, capsys):
    out = data["root"] / "groups.parquet"
    common = ["--corpus", str(data["corpus"]), "--queries", str(data["queries"]),
              "--qrels", str(data["qrels"]), "--out", str(out)]
    settings = {"source": "bm25", "depth": 2, "bm25": {"k1": 0.9}}
    assert main(["negatives", "--settings", json.dumps(settings), *common]) == 0
    assert read_provenance(out)["settings"]["bm25"]["b"] == 0.75
    assert all(len(n) <= 2 for _, n in _groups(out).values())


    run = _write_run(data["root"] / "run.parquet", RUN)
    dense = json.dumps({"source": "dense", "depth": 1})
    assert main(["negatives", "--settings", dense, *common, "--run", str(run)]) == 0
    assert _groups(out)["q7"][1] == ["b"]
    assert main(["negatives", "--settings", dense, *common]) == 2
    assert "needs --run" in capsys.readouterr().err
    assert main(["negatives", "--settings", dense, *common, "--run", str(run), "--strict"]) == 2
    assert "'unjudged'" in capsys.readouterr().err


def test_command_line_given_checks_the_corpus(data, capsys):
    common = ["--corpus", str(data["corpus"]), "--qrels", str(data["qrels"]),
              "--out", str(data["root"] / "groups.parquet")]
    triples = _write_triples(data["root"] / "t.tsv", TRIPLES)
    given = json.dumps({"source": "given", "given_path": str(triples)})
    assert main(["negatives", "--settings", given, *common]) == 0
    assert _groups(data["root"] / "groups.parquet")["q7"][1] == ["07", "007", "c"]
    _write_triples(triples, [*TRIPLES, "q7\t7\tghost"])
    assert main(["negatives", "--settings", given, *common, "--strict"]) == 2
    assert f"{triples}:10: negative 'ghost' is not in the corpus" in capsys.readouterr().err
