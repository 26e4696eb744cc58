"""Arrow schemas of every artifact the pipeline writes (documented in docs/artifacts.md).

Ids are strings everywhere: BEIR ids are not integers, and comparing a string with an
integer is how the original release kept gold passages among its negatives.
"""

from __future__ import annotations

import pyarrow as pa

CORPUS = pa.schema([("doc_id", pa.string()), ("title", pa.string()), ("text", pa.string())])
QUERIES = pa.schema([("query_id", pa.string()), ("text", pa.string())])
QRELS = pa.schema([("query_id", pa.string()), ("doc_id", pa.string()), ("relevance", pa.int32())])
# Relevance grades are at most this in absolute value: trec_eval allocates memory for every
# grade up to the largest judged (8 bytes a level: a grade of 10^9 costs gigabytes).
MAX_RELEVANCE = 65_535
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


def teacher_layers(num_layers: int, dim: int, dtype: str = "float32") -> pa.Schema:
    """A teacher's layer cache: every layer's pooled vector of a text, layer 1 first, flat."""
    value_type = {"float32": pa.float32(), "float16": pa.float16()}[dtype]
    return pa.schema(
        [("id", pa.string()), ("layers", pa.list_(value_type, num_layers * dim))],
        metadata={b"lead.layers": str(num_layers).encode(), b"lead.dim": str(dim).encode()},
    )


# The training log: one row per logged step (step 0: the initial model's dev evaluation).
# Loss columns come first, one per term the method computes (lead.methods.TERMS)
# after "loss"; dev columns last, `dev_<measure>` (and `teacher_dev_<measure>` for a jointly
# trained teacher) on evaluation steps.
TRAINING_LOG_FIXED = {
    "lr": pa.float64(),
    "teacher_lr": pa.float64(),
    "grad_norm": pa.float64(),
    "teacher_grad_norm": pa.float64(),
    "examples_per_s": pa.float64(),
    "seconds_per_step": pa.float64(),
    "memory_mb": pa.float64(),
    "layers": pa.list_(pa.list_(pa.int32())),
    "layer_weights": pa.list_(pa.float64()),
}
DEV_PREFIXES = ("dev_", "teacher_dev_")


def training_log(columns: list[str]) -> pa.Schema:
    """The log's schema for the columns a run produced, in the documented order."""
    dev = [c for c in columns if c.startswith(DEV_PREFIXES)]
    fixed = [c for c in TRAINING_LOG_FIXED if c in columns]
    losses = [c for c in columns if c != "step" and c not in fixed and c not in dev]
    return pa.schema(
        [("step", pa.int64())]
        + [(name, pa.float64()) for name in losses]
        + [(name, TRAINING_LOG_FIXED[name]) for name in fixed]
        + [(name, pa.float64()) for name in dev]
    )


def log_losses(schema: pa.Schema) -> list[str]:
    """The loss columns of a training log."""
    return [n for n in schema.names
            if n != "step" and n not in TRAINING_LOG_FIXED and not n.startswith(DEV_PREFIXES)]
