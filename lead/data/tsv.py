"""Tab-separated files read in blocks of whole lines and split with numpy.

TSV files are split on whole blocks of lines instead of a Python loop per line: the
8.8M-passage MS MARCO collection must convert at hundreds of thousands of passages per
second with memory that does not grow with the file. Every problem names the file and line.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa

from lead.data.checks import Checks
from lead.data.text import BOM, ensure_utf8, strip_leading_bom
from lead.errors import DataError
from lead.io import input_file

BLOCK_SIZE = 8 << 20  # ~20k MS MARCO passages: one parquet row group
_TAB, _NEWLINE, _CR = 9, 10, 13
_GZIP_MAGIC = b"\x1f\x8b"
# What reading a truncated or damaged .gz raises, mid-stream.
CORRUPT_GZIP = (EOFError, zlib.error, gzip.BadGzipFile)
_WHITESPACE_RUN = re.compile(rb"[ \t]+")
_EDGE_TAB = re.compile(rb"^\t|\t(?=\r?\n)", re.MULTILINE)
# Column names that files of ids come with when exported with a header (pandas, BEIR, SQL):
# as the first field of a file that has no header, such a word is a header, not an id.
HEADER_WORDS = frozenset({
    "id", "_id", "docid", "doc_id", "doc-id", "did", "docno", "pid", "passage_id",
    "passage-id", "qid", "query_id", "query-id", "queryid", "topic", "topic_id", "corpus-id",
    "corpus_id",
})
_FIRST_FIELD = {False: re.compile(rb"[\t\r\n]"), True: re.compile(rb"[ \t\r\n]")}


@dataclass(frozen=True)
class Batch:
    """Consecutive lines of a file, split into columns (string arrays of equal length)."""

    first_line: int
    columns: list[pa.Array]

    @property
    def lines(self) -> np.ndarray:
        return np.arange(self.first_line, self.first_line + len(self.columns[0]), dtype=np.int64)


def open_binary(path: str | Path) -> IO[bytes]:
    """The file's bytes, decompressed if it is named `.gz` (which it must then be)."""
    path = input_file(path)
    if path.suffix != ".gz":
        return open(path, "rb")
    with open(path, "rb") as file:
        magic = file.read(len(_GZIP_MAGIC))
    if magic and magic != _GZIP_MAGIC:
        raise DataError(path, None, f"named .gz but not gzip-compressed (starts with {magic!r})")
    return gzip.open(path, "rb")


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
                if first and buffer.startswith(BOM):
                    del buffer[: len(BOM)]
                    size -= len(BOM)
                first = False
                cut = buffer.rfind(b"\n", 0, size) + 1
                rest = bytes(buffer[cut:size])
                if cut:
                    yield memoryview(buffer)[:cut]
    except CORRUPT_GZIP as err:
        raise DataError(path, None, f"truncated or corrupt gzip file: {err}") from err
    if rest:
        yield memoryview(rest + b"\n")


def split_block(
    block: memoryview, first_line: int, columns: int, path: str | Path,
    separated: str = "tab-separated",
) -> list[pa.Array]:
    """Split a block of tab-separated lines into `columns` string arrays, zero Python loops.

    Every field and every separator becomes one value of a single string array laid over the
    block's bytes (offsets only); the fields are then gathered column by column. A line with
    another number of fields, or a NUL byte, raises DataError naming it. A CR before the
    newline is dropped.
    """
    buf = np.frombuffer(block, dtype=np.uint8)
    low = np.flatnonzero(buf <= _NEWLINE)  # one pass; bytes below TAB are rare
    seps = low[buf[low] >= _TAB]
    line_ends = np.flatnonzero(buf[seps] == _NEWLINE)
    nul = low[buf[low] == 0]
    if len(nul):  # binary data or UTF-16: no text holds one
        newlines = seps[line_ends]
        index = int(np.searchsorted(newlines, nul[0]))
        column = int(nul[0]) - (int(newlines[index - 1]) + 1 if index else 0) + 1
        raise DataError(path, first_line + index, f"NUL byte at byte {column} of the line: not "
                                                  "a UTF-8 text file (binary data, or UTF-16?)")
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

    The first `skip_lines` lines (a header) are left out; a file read without skipping must
    not start with one (its first field a column name such as `id` or `qid`). NUL bytes and
    invalid UTF-8 are errors naming the line, unless `repair_encoding` decodes such lines
    as Windows-1252; a byte-order mark starting a line is removed (and counted).
    """
    line, headerless = 1, not skip_lines
    for block in iter_blocks(path, block_size):
        if skip_lines:
            block, dropped = _drop_lines(block, skip_lines)
            skip_lines -= dropped
            line += dropped
            if not len(block):
                continue
        if headerless and line == 1:
            _refuse_header(block, path, whitespace)
        block = ensure_utf8(block, line, path, repair_encoding, checks)
        if whitespace:
            block = memoryview(_EDGE_TAB.sub(b"", _WHITESPACE_RUN.sub(b"\t", block)))
        separated = "blank-separated" if whitespace else "tab-separated"
        first, *rest = split_block(block, line, columns, path, separated)
        batch = Batch(line, [strip_leading_bom(first, checks), *rest])
        line += len(first)
        yield batch


def _refuse_header(block: memoryview, path: str | Path, whitespace: bool) -> None:
    """A file of data lines whose first line is a header would make it a document or query."""
    first = _FIRST_FIELD[whitespace].split(bytes(block[:256]), maxsplit=1)[0]
    word = first.strip().decode("utf-8", errors="replace")
    if word.lower() in HEADER_WORDS:
        raise DataError(path, 1, f"starts with a header line ({word!r} is a column name, not "
                                 "an id): remove the header, the file must hold data lines only")


def _drop_lines(block: memoryview, count: int) -> tuple[memoryview, int]:
    """Leave out the first `count` lines of a block (fewer if it has fewer)."""
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == _NEWLINE)
    dropped = min(count, len(ends))
    return (block[int(ends[dropped - 1]) + 1 :] if dropped else block), dropped
