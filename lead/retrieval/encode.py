"""Encode tokenized queries or passages into dense embeddings, one contiguous shard at a time.

The tokens file is streamed in windows of rows; inside a window rows are sorted by length so
each batch carries almost no padding, and the window is written back in input order, so the
output lines up with the tokens file row for row (and shards concatenate to the whole file).
Memory depends on the window, never on the corpus. The output lands atomically: a killed job
leaves nothing, and rerunning redoes only its own shard.

The backbone runs as its library defines it (eager PyTorch; bf16 autocast on CUDA, and on CPU
when `encode.cpu_bf16` is set): what an encoder's representation is stays defined by
`Encoder.encode_query` / `encode_passage` alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lead.devices import cpu_has_native_bf16
from lead.errors import ConfigError, DataError
from lead.io import open_parquet, parquet_writer, provenance
from lead.modeling.encoders import Encoder, collate, load_encoder
from lead.schemas import TOKENS, embeddings
from lead.tokenization import check_tokenizer

log = logging.getLogger(__name__)

# Rows sorted together, in batches: bounds memory while leaving little padding to sort away.
SORT_WINDOW_BATCHES = 32
ROLES = ("query", "passage")
# Progress lines while encoding: at most one per this many seconds.
PROGRESS_SECONDS = 30.0

Embed = Callable[[list[Sequence[int]]], np.ndarray]


def shard_rows(num_rows: int, shard: int, num_shards: int) -> tuple[int, int]:
    """The [start, stop) row range of shard `shard` of `num_shards`: contiguous, exhaustive."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ConfigError(f"shard {shard} of {num_shards}: need 0 <= shard < num_shards")
    return num_rows * shard // num_shards, num_rows * (shard + 1) // num_shards


def open_tokens(path: str | Path) -> pq.ParquetFile:
    """Open a tokens artifact, checking that it exists, is parquet and has the TOKENS columns."""
    return open_parquet(path, TOKENS)


def iter_token_rows(
    file: pq.ParquetFile, start: int, stop: int, window: int
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Stream (first row number, batch) over rows [start, stop), reading only the row groups
    that overlap the range."""
    groups, first = [], None
    group_start = 0
    for number in range(file.num_row_groups):
        group_stop = group_start + file.metadata.row_group(number).num_rows
        if group_start < stop and group_stop > start:
            groups.append(number)
            first = group_start if first is None else first
        group_start = group_stop
    if not groups:
        return
    position = first
    for batch in file.iter_batches(batch_size=window, row_groups=groups, columns=TOKENS.names):
        lo, hi = max(start - position, 0), min(stop - position, batch.num_rows)
        if hi > lo:
            yield position + lo, batch.slice(lo, hi - lo)
        position += batch.num_rows


def token_lists(
    path: Path, first_row: int, batch: pa.RecordBatch, vocab_size: int | None = None
) -> list[list[int]]:
    """The token id lists of a batch, checked row by row (see `_row_problem`)."""
    lists = batch.column("input_ids").to_pylist()
    for offset, (doc_id, row) in enumerate(zip(batch.column("id").to_pylist(), lists, strict=True)):
        problem = _row_problem(doc_id, row, vocab_size)
        if problem:
            raise DataError(path, f"row {first_row + offset}, id {doc_id!r}", problem)
    return lists


def _row_problem(doc_id: str | None, row: list[int] | None, vocab_size: int | None) -> str | None:
    """Null ids, empty sequences and ids outside the model's vocabulary (tokens made with
    another model's tokenizer, which would otherwise fail deep inside the embedding layer)."""
    if doc_id is None:
        return "id is null"
    if not row:
        return "input_ids is null or empty"
    if vocab_size is not None and (max(row) >= vocab_size or min(row) < 0):
        return (
            f"token id {max(row) if max(row) >= vocab_size else min(row)} is outside the "
            f"model's vocabulary of {vocab_size}: were these tokens made with its tokenizer?"
        )
    return None


def encode_window(
    rows: list[Sequence[int]],
    embed: Embed,
    batch_size: int,
    on_batch: Callable[[int], None] = lambda rows: None,
) -> np.ndarray:
    """Embed rows in length-sorted batches; the result is in the input order. `on_batch` is
    told the number of rows of each batch done."""
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    order = np.argsort(-lengths, kind="stable")
    out: np.ndarray | None = None
    for begin in range(0, len(rows), batch_size):
        chosen = order[begin : begin + batch_size]
        vectors = embed([rows[i] for i in chosen])
        if out is None:
            out = np.empty((len(rows), vectors.shape[1]), dtype=np.float32)
        out[chosen] = vectors
        on_batch(len(chosen))
    return out


def stored_values(vectors: np.ndarray, schema: pa.Schema) -> np.ndarray:
    """The vectors in the embedding column's value type (overflow is `non_finite_problem`'s)."""
    value_type = schema.field(1).type.value_type  # the vector column (of any schema)
    with np.errstate(over="ignore"):
        return vectors.astype(value_type.to_pandas_dtype(), copy=False)


def non_finite_problem(vectors: np.ndarray, stored: np.ndarray) -> tuple[int, str] | None:
    """The first row whose stored embedding is not finite, and why: search would fail on it
    much later, far from the model that produced it."""
    bad = ~np.isfinite(stored).all(axis=1)
    if not bad.any():
        return None
    row = int(np.argmax(bad))
    if np.isfinite(vectors[row]).all():
        return row, f"produced an embedding beyond the range of {stored.dtype}: store float32"
    return row, "produced a non-finite embedding (NaN or inf)"


def embeddings_table(ids: pa.Array, stored: np.ndarray, schema: pa.Schema) -> pa.Table:
    column = pa.FixedSizeListArray.from_arrays(pa.array(stored.ravel()), stored.shape[1])
    return pa.Table.from_arrays([ids, column], schema=schema)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """Rows done, their rate and the time left, logged at most once per `every` seconds."""

    def __init__(
        self,
        total: int,
        what: str,
        unit: str = "rows",
        every: float = PROGRESS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.what, self.unit, self.every, self.clock = total, what, unit, every, clock
        self.done = 0
        self.started = self.last = clock()
        log.info("%s: encoding %d %s", what, total, unit)

    def advance(self, rows: int) -> None:
        self.done += rows
        now = self.clock()
        if now - self.last < self.every or self.done >= self.total:
            return
        self.last = now
        rate = self.done / max(now - self.started, 1e-9)
        log.info("%s: %d of %d %s, %.1f %s/s, ETA %s", self.what, self.done, self.total,
                 self.unit, rate, self.unit, _duration((self.total - self.done) / rate))

    def finish(self) -> None:
        seconds = self.clock() - self.started
        log.info("%s: encoded %d %s in %s, %.1f %s/s", self.what, self.done, self.unit,
                 _duration(seconds), self.done / max(seconds, 1e-9), self.unit)


def encode_tokens(
    tokens_path: str | Path,
    out_path: str | Path,
    embed: Embed,
    dim: int,
    *,
    batch_size: int,
    dtype: str = "float32",
    shard: int = 0,
    num_shards: int = 1,
    vocab_size: int | None = None,
    prov: Mapping[str, Any] | None = None,
    schema: pa.Schema | None = None,
    model: str | Path = "the encoder",
    unit: str = "rows",
) -> int:
    """Embed shard `shard` of `num_shards` of a tokens file with `embed`; returns rows written.

    `embed` maps a list of token id lists to a float32 (n, dim) array; it is the model-free
    core, so any encoder (or a test double of one) plugs in. `schema` replaces the
    embeddings schema (e.g. a teacher's layer cache); `model` names it in errors,
    `unit` the rows in progress lines. A non-finite embedding fails the shard, writing nothing.
    """
    tokens_path = Path(tokens_path)
    file = open_tokens(tokens_path)
    num_rows = file.metadata.num_rows
    if num_rows == 0:
        raise DataError(tokens_path, None, "no rows to encode")
    start, stop = shard_rows(num_rows, shard, num_shards)
    schema = schema or embeddings(dim, dtype)
    window = batch_size * SORT_WINDOW_BATCHES
    written = 0
    progress = Progress(stop - start, f"{tokens_path} rows {start}-{stop}", unit)
    with parquet_writer(out_path, schema, prov) as writer:
        for first_row, batch in iter_token_rows(file, start, stop, window):
            rows = token_lists(tokens_path, first_row, batch, vocab_size)
            vectors = encode_window(rows, embed, batch_size, progress.advance)
            if vectors.shape[1] != dim:
                raise ConfigError(f"the encoder returned {vectors.shape[1]}-d vectors, not {dim}")
            stored = stored_values(vectors, schema)
            problem = non_finite_problem(vectors, stored)
            if problem:
                row, message = problem
                where = f"row {first_row + row}, id {batch.column('id')[row].as_py()!r}"
                raise DataError(tokens_path, where, f"{model} {message}; nothing was written")
            writer.write_table(embeddings_table(batch.column("id"), stored, schema))
            written += batch.num_rows
    progress.finish()
    return written


def encoder_embed(encoder: Encoder, role: str, device: torch.device, bf16: bool) -> Embed:
    """Wrap an Encoder as an `Embed`: inference mode, bf16 autocast when asked."""
    encode = encoder.encode_query if role == "query" else encoder.encode_passage

    def embed(rows: list[Sequence[int]]) -> np.ndarray:
        batch = {name: t.to(device) for name, t in collate(rows, encoder.pad_id).items()}
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        with torch.inference_mode(), autocast:
            final = encode(batch).final
        return final.float().cpu().numpy()

    return embed


def encode_file(
    model_dir: str | Path,
    tokens_path: str | Path,
    role: str,
    out_path: str | Path,
    settings: Mapping[str, Any],
    *,
    shard: int = 0,
    num_shards: int = 1,
) -> int:
    """The encode stage: a dual encoder's embeddings of one shard of a tokens file.

    `settings` is the resolved `encode` config section. bf16 autocast is always on for CUDA
    and on CPU when `cpu_bf16` is set.
    """
    if role not in ROLES:
        raise ConfigError(f"role must be one of {ROLES}, got {role!r}")
    model_dir, tokens_path = Path(model_dir), Path(tokens_path)
    encoder = load_encoder(model_dir)
    if encoder.kind != "dual":
        raise ConfigError(
            f"{model_dir} is a {encoder.kind} model: only dual encoders produce single-vector "
            "embeddings for dense retrieval"
        )
    shard_rows(open_tokens(tokens_path).metadata.num_rows, shard, num_shards)  # checked first
    check_tokenizer(model_dir, tokens_path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = device.type == "cuda" or settings["cpu_bf16"]
    if device.type == "cpu" and bf16 and not cpu_has_native_bf16():
        log.warning("cpu_bf16 is set but this CPU has no native bf16: encoding will be slow")
    encoder.to(device).eval()
    prov = provenance("encode", settings, role=role, shard=shard, num_shards=num_shards,
                      bf16=bf16)
    return encode_tokens(
        tokens_path,
        out_path,
        encoder_embed(encoder, role, device, bf16),
        encoder.embedding_dim,
        batch_size=settings["batch_size"],
        dtype=settings["dtype"],
        shard=shard,
        num_shards=num_shards,
        vocab_size=encoder.backbone.get_input_embeddings().num_embeddings,
        prov=prov,
        model=model_dir,
        unit="queries" if role == "query" else "passages",
    )
