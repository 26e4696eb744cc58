"""Streaming readers for the text formats data sources come in, with validation.

Every problem names the file and the line. Structural problems (column counts, non-numeric
grades, duplicate ids, empty ids, invalid UTF-8 when encoding repair is off) are always
errors. Problems a real collection may plausibly contain (an empty text, a judgment of an
unknown query or document) are errors in strict mode (`dataset.strict`) and counted
warnings otherwise.

TSV files are split with numpy on whole blocks of lines instead of a Python loop per line:
the 8.8M-passage MS MARCO collection must convert at hundreds of thousands of passages per
second with memory that does not grow with the file.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lead import schemas
from lead.errors import DataError
from lead.io import parquet_writer

log = logging.getLogger(__name__)

BLOCK_SIZE = 8 << 20  # ~20k MS MARCO passages: one parquet row group
_TAB, _NEWLINE, _CR = 9, 10, 13
_BOM = b"\xef\xbb\xbf"
_WHITESPACE_RUN = re.compile(rb"[ \t]+")
_EDGE_TAB = re.compile(rb"^\t|\t(?=\r?\n)", re.MULTILINE)
_INTEGER = r"^[+-]?[0-9]{1,9}$"
# Mojibake marker: a UTF-8 lead byte followed by a continuation byte, both read as latin-1
# characters ("Ã©" for "é", "â\x80\x99" for "’"). Legitimate text almost never has one.
_MOJIBAKE = "[\u00c2-\u00f4][\u0080-\u00bf]"
_LATIN1_RUN = re.compile("[\u0080-\u00ff]+")


@dataclass
class Checks:
    """Applies `dataset.strict` to the tolerable problems and counts what happened."""

    strict: bool = True
    problems: Counter = field(default_factory=Counter)
    repairs: Counter = field(default_factory=Counter)

    def problem(
        self, kind: str, path: str | Path, where: int | str | None, message: str, count: int = 1
    ) -> None:
        """Raise in strict mode; otherwise log the first of each kind and count them all."""
        if self.strict:
            raise DataError(path, where, f"{message} (dataset.strict: false would {kind})")
        if not self.problems[kind]:
            log.warning("%s; the data stage will %s (further cases are counted)",
                        DataError(path, where, message), kind)
        self.problems[kind] += count

    def repaired(self, kind: str, count: int) -> None:
        self.repairs[kind] += count

    def log_summary(self) -> None:
        for kind, count in sorted(self.problems.items()):
            log.warning("%d data problems: %s", count, kind)
        for kind, count in sorted(self.repairs.items()):
            log.info("%d repaired: %s", count, kind)


@dataclass(frozen=True)
class Batch:
    """Consecutive lines of a file, split into columns (string arrays of equal length)."""

    first_line: int
    columns: list[pa.Array]

    @property
    def lines(self) -> np.ndarray:
        return np.arange(self.first_line, self.first_line + len(self.columns[0]), dtype=np.int64)


def open_binary(path: str | Path) -> IO[bytes]:
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "file not found")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_blocks(path: str | Path, block_size: int = BLOCK_SIZE) -> Iterator[memoryview]:
    """The file in blocks of whole lines (about `block_size` bytes, each ending in \\n).

    Each block is read straight into its own buffer (no copies, no reuse). A missing final
    newline is added; a UTF-8 byte-order mark is dropped.
    """
    rest, first = b"", True
    try:
        with open_binary(path) as file:
            while True:
                buffer = bytearray(len(rest) + block_size)
                buffer[: len(rest)] = rest
                size = len(rest) + file.readinto(memoryview(buffer)[len(rest) :])
                if size == len(rest):
                    break
                if first and buffer.startswith(_BOM):
                    del buffer[: len(_BOM)]
                    size -= len(_BOM)
                first = False
                cut = buffer.rfind(b"\n", 0, size) + 1
                rest = bytes(buffer[cut:size])
                if cut:
                    yield memoryview(buffer)[:cut]
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(path, None, f"truncated or corrupt gzip file: {err}") from err
    if rest:
        yield memoryview(rest + b"\n")


def _valid_utf8(block: memoryview) -> bool:
    offsets = pa.py_buffer(np.array([0, len(block)], dtype=np.int32))
    try:
        pa.StringArray.from_buffers(1, offsets, pa.py_buffer(block)).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _ensure_utf8(
    block: memoryview, first_line: int, path: str | Path, repair: bool, checks: Checks | None
) -> memoryview:
    """Return `block` as valid UTF-8: repaired line by line (as Windows-1252) or refused."""
    if _valid_utf8(block):
        return block
    lines = bytes(block).split(b"\n")
    for index, line in enumerate(lines):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as err:
            if not repair:
                raise DataError(
                    path, first_line + index, f"invalid UTF-8 at byte {err.start + 1} of the line"
                ) from err
            lines[index] = _decode_legacy(line).encode("utf-8")
            if checks is not None:
                checks.repaired("lines decoded as Windows-1252 (not UTF-8)", 1)
    return memoryview(b"\n".join(lines))


def _decode_legacy(line: bytes) -> str:
    """Non-UTF-8 bytes are most likely Windows-1252; latin-1 covers its five undefined bytes."""
    try:
        return line.decode("cp1252")
    except UnicodeDecodeError:
        return line.decode("latin-1")


def split_block(
    block: memoryview, first_line: int, columns: int, path: str | Path,
    separated: str = "tab-separated",
) -> list[pa.Array]:
    """Split a block of tab-separated lines into `columns` string arrays, zero Python loops.

    Every field and every separator becomes one value of a single string array laid over the
    block's bytes (offsets only); the fields are then gathered column by column. A line with
    another number of fields raises DataError naming it. A CR before the newline is dropped.
    """
    buf = np.frombuffer(block, dtype=np.uint8)
    low = np.flatnonzero(buf <= _NEWLINE)  # one pass; bytes below TAB are rare
    seps = low[buf[low] >= _TAB]
    line_ends = np.flatnonzero(buf[seps] == _NEWLINE)
    fields_per_line = np.diff(line_ends, prepend=-1)
    wrong = np.flatnonzero(fields_per_line != columns)
    if wrong.size:
        index = int(wrong[0])
        raise DataError(
            path,
            first_line + index,
            f"expected {columns} {separated} columns, found {int(fields_per_line[index])}",
        )
    starts = np.empty_like(seps)
    starts[0] = 0
    starts[1:] = seps[:-1] + 1
    ends = seps.copy()
    newlines = ends[line_ends]
    crlf = (newlines > starts[line_ends]) & (buf[newlines - 1] == _CR)
    ends[line_ends[crlf]] -= 1
    offsets = np.empty(2 * len(seps) + 1, dtype=np.int32)
    offsets[0:-1:2] = starts
    offsets[1::2] = ends
    offsets[-1] = len(buf)
    values = pa.StringArray.from_buffers(
        len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(block)
    )
    field_index = np.arange(len(line_ends), dtype=np.int64) * columns
    return [values.take(pa.array(2 * (field_index + j))) for j in range(columns)]


def iter_tsv(
    path: str | Path,
    columns: int,
    *,
    whitespace: bool = False,
    skip_lines: int = 0,
    repair_encoding: bool = False,
    checks: Checks | None = None,
    block_size: int = BLOCK_SIZE,
) -> Iterator[Batch]:
    """Stream a file of `columns` tab-separated (or, with `whitespace`, blank-separated) fields.

    The first `skip_lines` lines (a header) are left out. Invalid UTF-8 is an error naming
    the line, unless `repair_encoding` decodes such lines as Windows-1252.
    """
    line = 1
    for block in iter_blocks(path, block_size):
        if skip_lines:
            block, dropped = _drop_lines(block, skip_lines)
            skip_lines -= dropped
            line += dropped
            if not len(block):
                continue
        block = _ensure_utf8(block, line, path, repair_encoding, checks)
        if whitespace:
            block = memoryview(_EDGE_TAB.sub(b"", _WHITESPACE_RUN.sub(b"\t", block)))
        separated = "blank-separated" if whitespace else "tab-separated"
        batch = Batch(line, split_block(block, line, columns, path, separated))
        line += len(batch.columns[0])
        yield batch


def _drop_lines(block: memoryview, count: int) -> tuple[memoryview, int]:
    """Leave out the first `count` lines of a block (fewer if it has fewer)."""
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == _NEWLINE)
    dropped = min(count, len(ends))
    return (block[int(ends[dropped - 1]) + 1 :] if dropped else block), dropped


def repair_mojibake_text(text: str) -> str:
    """Undo UTF-8-read-as-latin-1 in each run of latin-1-range characters where it round-trips.

    A run that is not valid UTF-8 once re-encoded (a real "é" next to ASCII) stays as it is,
    so legitimate accented text is never altered.
    """
    try:  # the common case: all of the text's non-ASCII is mojibake (same result, faster)
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return _LATIN1_RUN.sub(_repair_run, text)


def _repair_run(match: re.Match) -> str:
    run = match.group()
    try:
        return run.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return run


def repair_mojibake(texts: pa.Array) -> tuple[pa.Array, int]:
    """Repair the texts that carry mojibake markers; returns the texts and how many changed."""
    candidates = pc.indices_nonzero(pc.invert(pc.string_is_ascii(texts)))
    if not len(candidates):
        return texts, 0
    marked = candidates.filter(pc.match_substring_regex(texts.take(candidates), _MOJIBAKE))
    if not len(marked):
        return texts, 0
    originals = texts.take(marked).to_pylist()
    repaired = [repair_mojibake_text(text) for text in originals]
    mask = np.zeros(len(texts), dtype=bool)
    mask[marked.to_numpy()] = True
    changed = sum(a != b for a, b in zip(originals, repaired, strict=True))
    return pc.replace_with_mask(texts, pa.array(mask), pa.array(repaired, pa.string())), changed


def _blank(values: pa.Array) -> pa.Array:
    """Empty or only whitespace (utf8_is_space is false for the empty string)."""
    return pc.or_(pc.equal(pc.binary_length(values), 0), pc.utf8_is_space(values))


def require_ids(ids: pa.Array, lines: np.ndarray, path: str | Path, what: str) -> None:
    """An empty id cannot be referred to: always an error."""
    empty = pc.indices_nonzero(pc.equal(pc.utf8_length(ids), 0))
    if len(empty):
        raise DataError(path, int(lines[empty[0].as_py()]), f"empty {what}")


def check_texts(
    texts: pa.Array,
    lines: np.ndarray,
    path: str | Path,
    checks: Checks,
    what: str,
    titles: pa.Array | None = None,
) -> None:
    """Count (or, strict, refuse) rows whose text (and title, when given) is blank."""
    blank = _blank(texts) if titles is None else pc.and_(_blank(texts), _blank(titles))
    rows = pc.indices_nonzero(blank)
    if len(rows):
        line = int(lines[rows[0].as_py()])
        checks.problem(f"keep {what}s with an empty text", path, line, f"empty {what} text",
                       count=len(rows))


class UniqueIds:
    """Finds a repeated id in a stream of batches, holding only the ids and their lines.

    Ids are kept as Arrow strings (with their line, about 15 bytes a passage for MS MARCO)
    and sorted once at the end: a Python set of 8.8M strings would need over 700 MB.
    """

    def __init__(self, path: str | Path, what: str):
        self.path, self.what = path, what
        self._ids: list[pa.Array] = []
        self._lines: list[np.ndarray] = []

    def add(self, ids: pa.Array, lines: np.ndarray) -> None:
        self._ids.append(ids)
        self._lines.append(lines.astype(np.int32))

    def check(self) -> None:
        if not self._ids:
            return
        ids = pa.chunked_array(self._ids, pa.string())
        order = pc.sort_indices(ids)  # stable: equal ids stay in file order
        # Compare neighbours in the sorted order a window at a time, never materialising a
        # second, sorted copy of every id.
        pairs = []
        for start in range(0, len(ids) - 1, _WINDOW):
            window = ids.take(order.slice(start, _WINDOW + 1))
            same = pc.equal(window.slice(1), window.slice(0, len(window) - 1))
            pairs.append(pc.indices_nonzero(same).to_numpy() + start)
        pairs = np.concatenate(pairs) if pairs else np.empty(0, dtype=np.int64)
        if not len(pairs):
            return
        lines = np.concatenate(self._lines)
        order = order.to_numpy()
        later = lines[order[pairs + 1]]
        pick = int(np.argmin(later))
        earlier = int(lines[order[pairs[pick]]])
        value = ids[int(order[pairs[pick]])].as_py()
        raise DataError(self.path, int(later[pick]),
                        f"duplicate {self.what} {value!r} (first at line {earlier})")


_WINDOW = 1 << 20


def read_queries(path: str | Path, checks: Checks, *, repair_encoding: bool = False) -> pa.Table:
    """Read an `id<TAB>text` queries file into a table with query_id, text and line."""
    unique = UniqueIds(path, "query id")
    parts = []
    for batch in iter_tsv(path, 2, repair_encoding=repair_encoding, checks=checks):
        ids, texts = batch.columns
        lines = batch.lines
        require_ids(ids, lines, path, "query id")
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


def read_qrels(path: str | Path, fmt: str) -> pa.Table:
    """Read judgments (MS MARCO TSV, TREC or BEIR) into query_id, doc_id, relevance, line."""
    columns, whitespace, header = QRELS_FORMATS[fmt]
    if header:
        _check_beir_header(path)
    parts = []
    for batch in iter_tsv(path, columns, whitespace=whitespace, skip_lines=int(header)):
        query_ids, doc_ids, grades = batch.columns[0], batch.columns[-2], batch.columns[-1]
        lines = batch.lines
        require_ids(query_ids, lines, path, "query id")
        require_ids(doc_ids, lines, path, "document id")
        bad = pc.indices_nonzero(pc.invert(pc.match_substring_regex(grades, _INTEGER)))
        if len(bad):
            row = bad[0].as_py()
            raise DataError(path, int(lines[row]),
                            f"relevance grade {grades[row].as_py()!r} is not an integer")
        parts.append(pa.table({
            "query_id": query_ids,
            "doc_id": doc_ids,
            "relevance": pc.cast(grades, pa.int32()),
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


def iter_jsonl(path: str | Path, batch_rows: int = 50_000) -> Iterator[list[tuple[int, dict]]]:
    """Stream a JSON-lines file as lists of (line number, object); blank lines are skipped."""
    rows: list[tuple[int, dict]] = []
    try:
        with open_binary(path) as file:
            for number, raw in enumerate(file, start=1):
                if not raw.strip():
                    continue
                try:
                    value = json.loads(raw)
                except UnicodeDecodeError as err:
                    raise DataError(path, number, f"invalid UTF-8: {err.reason}") from err
                except json.JSONDecodeError as err:
                    raise DataError(path, number, f"invalid JSON: {err.msg}") from err
                if not isinstance(value, dict):
                    raise DataError(path, number, "expected a JSON object")
                rows.append((number, value))
                if len(rows) >= batch_rows:
                    yield rows
                    rows = []
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(path, None, f"truncated or corrupt gzip file: {err}") from err
    if rows:
        yield rows


def jsonl_columns(
    rows: list[tuple[int, dict]], path: str | Path, fields: Mapping[str, bool]
) -> tuple[np.ndarray, dict[str, pa.Array]]:
    """Pull string fields out of JSON objects; `fields` maps name -> required.

    Ids may be JSON numbers (converted to strings); an optional field that is absent is "".
    """
    values: dict[str, list[str]] = {name: [] for name in fields}
    for number, obj in rows:
        for name, required in fields.items():
            value = obj.get(name)
            if value is None and not required:
                value = ""
            values[name].append(_json_string(value, name, path, number))
    lines = np.fromiter((number for number, _ in rows), dtype=np.int64, count=len(rows))
    return lines, {name: pa.array(column, pa.string()) for name, column in values.items()}


def _json_string(value: Any, name: str, path: str | Path, line: int) -> str:
    if isinstance(value, str):
        return value
    if name == "_id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    expected = "missing" if value is None else f"a {type(value).__name__}"
    raise DataError(path, line, f"field {name!r} is {expected}, expected a string")


@dataclass(frozen=True)
class CorpusBatch:
    lines: np.ndarray
    doc_id: pa.Array
    title: pa.Array
    text: pa.Array


def write_corpus(
    batches: Iterable[CorpusBatch],
    out_path: str | Path,
    *,
    source: str | Path,
    checks: Checks,
    repair_encoding: bool,
    prov: Mapping[str, Any] | None,
) -> int:
    """Validate a stream of corpus rows and write it as CORPUS parquet, one row group a batch.

    Nothing is left at `out_path` if any row is refused (duplicate or empty id, or, strict,
    an empty text).
    """
    unique = UniqueIds(source, "document id")
    count = 0
    # Compression runs in a second thread (Arrow releases the GIL) while the next block is
    # parsed; at most one block waits, so memory stays bounded.
    with parquet_writer(out_path, schemas.CORPUS, prov) as writer, ThreadPoolExecutor(1) as pool:
        pending: Future | None = None
        for batch in batches:
            require_ids(batch.doc_id, batch.lines, source, "document id")
            title, text = batch.title, batch.text
            if repair_encoding:
                text, changed_text = repair_mojibake(text)
                title, changed_title = repair_mojibake(title)
                checks.repaired("corpus texts/titles with latin-1 mojibake",
                                changed_text + changed_title)
            check_texts(text, batch.lines, source, checks, "document", titles=title)
            unique.add(batch.doc_id, batch.lines)
            table = pa.Table.from_arrays([batch.doc_id, title, text], schema=schemas.CORPUS)
            if pending is not None:
                pending.result()
            pending = pool.submit(writer.write_table, table)
            count += len(text)
        if pending is not None:
            pending.result()
        unique.check()
        if not count:
            raise DataError(source, None, "the corpus is empty")
    return count


def empty_strings(count: int) -> pa.Array:
    return pa.repeat(pa.scalar("", pa.string()), count)


def tsv_corpus(
    path: str | Path,
    fields: tuple[str, ...],
    *,
    repair_encoding: bool,
    checks: Checks,
) -> Iterator[CorpusBatch]:
    """Corpus rows from a TSV whose columns are `fields` (doc_id, text, optional title, ...)."""
    for batch in iter_tsv(path, len(fields), repair_encoding=repair_encoding, checks=checks):
        named = dict(zip(fields, batch.columns, strict=True))
        title = named["title"] if "title" in named else empty_strings(len(named["doc_id"]))
        yield CorpusBatch(batch.lines, named["doc_id"], title, named["text"])
