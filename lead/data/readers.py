"""Streaming readers of queries and judgments (TSV, TREC, BEIR) and of JSON-lines files.

Every problem names the file and the line. Structural problems (column counts, non-numeric
grades, duplicate ids, empty ids, invalid UTF-8 when encoding repair is off) are always
errors; the tolerable ones go through `lead.data.checks.Checks`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lead.data.checks import Checks
from lead.data.corpus import UniqueIds
from lead.data.text import BOM, check_ids, check_texts, refuse_nul, repair_mojibake
from lead.data.tsv import CORRUPT_GZIP, iter_tsv, open_binary
from lead.errors import DataError
from lead.schemas import MAX_RELEVANCE

_INTEGER = r"^[+-]?[0-9]{1,9}$"


def read_queries(path: str | Path, checks: Checks, *, repair_encoding: bool = False) -> pa.Table:
    """Read an `id<TAB>text` queries file into a table with query_id, text and line."""
    unique = UniqueIds(path, "query id")
    parts = []
    for batch in iter_tsv(path, 2, repair_encoding=repair_encoding, checks=checks):
        ids, texts = batch.columns
        lines = batch.lines
        check_ids(ids, lines, path, "query id")
        if repair_encoding:
            texts, changed = repair_mojibake(texts)
            checks.repaired("query texts with latin-1 mojibake", changed)
        check_texts(texts, lines, path, checks, "query")
        unique.add(ids, lines)
        parts.append(pa.table({"query_id": ids, "text": texts, "line": lines}))
    unique.check()
    return _concat(parts, QUERY_ROWS)


QUERY_ROWS = pa.schema([("query_id", pa.string()), ("text", pa.string()), ("line", pa.int64())])
QRELS_ROWS = pa.schema(
    [
        ("query_id", pa.string()),
        ("doc_id", pa.string()),
        ("relevance", pa.int32()),
        ("line", pa.int64()),
    ]
)
# format -> (columns, blank-separated instead of tab-separated, header line)
QRELS_FORMATS = {
    "msmarco": (4, False, False),  # qid \t 0 \t pid \t grade
    "trec": (4, True, False),  # qid Q0 docid grade, any blanks
    "beir": (3, False, True),  # query-id \t corpus-id \t score, after a header line
}


def read_qrels(path: str | Path, fmt: str, checks: Checks) -> pa.Table:
    """Read judgments (MS MARCO TSV, TREC or BEIR) into query_id, doc_id, relevance, line."""
    columns, whitespace, header = QRELS_FORMATS[fmt]
    if header:
        _check_beir_header(path)
    parts = []
    for batch in iter_tsv(path, columns, whitespace=whitespace, skip_lines=int(header),
                          checks=checks):
        query_ids, doc_ids, grades = batch.columns[0], batch.columns[-2], batch.columns[-1]
        lines = batch.lines
        check_ids(query_ids, lines, path, "query id")
        check_ids(doc_ids, lines, path, "document id")
        bad = pc.indices_nonzero(pc.invert(pc.match_substring_regex(grades, _INTEGER)))
        if len(bad):
            row = bad[0].as_py()
            raise DataError(path, int(lines[row]),
                            f"relevance grade {grades[row].as_py()!r} is not an integer")
        grades = pc.cast(grades, pa.int32())
        bad = pc.indices_nonzero(pc.greater(pc.abs(grades), MAX_RELEVANCE))
        if len(bad):
            row = bad[0].as_py()
            raise DataError(path, int(lines[row]),
                            f"relevance grade {grades[row].as_py()} is outside "
                            f"-{MAX_RELEVANCE}..{MAX_RELEVANCE} (trec_eval allocates memory for "
                            "every grade up to the largest)")
        parts.append(pa.table({
            "query_id": query_ids,
            "doc_id": doc_ids,
            "relevance": grades,
            "line": lines,
        }))
    table = _concat(parts, QRELS_ROWS)
    _check_duplicate_judgments(table, path)
    return table


def _check_beir_header(path: str | Path) -> None:
    with open_binary(path) as file:
        first = file.readline().decode("utf-8", errors="replace").rstrip("\r\n").split("\t")
    if len(first) != 3 or re.match(_INTEGER, first[-1]):
        raise DataError(path, 1, "expected the header line 'query-id<TAB>corpus-id<TAB>score'")


def _check_duplicate_judgments(table: pa.Table, path: str | Path) -> None:
    groups = table.group_by(["query_id", "doc_id"]).aggregate(
        [("line", "min"), ("line", "max"), ("line", "count")]
    )
    repeated = groups.filter(pc.greater(groups["line_count"], 1))
    if repeated.num_rows:
        row = repeated.sort_by("line_max").slice(0, 1).to_pylist()[0]
        raise DataError(
            path,
            row["line_max"],
            f"duplicate judgment of query {row['query_id']!r} and document {row['doc_id']!r} "
            f"(first at line {row['line_min']})",
        )


def _concat(parts: list[pa.Table], schema: pa.Schema) -> pa.Table:
    if not parts:
        return schema.empty_table()
    return pa.concat_tables(parts).cast(schema)


def iter_jsonl(
    path: str | Path, checks: Checks, batch_rows: int = 50_000
) -> Iterator[list[tuple[int, dict]]]:
    """Stream a JSON-lines file as lists of (line number, object); blank lines are skipped.

    A byte-order mark starting a later line (concatenated files) is removed and counted.
    """
    rows: list[tuple[int, dict]] = []
    try:
        with open_binary(path) as file:
            for number, raw in enumerate(file, start=1):
                if raw.startswith(BOM):
                    raw = raw[len(BOM) :]
                    if number > 1:
                        checks.repaired(
                            "byte-order marks starting a line removed (concatenated files?)", 1)
                if not raw.strip():
                    continue
                try:
                    value = json.loads(raw)
                except UnicodeDecodeError as err:
                    raise DataError(path, number, f"invalid UTF-8: {err.reason}") from err
                except json.JSONDecodeError as err:
                    raise DataError(path, number, f"invalid JSON: {err.msg}") from err
                except RecursionError as err:  # json gives up on nesting near 1,000 levels
                    raise DataError(path, number, "JSON nested too deeply to read; a corpus "
                                                  "record is one flat object") from err
                if not isinstance(value, dict):
                    raise DataError(path, number, "expected a JSON object")
                rows.append((number, value))
                if len(rows) >= batch_rows:
                    yield rows
                    rows = []
    except CORRUPT_GZIP as err:
        raise DataError(path, None, f"truncated or corrupt gzip file: {err}") from err
    if rows:
        yield rows


def jsonl_columns(
    rows: list[tuple[int, dict]], path: str | Path, fields: Mapping[str, bool]
) -> tuple[np.ndarray, dict[str, pa.Array]]:
    """Pull string fields out of JSON objects; `fields` maps name -> required.

    Ids may be JSON numbers (converted to strings); an optional field that is absent is "".
    A value with a NUL character is refused, as in TSV files.
    """
    values: dict[str, list[str]] = {name: [] for name in fields}
    for number, obj in rows:
        for name, required in fields.items():
            value = obj.get(name)
            if value is None and not required:
                value = ""
            value = _json_string(value, name, path, number)
            values[name].append(refuse_nul(value, path, number, f"field {name!r}"))
    lines = np.fromiter((number for number, _ in rows), dtype=np.int64, count=len(rows))
    return lines, {name: pa.array(column, pa.string()) for name, column in values.items()}


def _json_string(value: Any, name: str, path: str | Path, line: int) -> str:
    if isinstance(value, str):
        return value
    if name == "_id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    expected = "missing" if value is None else f"a {type(value).__name__}"
    raise DataError(path, line, f"field {name!r} is {expected}, expected a string")
