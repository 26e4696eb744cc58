"""Collections the user already has on disk: a BEIR directory, or TREC/TSV files.

- beir: `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`) and
  `qrels/{stem}.tsv` (header line, then `query-id<TAB>corpus-id<TAB>score`); the lead split
  names map to file stems through `dataset.beir.splits`.
- trec / tsv: `dataset.local.corpus` is `id<TAB>text` or `id<TAB>title<TAB>text` (told apart
  by the first line), `dataset.local.queries` maps each split to an `id<TAB>text` file and
  `dataset.local.qrels` each split to judgments: blank-separated `qid Q0 docid grade` for
  trec, tab-separated MS MARCO `qid<TAB>0<TAB>docid<TAB>grade` for tsv.
Files may be gzip-compressed (`.gz`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from lead.data.checks import Checks
from lead.data.corpus import CorpusBatch, UniqueIds, tsv_corpus, write_corpus
from lead.data.readers import iter_jsonl, jsonl_columns, read_qrels, read_queries
from lead.data.splits import Split, write_splits
from lead.data.text import check_ids, check_texts
from lead.data.tsv import open_binary
from lead.errors import ConfigError, DataError
from lead.io import provenance
from lead.paths import child

QRELS_FORMAT = {"trec": "trec", "tsv": "msmarco"}
CORPUS_LAYOUTS = {2: ("doc_id", "text"), 3: ("doc_id", "title", "text")}


def _required(settings: Mapping[str, Any], key: str, section: str) -> Path:
    if not settings.get(key):
        raise ConfigError(f"config key dataset.{section}.{key} is required for this source")
    return Path(settings[key])


def build_beir(settings: Mapping[str, Any], out_dir: Path, checks: Checks) -> dict[str, int]:
    beir = settings["beir"]
    root = _required(beir, "path", "beir")
    corpus_source = root / "corpus.jsonl"
    corpus_path = out_dir / "corpus.parquet"
    prov = provenance(settings["source"], settings)
    write_corpus(_beir_corpus(corpus_source, checks), corpus_path, source=corpus_source,
                 checks=checks, repair_encoding=False, prov=prov)
    queries_path = root / "queries.jsonl"
    queries = _beir_queries(queries_path, checks)
    qrels_paths = {name: child(root / "qrels", f"{stem}.tsv")
                   for name, stem in beir["splits"].items()}
    splits = [Split(name, queries, read_qrels(path, "beir", checks), queries_path, path)
              for name, path in qrels_paths.items()]
    return write_splits(splits, out_dir, corpus_path=corpus_path, corpus_source=corpus_source,
                        checks=checks, settings=settings, prov=prov)


def _beir_corpus(path: Path, checks: Checks) -> Iterator[CorpusBatch]:
    for rows in iter_jsonl(path, checks):
        lines, columns = jsonl_columns(rows, path, {"_id": True, "title": False, "text": True})
        yield CorpusBatch(lines, columns["_id"], columns["title"], columns["text"])


def _beir_queries(path: Path, checks: Checks) -> pa.Table:
    unique = UniqueIds(path, "query id")
    parts = []
    for rows in iter_jsonl(path, checks):
        lines, columns = jsonl_columns(rows, path, {"_id": True, "text": True})
        check_ids(columns["_id"], lines, path, "query id")
        check_texts(columns["text"], lines, path, checks, "query")
        unique.add(columns["_id"], lines)
        parts.append(pa.table({"query_id": columns["_id"], "text": columns["text"],
                               "line": lines}))
    unique.check()
    if not parts:
        raise DataError(path, None, "no queries")
    return pa.concat_tables(parts)


def build_files(settings: Mapping[str, Any], out_dir: Path, checks: Checks) -> dict[str, int]:
    """The trec and tsv sources: a corpus file plus queries and qrels files per split."""
    local = settings["local"]
    corpus_source = _required(local, "corpus", "local")
    queries, qrels = local["queries"], local["qrels"]
    if not qrels:
        raise ConfigError("config key dataset.local.qrels must name at least one split's file")
    if set(queries) != set(qrels):
        raise ConfigError(
            "config keys dataset.local.queries and dataset.local.qrels must name the same splits "
            f"(queries: {sorted(queries)}, qrels: {sorted(qrels)})"
        )
    corpus_path = out_dir / "corpus.parquet"
    prov = provenance(settings["source"], settings)
    layout = CORPUS_LAYOUTS.get(_columns_of_first_line(corpus_source))
    if layout is None:
        raise DataError(corpus_source, 1, "expected id<TAB>text or id<TAB>title<TAB>text")
    write_corpus(tsv_corpus(corpus_source, layout, repair_encoding=False, checks=checks),
                 corpus_path, source=corpus_source, checks=checks, repair_encoding=False,
                 prov=prov)
    fmt = QRELS_FORMAT[settings["source"]]
    splits = [
        Split(name, read_queries(Path(queries[name]), checks),
              read_qrels(Path(qrels[name]), fmt, checks), Path(queries[name]), Path(qrels[name]))
        for name in sorted(qrels)
    ]
    return write_splits(splits, out_dir, corpus_path=corpus_path, corpus_source=corpus_source,
                        checks=checks, settings=settings, prov=prov)


def _columns_of_first_line(path: Path) -> int:
    with open_binary(path) as file:
        return file.readline().count(b"\t") + 1
