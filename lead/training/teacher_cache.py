"""A frozen dual-encoder teacher, encoded once: every training text's pooled vector at every
layer, so that distillation reads teacher scores instead of running the teacher.

In eval mode (no dropout) and without gradients, a dual encoder gives a text the same pooled
state of each block every time, so scoring those cached states with the teacher's own
similarity gives exactly the scores the live teacher would give (a test checks the loss to
1e-5 in fp32). ColBERT teachers (token states) and cross-encoders (pairs) have no per-text
vector and always run live.

The `cache-teacher` stage (lead.cache_teacher) writes one parquet per tokens file (the training
queries, the corpus in shards): `id`, and `layers`, the L blocks' pooled vectors back to back
(schema lead.schemas.teacher_layers). Here, the distillation job reads the rows its groups
need, memory-mapped from its scratch folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from lead import schemas
from lead.errors import ConfigError, DataError
from lead.io import iter_batches, open_parquet
from lead.training.data import EncoderInputs, Groups, _Growing, _Rows, _scratch_file, keep_ids


def cacheable(kind: str, teacher_trainable: bool, settings: Mapping[str, Any]) -> bool:
    """Whether a distillation reads its teacher from the cache (`teacher_cache.enabled`)."""
    return settings["enabled"] == "auto" and kind == "dual" and not teacher_trainable


@dataclass(frozen=True)
class VectorTable:
    """The kept rows of a set of layer-cache files: ids and (n, L, d) vectors."""

    ids: pa.StringArray
    vectors: np.ndarray
    paths: tuple[Path, ...]

    @classmethod
    def read(cls, paths: Sequence[Path], wanted: pa.Array, scratch: Path | None) -> VectorTable:
        shape = None
        kept_ids = []
        store = None
        for path in paths:
            file = open_parquet(path)
            meta = file.schema_arrow.metadata or {}
            if b"lead.layers" not in meta:
                raise DataError(path, None, "not a teacher layer cache (no lead.layers metadata)")
            this = (int(meta[b"lead.layers"]), int(meta[b"lead.dim"]))
            if shape is not None and this != shape:
                raise DataError(path, None, f"holds {this} (layers, dim), the others {shape}")
            shape = this
            value_type = file.schema_arrow.field("layers").type.value_type
            if store is None:
                dtype = np.float16 if pa.types.is_float16(value_type) else np.float32
                store = _Growing(dtype, _scratch_file(scratch, "teacher-layers.vectors"))
            for batch in iter_batches(path, schemas.teacher_layers(*shape, _name(value_type))):
                mask = keep_ids(wanted)(batch.column("id"), 0)
                ids = batch.column("id").filter(pa.array(mask))
                values = batch.column("layers").filter(pa.array(mask)).flatten()
                store.append(values.to_numpy(zero_copy_only=False))
                kept_ids.append(ids)
        if store is None or shape is None:
            raise ConfigError("the teacher layer cache has no files")
        ids = pa.chunked_array(kept_ids, pa.string()).combine_chunks()
        if pc.count_distinct(ids).as_py() != len(ids):
            raise DataError(paths[0], None, "an id appears in more than one cache row")
        return cls(ids, store.finish(shape), tuple(paths))

    def rows(self, ids: pa.Array, referenced_by: str | Path) -> np.ndarray:
        rows = pc.index_in(ids, value_set=self.ids)
        if rows.null_count:
            missing = ids.filter(pc.is_null(rows))[0].as_py()
            raise DataError(self.paths[0], f"id {missing!r}",
                            f"missing from the teacher layer cache; referenced by {referenced_by}")
        return rows.to_numpy(zero_copy_only=False).astype(np.int64)


def _name(value_type: pa.DataType) -> str:
    return "float16" if pa.types.is_float16(value_type) else "float32"


@dataclass(frozen=True)
class TeacherCache:
    """A frozen teacher's cached vectors of the training queries and passages."""

    queries: VectorTable
    passages: VectorTable

    @classmethod
    def read(cls, query_files: Sequence[Path], passage_files: Sequence[Path], groups: Groups,
             scratch: Path | None = None) -> TeacherCache:
        return cls(
            VectorTable.read(query_files, groups.query_ids, scratch),
            VectorTable.read(passage_files, groups.passage_ids(), scratch),
        )

    @property
    def num_layers(self) -> int:
        return self.passages.vectors.shape[1]

    def index(self, groups: Groups) -> _Rows:
        return _Rows(
            query=self.queries.rows(groups.query_ids, groups.path),
            positive=self.passages.rows(groups.positive_ids, groups.path),
            negative=self.passages.rows(groups.negative_ids, groups.path),
        )

    def batch(self, query_rows: np.ndarray, passage_rows: np.ndarray) -> EncoderInputs:
        """(B, L, d) and (B*g, L, d) fp32 tensors of the batch's cached vectors."""
        return EncoderInputs(
            torch.from_numpy(np.asarray(self.queries.vectors[query_rows], dtype=np.float32)),
            torch.from_numpy(np.asarray(self.passages.vectors[passage_rows], dtype=np.float32)),
        )
