"""The corpus artifact: validated streams of rows written as CORPUS parquet.

Ids are checked for uniqueness without a Python set: MS MARCO's 8.8M passage ids would need
over 700 MB as one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lead import schemas
from lead.data.checks import Checks
from lead.data.text import check_ids, check_texts, repair_mojibake
from lead.data.tsv import iter_tsv
from lead.errors import DataError
from lead.io import iter_batches, parquet_writer

_WINDOW = 1 << 20


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
            check_ids(batch.doc_id, batch.lines, source, "document id")
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


def ids_like(corpus_path: str | Path, value: str) -> pa.Array:
    """The ids of a CORPUS parquet equal to `value` once both are NFC-normalised: the ids an
    unknown id only looks like (streaming its id column; for an error message)."""
    import unicodedata

    wanted = unicodedata.normalize("NFC", value)
    found = [
        batch.column(0).filter(pc.equal(pc.utf8_normalize(batch.column(0), "NFC"), wanted))
        for batch in iter_batches(corpus_path, schemas.CORPUS, columns=["doc_id"])
    ]
    return pa.chunked_array(found, pa.string()).combine_chunks()


def known_ids(corpus_path: str | Path, wanted: pa.Array) -> pa.Array:
    """The subset of `wanted` ids present in a CORPUS parquet, streaming its id column."""
    found = [
        batch.column(0).filter(pc.is_in(batch.column(0), value_set=wanted))
        for batch in iter_batches(corpus_path, schemas.CORPUS, columns=["doc_id"])
    ]
    return pa.chunked_array(found, pa.string()).combine_chunks()
