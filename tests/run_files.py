"""Runs and qrels as files for the tests of lead.evaluation: TREC lines and parquet tables."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

RUN_LINES = [
    ("q2", "Q0", "d7", "1", "0.5", "tag"),
    ("q1", "Q0", "d3", "1", "12.25", "tag"),
    ("q1", "Q0", "d1", "2", "12.25", "tag"),  # tied with d3; the rank column decides
    ("q1", "Q0", "d2", "3", "-1e-3", "tag"),
]
EXPECTED_RUN = pd.DataFrame(
    {
        "query_id": ["q1", "q1", "q1", "q2"],
        "doc_id": ["d3", "d1", "d2", "d7"],
        "score": [12.25, 12.25, -0.001, 0.5],
        "rank": [1, 2, 3, 1],
    }
)


def write_lines(path, lines, separator=" ", ending="\n"):
    path.write_bytes("".join(separator.join(line) + ending for line in lines).encode())
    return path


def write_parquet(frame: pd.DataFrame, path, schema: pa.Schema | None = None):
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), path)
    return path
