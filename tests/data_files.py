"""Small trec/tsv datasets written as files, and readers of what the data stage built from
them, for the tests of lead.data."""

from __future__ import annotations

from pathlib import Path

from lead import schemas
from lead.io import read_table


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
