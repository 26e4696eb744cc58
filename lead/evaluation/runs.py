"""Runs and qrels as lead reads them, validated, the run in the project's ranking order.

A source is a DataFrame, a parquet artifact (lead/schemas.py) or a TREC text file
(lead/evaluation/trec.py): a file starting with parquet's magic bytes is parquet, a `.parquet` file
without them is an error, anything else is read as TREC text. Errors name the file and the
row (parquet) or line (TREC) and say what was expected.

Ranking order inside a query: the run's `rank` column when present, then score descending,
then `doc_id` ascending, so it never depends on the row order. A `rank` column must agree
with the scores (a better rank never has a strictly lower score): trec_eval ranks by score,
so a run whose ranks contradict its scores would mean one thing to lead and another to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lead.errors import DataError
from lead.evaluation import trec
from lead.io import input_file
from lead.schemas import MAX_RELEVANCE

Source = pd.DataFrame | str | Path
_PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class Table:
    """Columns read from a source, and how to name one of its rows in an error."""

    frame: pd.DataFrame
    label: str
    from_trec: bool = False  # rows are the lines of a TREC file: row i is line i + 1

    def error(self, row: int, message: str, column: str | None = None) -> DataError:
        if self.from_trec:
            return DataError(self.label, row + 1, f"{column} {message}" if column else message)
        where = f"row {row}" + (f", column {column!r}" if column else "")
        return DataError(self.label, where, message)

    def ids(self, column: str) -> pd.Series:
        nulls = self.frame[column].isna().to_numpy()
        if nulls.any():
            raise self.error(int(np.flatnonzero(nulls)[0]), "is null; expected an id", column)
        return self.frame[column].astype(str)

    def numbers(self, column: str, *, integral: bool) -> np.ndarray:
        values = _floats(self.frame[column])
        bad = ~np.isfinite(values)
        if integral:
            bad |= np.isfinite(values) & (values != np.round(values))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            expected = "an integer" if integral else "a finite number"
            raise self.error(row, f"{self.frame[column].iloc[row]!r} is not {expected}", column)
        return values


def _floats(column: pd.Series) -> np.ndarray:
    """float64 values, NaN where one is not a number; Arrow parses text (TREC fields) fast."""
    if not pd.api.types.is_numeric_dtype(column):
        try:
            return pa.array(column).cast(pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass  # mixed or unparsable values: pandas marks each bad one NaN
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)


def read_source(
    source: Source,
    what: str,
    required: Sequence[str],
    optional: Sequence[str] = (),
    read_trec: Callable[[Path], dict[str, pa.Array]] | None = None,
) -> Table:
    """The `required` (and present `optional`) columns of a DataFrame, parquet or TREC file."""
    if isinstance(source, pd.DataFrame):
        return _columns(source, "<" + what + " DataFrame>", what, required, optional)
    path = input_file(source)
    with path.open("rb") as handle:
        parquet = handle.read(len(_PARQUET_MAGIC)) == _PARQUET_MAGIC
    if parquet or path.suffix == ".parquet" or read_trec is None:
        try:
            present = pq.read_schema(path).names
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(path, None, f"not a readable parquet file: {err}") from err
        _check_columns(present, str(path), what, required)
        columns = [*required, *(column for column in optional if column in present)]
        return Table(pq.read_table(path, columns=columns).to_pandas(), str(path))
    fields = read_trec(path)
    frame = pd.DataFrame({name: array.to_pandas() for name, array in fields.items()})
    return Table(frame, str(path), from_trec=True)


def _columns(
    frame: pd.DataFrame, label: str, what: str, required: Sequence[str], optional: Sequence[str]
) -> Table:
    _check_columns(frame.columns, label, what, required)
    columns = [*required, *(column for column in optional if column in frame.columns)]
    return Table(frame[columns].reset_index(drop=True), label)


def _check_columns(present: Sequence[str], label: str, what: str, required: Sequence[str]) -> None:
    missing = [column for column in required if column not in present]
    if missing:
        raise DataError(
            label, f"column {missing[0]!r}", f"missing; a {what} needs columns {list(required)}"
        )


def _sorted_indices(frame: pd.DataFrame, keys: list[tuple[str, str]]) -> np.ndarray:
    """Row order under `keys` (Arrow's multi-key sort: stable, and much faster than pandas')."""
    columns = [name for name, _ in keys]
    table = pa.Table.from_pandas(frame[columns], preserve_index=False)
    return pc.sort_indices(table, sort_keys=keys).to_numpy()


def _no_duplicates(frame: pd.DataFrame, table: Table) -> None:
    order = _sorted_indices(frame, [("query_id", "ascending"), ("doc_id", "ascending")])
    query_ids = frame["query_id"].to_numpy(dtype=object)[order]
    doc_ids = frame["doc_id"].to_numpy(dtype=object)[order]
    repeats = (query_ids[1:] == query_ids[:-1]) & (doc_ids[1:] == doc_ids[:-1])
    if repeats.any():
        row = int(order[1:][repeats].min())  # the stable sort puts later occurrences second
        query_id, doc_id = frame["query_id"].iloc[row], frame["doc_id"].iloc[row]
        raise table.error(row, f"duplicate (query_id, doc_id) = ({query_id!r}, {doc_id!r})")


def read_run(run: Source) -> Table:
    """A run's columns query_id, doc_id, score and, when present, rank (not yet checked)."""
    return read_source(run, "run", ("query_id", "doc_id", "score"), ("rank",), trec.read_run)


def ranked(table: Table) -> pd.DataFrame:
    """Validate a run read by `read_run` and put it in the project's ranking order.

    Returns columns query_id, doc_id, score (float64), rank (1-based, consecutive per query),
    sorted by query_id then rank.
    """
    ranking = pd.DataFrame(
        {
            "query_id": table.ids("query_id"),
            "doc_id": table.ids("doc_id"),
            "score": table.numbers("score", integral=False),
        }
    )
    _no_duplicates(ranking, table)
    keys = [("query_id", "ascending"), ("score", "descending"), ("doc_id", "ascending")]
    given = "rank" in table.frame.columns
    if given:
        ranking["given_rank"] = table.numbers("rank", integral=True)
        keys.insert(1, ("given_rank", "ascending"))
    order = _sorted_indices(ranking, keys)
    ranking = ranking.take(order).reset_index(drop=True)
    query_ids = ranking["query_id"].to_numpy(dtype=object)
    same_query = query_ids[1:] == query_ids[:-1]
    if given:
        _ranks_follow_scores(ranking, same_query, order, table)
    starts = np.flatnonzero(np.concatenate([[True], ~same_query]))  # [0] when empty
    sizes = np.diff(np.append(starts, len(ranking)))
    ranking["rank"] = np.arange(len(ranking), dtype=np.int64) - np.repeat(starts, sizes) + 1
    return ranking[["query_id", "doc_id", "score", "rank"]]


def _ranks_follow_scores(
    ranking: pd.DataFrame, same_query: np.ndarray, order: np.ndarray, table: Table
) -> None:
    """Refuse a run where, inside a query, a better rank has a strictly lower score."""
    scores = ranking["score"].to_numpy()
    rising = same_query & (scores[1:] > scores[:-1])
    if rising.any():
        first = int(np.flatnonzero(rising)[0])
        better, worse = ranking.iloc[first], ranking.iloc[first + 1]
        raise table.error(
            int(order[first + 1]),
            f"query {worse['query_id']!r}: rank {int(worse['given_rank'])} scores "
            f"{float(worse['score'])!r}, above rank {int(better['given_rank'])} "
            f"({float(better['score'])!r}); ranks must follow descending scores",
        )


def rank_run(run: Source) -> pd.DataFrame:
    """A run from any source, validated and in ranking order (see `ranked`)."""
    return ranked(read_run(run))


def load_qrels(qrels: Source) -> pd.DataFrame:
    """Validate qrels: string ids, integer grades, one judgment per (query_id, doc_id)."""
    table = read_source(qrels, "qrels", ("query_id", "doc_id", "relevance"), (), trec.read_qrels)
    grades = table.numbers("relevance", integral=True)
    outside = np.abs(grades) > MAX_RELEVANCE
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise table.error(row, f"{table.frame['relevance'].iloc[row]!r} is outside "
                               f"-{MAX_RELEVANCE}..{MAX_RELEVANCE} (trec_eval allocates memory "
                               "for every grade up to the largest)", "relevance")
    checked = pd.DataFrame(
        {
            "query_id": table.ids("query_id"),
            "doc_id": table.ids("doc_id"),
            "relevance": grades.astype(np.int64),
        }
    )
    _no_duplicates(checked, table)
    return checked


def export_trec(run: Source, out_path: str | Path, tag: str) -> int:
    """Write a run as `qid Q0 docid rank score tag` lines in the ranking order; return lines.

    Ranks are 1-based after tie-breaking; scores keep the run's own precision (float32 for
    pipeline runs). trec_eval ignores the rank column and orders exact score ties by docno
    descending, so on tied scores it may rank differently from this file's ranks (and from
    lead's evaluation); different scores always rank alike, since ranks must follow them.
    """
    trec.check_tag(tag)  # before reading a large run
    table = read_run(run)
    ranking = ranked(table)
    score_type = np.float32 if table.frame["score"].dtype == np.float32 else np.float64
    return trec.write_run(
        out_path,
        pa.array(ranking["query_id"], pa.string()),
        pa.array(ranking["doc_id"], pa.string()),
        ranking["rank"].to_numpy(),
        ranking["score"].to_numpy().astype(score_type),
        tag,
        table.label,
    )
