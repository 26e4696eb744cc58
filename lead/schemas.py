"""Arrow schemas of every artifact the pipeline writes (documented in docs/artifacts.md).

Ids are strings everywhere: BEIR ids are not integers, and comparing a string with an
integer is how the original release kept gold passages among its negatives.
"""

from __future__ import annotations

import pyarrow as pa

CORPUS = pa.schema([("doc_id", pa.string()), ("title", pa.string()), ("text", pa.string())])
QUERIES = pa.schema([("query_id", pa.string()), ("text", pa.string())])
QRELS = pa.schema([("query_id", pa.string()), ("doc_id", pa.string()), ("relevance", pa.int32())])
GROUPS = pa.schema(
    [
        ("query_id", pa.string()),
        ("positives", pa.list_(pa.string())),
        ("negatives", pa.list_(pa.string())),
    ]
)
TOKENS = pa.schema([("id", pa.string()), ("input_ids", pa.list_(pa.int32()))])
RUN = pa.schema(
    [
        ("query_id", pa.string()),
        ("doc_id", pa.string()),
        ("rank", pa.int32()),
        ("score", pa.float32()),
    ]
)
METRICS = pa.schema([("measure", pa.string()), ("value", pa.float64())])
PER_QUERY_METRICS = pa.schema(
    [("query_id", pa.string()), ("measure", pa.string()), ("value", pa.float64())]
)


def embeddings(dim: int, dtype: str = "float32") -> pa.Schema:
    """Embeddings of queries or passages: one fixed-size vector per id."""
    value_type = {"float32": pa.float32(), "float16": pa.float16()}[dtype]
    return pa.schema([("id", pa.string()), ("embedding", pa.list_(value_type, dim))])
