"""The `cache-teacher` stage: a frozen dual-encoder teacher's pooled vector of every training
text at every layer, encoded once (read back by lead.training.data.TeacherCache).

In eval mode (no dropout) and without gradients, a dual encoder gives a text the same pooled
state of each block every time, so scoring those cached states with the teacher's own
similarity gives the scores the live teacher would give.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lead import schemas
from lead.errors import ConfigError
from lead.io import provenance
from lead.modeling.encoders import collate, load_encoder
from lead.retrieval.encode import encode_tokens
from lead.tokenization import check_tokenizer


def cache_file(
    model_dir: str | Path,
    tokens_path: str | Path,
    role: str,
    out_path: str | Path,
    settings: Mapping[str, Any],
    *,
    batch_size: int,
    shard: int = 0,
    num_shards: int = 1,
) -> int:
    """Encode one shard of a tokens file at every layer of a dual encoder; returns rows."""
    encoder = load_encoder(model_dir)
    if encoder.kind != "dual":
        raise ConfigError(
            f"{model_dir} is a {encoder.kind} model: only a dual-encoder teacher has a layer "
            "cache (ColBERT and cross-encoder teachers run live)"
        )
    check_tokenizer(model_dir, tokens_path)
    encoder.eval()
    layers = list(range(1, encoder.num_layers + 1))
    encode = encoder.encode_query if role == "query" else encoder.encode_passage

    def embed(rows: list[Sequence[int]]) -> np.ndarray:
        with torch.inference_mode():
            reps = encode(collate(rows, encoder.pad_id), layers)
        stacked = torch.stack([reps.layers[i] for i in layers], dim=1)
        return stacked.reshape(len(rows), -1).float().numpy()

    schema = schemas.teacher_layers(encoder.num_layers, encoder.hidden_size, settings["dtype"])
    prov = provenance("cache-teacher", dict(settings), role=role, shard=shard,
                      num_shards=num_shards, layers=encoder.num_layers, dim=encoder.hidden_size)
    return encode_tokens(
        tokens_path, out_path, embed, encoder.num_layers * encoder.hidden_size,
        batch_size=batch_size, shard=shard, num_shards=num_shards,
        vocab_size=encoder.backbone.get_input_embeddings().num_embeddings, prov=prov,
        schema=schema, model=model_dir,
    )


def embeddings_from_cache(
    model_dir: str | Path, cache_path: str | Path, out_path: str | Path, *, dtype: str = "float32"
) -> int:
    """What `encode` writes for these texts, read off the model's layer cache: the last
    layer's pooled states, represented as the model's final vectors (unit length for a cosine
    model), in the cache's row order. Exact for a float32 cache; no forward pass."""
    import pyarrow as pa

    from lead.io import iter_batches, open_parquet, parquet_writer
    from lead.retrieval.encode import embeddings_table, stored_values
    from lead.schemas import embeddings

    encoder = load_encoder(model_dir)
    file = open_parquet(cache_path)
    meta = file.schema_arrow.metadata or {}
    layers, dim = int(meta.get(b"lead.layers", 0)), int(meta.get(b"lead.dim", 0))
    if (layers, dim) != (encoder.num_layers, encoder.hidden_size):
        raise ConfigError(f"{cache_path}: holds {layers} layers of {dim}, not {model_dir}'s "
                          f"{encoder.num_layers} of {encoder.hidden_size}")
    value_type = file.schema_arrow.field("layers").type.value_type
    schema = embeddings(encoder.embedding_dim, dtype)
    prov = provenance("encode", {"from_cache": str(cache_path), "dtype": dtype})
    written = 0
    with parquet_writer(out_path, schema, prov) as writer:
        for batch in iter_batches(cache_path, schemas.teacher_layers(
                layers, dim, "float16" if pa.types.is_float16(value_type) else "float32")):
            flat = batch.column("layers").flatten().to_numpy(zero_copy_only=False)
            last = torch.from_numpy(flat.reshape(-1, layers, dim)[:, -1].astype(np.float32))
            with torch.inference_mode():
                vectors = encoder.represent(last).numpy()
            writer.write_table(embeddings_table(batch.column("id"),
                                                stored_values(vectors, schema), schema))
            written += batch.num_rows
    return written
