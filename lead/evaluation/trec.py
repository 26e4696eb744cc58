"""TREC text files: runs (`qid Q0 docid rank score tag`) and qrels (`qid 0 docid grade`).

A line is its fields separated by blanks (any run of whitespace, as `str.split` reads them);
every line must have the format's number of fields, so a blank line is malformed. Fields are
returned as text: the caller checks numbers and ids as it does for parquet. Files with one
space or one tab between fields are parsed by Arrow; any other file goes through the
line-by-line reader, which defines the format and names the first malformed line.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from lead.errors import ConfigError, DataError
from lead.io import atomic_path, input_file

RUN_FIELDS = ("query_id", "Q0", "doc_id", "rank", "score", "tag")
QRELS_FIELDS = ("query_id", "iteration", "doc_id", "relevance")
RUN_LAYOUT = "qid Q0 docid rank score tag"
QRELS_LAYOUT = "qid 0 docid grade"
# What str.split() splits on, in RE2 syntax: ids with it cannot be written or read back.
_WHITESPACE = r"[\t-\r\x{1c}-\x{1f}\x{85}\p{Z}]"
_LINES_PER_WRITE = 100_000


def read_run(path: str | Path) -> dict[str, pa.Array]:
    """The text fields query_id, doc_id, rank, score of a TREC run; row i is line i + 1."""
    fields = _read_fields(Path(path), RUN_FIELDS, RUN_LAYOUT, QRELS_LAYOUT)
    return {name: fields[name] for name in ("query_id", "doc_id", "rank", "score")}


def read_qrels(path: str | Path) -> dict[str, pa.Array]:
    """The text fields query_id, doc_id, relevance of TREC qrels; row i is line i + 1."""
    fields = _read_fields(Path(path), QRELS_FIELDS, QRELS_LAYOUT, RUN_LAYOUT)
    return {name: fields[name] for name in ("query_id", "doc_id", "relevance")}


def _read_fields(
    path: Path, names: Sequence[str], layout: str, other_layout: str
) -> dict[str, pa.Array]:
    raw = input_file(path).read_bytes()
    table = _arrow_fields(raw, names)
    if table is not None:
        return {name: table[name].combine_chunks() for name in names}
    return _split_lines(path, raw, names, layout, other_layout)


def _arrow_fields(raw: bytes, names: Sequence[str]) -> pa.Table | None:
    """The fields when every line has them separated by one space, or by one tab; else None."""
    if b"\r" in raw:  # Arrow ends a line at a lone CR, str.split() does not
        return None
    for delimiter in (" ", "\t"):
        try:
            table = pcsv.read_csv(
                io.BytesIO(raw),
                read_options=pcsv.ReadOptions(column_names=list(names)),
                parse_options=pcsv.ParseOptions(
                    delimiter=delimiter, quote_char=False, ignore_empty_lines=False
                ),
                convert_options=pcsv.ConvertOptions(
                    column_types={name: pa.string() for name in names}
                ),
            )
        except pa.ArrowInvalid:
            continue
        clean = all(
            not pc.any(pc.equal(pc.utf8_length(column), 0)).as_py()
            and not pc.any(pc.match_substring_regex(column, _WHITESPACE)).as_py()
            for column in table.columns
        )
        return table if clean else None
    return None


def _split_lines(
    path: Path, raw: bytes, names: Sequence[str], layout: str, other_layout: str
) -> dict[str, pa.Array]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(path, raw[: err.start].count(b"\n") + 1, "not UTF-8 text") from err
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    columns: list[list[str]] = [[] for _ in names]
    for number, line in enumerate(lines, 1):
        tokens = line.split()
        if len(tokens) != len(names):
            found = "a blank line" if not tokens else f"{len(tokens)} fields"
            if len(tokens) == len(other_layout.split()):
                found += f" (`{other_layout}`?)"
            raise DataError(path, number, f"expected `{layout}` ({len(names)} fields), got {found}")
        for column, token in zip(columns, tokens, strict=True):
            column.append(token)
    return {
        name: pa.array(column, pa.string()) for name, column in zip(names, columns, strict=True)
    }


def check_tag(tag: str) -> None:
    if not tag or any(char.isspace() for char in tag):
        raise ConfigError(f"run tag must be a non-empty word without spaces, got {tag!r}")


def write_run(
    out_path: str | Path,
    query_ids: pa.Array,
    doc_ids: pa.Array,
    ranks: np.ndarray,
    scores: np.ndarray,
    tag: str,
    label: str,
) -> int:
    """Write `qid Q0 docid rank score tag` lines atomically; return the number of lines.

    Scores are written as the shortest decimal that reads back to the same value of their own
    float type. Ids with whitespace are refused (they would not read back); `label` names the
    run in errors.
    """
    check_tag(tag)
    text = pa.large_string()  # 64-bit offsets: a large run can exceed 2 GiB of text
    query_ids, doc_ids = query_ids.cast(text), doc_ids.cast(text)
    spaced = pc.or_(
        pc.match_substring_regex(query_ids, _WHITESPACE),
        pc.match_substring_regex(doc_ids, _WHITESPACE),
    )
    if pc.any(spaced).as_py():
        row = int(np.flatnonzero(spaced.to_numpy(zero_copy_only=False))[0])
        raise DataError(
            label,
            f"query {query_ids[row].as_py()!r}, doc {doc_ids[row].as_py()!r}",
            "ids must not contain whitespace in the TREC run format",
        )
    lines = pc.binary_join_element_wise(
        query_ids,
        pa.scalar("Q0", text),
        doc_ids,
        pc.cast(pa.array(ranks), text),
        pc.cast(pa.array(scores), text),
        pa.scalar(tag, text),
        pa.scalar(" ", text),
    )
    with (atomic_path(out_path, directory=False) as tmp,
          tmp.open("w", encoding="utf-8", newline="\n") as handle):
        for start in range(0, len(lines), _LINES_PER_WRITE):
            chunk = lines.slice(start, _LINES_PER_WRITE).to_pylist()
            handle.write("\n".join(chunk) + "\n")
    return len(lines)
