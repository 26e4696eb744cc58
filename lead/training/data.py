"""Training examples: one query, one positive and n sampled negatives, in every model's tokens.

The groups file names passages by id; teacher and student each read their OWN tokenized
parquet (they may have different tokenizers), and the same ids index both. Only the rows a job
needs are kept (the groups' queries and passages, the dev pool), streamed out of the parquet
into flat arrays, memory-mapped from the job's scratch folder when it has one: a training
process's memory does not grow with the corpus. Sampling is a pure function of (seed, epoch,
example index): any process, and a resumed run, draws the same passages for the same example.

`optimisation.train_queries` < 1 keeps a fixed share of the groups (train_subset): the same
queries for every method, variant and training seed, since the subset depends on the query ids
and the share alone.

A frozen dual-encoder teacher is read from its layer cache instead of its tokens (TeacherCache;
the `cache-teacher` stage, lead.teacher_cache, writes it): the same ids index its per-layer
vectors, so that scoring them with the teacher's own similarity gives exactly the scores the
live teacher would give in eval mode.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DistributedSampler

from lead import schemas
from lead.errors import ConfigError, DataError
from lead.io import iter_batches, open_parquet, read_table

# Which rows of a file to keep: (ids of a batch, number of its first row) -> boolean mask.
Keep = Callable[[pa.Array, int], np.ndarray]
# The fixed key of the hash that ranks training queries for optimisation.train_queries: never
# the training seed, so that every method and seed of a config trains on the same queries.
TRAIN_QUERIES_KEY = b"lead.train_queries"


def keep_ids(wanted: pa.Array) -> Keep:
    """Keep the rows whose id is in `wanted`."""
    return lambda ids, _: pc.is_in(ids, value_set=wanted).to_numpy(zero_copy_only=False)


def keep_rows(rows: np.ndarray) -> Keep:
    """Keep the rows whose position in the file is in the sorted array `rows`."""
    def keep(ids: pa.Array, first: int) -> np.ndarray:
        positions = np.arange(first, first + len(ids))
        found = np.searchsorted(rows, positions)
        return (found < len(rows)) & (rows[np.minimum(found, len(rows) - 1)] == positions)

    return keep


class _Growing:
    """An append-only flat array, in memory or in a scratch file memory-mapped at the end."""

    def __init__(self, dtype: np.dtype, path: Path | None):
        self.dtype, self.path = np.dtype(dtype), path
        self.parts: list[np.ndarray] = []
        self.size = 0
        self.file = path.open("wb") if path is not None else None

    def append(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        if self.file is not None:
            self.file.write(values.tobytes())
        else:
            self.parts.append(values)
        self.size += len(values)

    def finish(self, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
        count = self.size // max(1, int(np.prod(shape_tail)))
        if self.file is None:
            flat = np.concatenate(self.parts) if self.parts else np.empty(0, self.dtype)
            return flat.reshape((count, *shape_tail))
        self.file.close()
        if self.size == 0:
            return np.empty((0, *shape_tail), self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(count, *shape_tail))


def _scratch_file(scratch: Path | None, name: str) -> Path | None:
    """A new file in the scratch folder (several tables may come from one parquet file)."""
    if scratch is None:
        return None
    handle, path = tempfile.mkstemp(prefix=f"{name}-", dir=scratch)
    os.close(handle)
    return Path(path)


def _check_ids(path: Path, ids: pa.Array) -> None:
    if ids.null_count:
        raise DataError(path, "column 'id'", "has null ids")
    if pc.count_distinct(ids).as_py() != len(ids):
        counts = pc.value_counts(ids)
        duplicate = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"]
        raise DataError(path, f"id {duplicate.as_py()!r}", "appears more than once")


@dataclass(frozen=True)
class TokenTable:
    """The kept rows of one TOKENS parquet: ids and their token ids as flat arrays."""

    path: Path
    ids: pa.StringArray
    values: np.ndarray  # int32, every row's tokens back to back
    offsets: np.ndarray  # int64, row i is values[offsets[i]:offsets[i + 1]]
    file_rows: int  # rows in the whole file

    @classmethod
    def read(cls, path: str | Path, keep: Keep | None = None,
             scratch: Path | None = None) -> TokenTable:
        """Stream the file, keeping the rows `keep` selects (all by default); with `scratch`,
        the token arrays live in memory-mapped files there."""
        path = Path(path)
        values = _Growing(np.int32, _scratch_file(scratch, f"{path.stem}.tokens"))
        lengths, kept_ids, first = [], [], 0
        for batch in iter_batches(path, schemas.TOKENS):
            ids = batch.column("id")
            tokens = batch.column("input_ids")
            if keep is not None:
                mask = pa.array(keep(ids, first))
                ids, tokens = ids.filter(mask), tokens.filter(mask)
            first += batch.num_rows
            length = pc.list_value_length(tokens).fill_null(0).to_numpy(zero_copy_only=False)
            if len(length) and length.min() == 0:
                row = int(np.argmin(length))
                raise DataError(path, f"id {ids[row].as_py()!r}", "has no tokens")
            flat = tokens.cast(pa.large_list(pa.int32())).flatten()
            values.append(flat.to_numpy(zero_copy_only=False))
            lengths.append(length.astype(np.int64))
            kept_ids.append(ids)
        ids = pa.chunked_array(kept_ids, pa.string()).combine_chunks()
        _check_ids(path, ids)
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        if lengths:
            np.cumsum(np.concatenate(lengths), out=offsets[1:])
        return cls(path, ids, values.finish(), offsets, first)

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids: pa.Array, referenced_by: str | Path) -> np.ndarray:
        """Row numbers of `ids`; a DataError names the first id this file lacks."""
        rows = pc.index_in(ids, value_set=self.ids)
        if rows.null_count:
            missing = ids.filter(pc.is_null(rows))[0].as_py()
            raise DataError(
                self.path, f"id {missing!r}", f"missing; it is referenced by {referenced_by}"
            )
        return rows.to_numpy(zero_copy_only=False).astype(np.int64)

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        return self.offsets[rows + 1] - self.offsets[rows]

    def token_ids(self, rows: Sequence[int] | np.ndarray) -> list[list[int]]:
        return [self.values[self.offsets[r] : self.offsets[r + 1]].tolist() for r in rows]


def file_ids(path: str | Path, schema: pa.Schema = schemas.TOKENS) -> Iterator[pa.Array]:
    """The id column of a parquet artifact, batch by batch (nothing else is read)."""
    yield from (b.column(0) for b in iter_batches(path, schema, columns=[schema.names[0]]))


def file_rows(path: str | Path) -> int:
    return open_parquet(path).metadata.num_rows


@dataclass(frozen=True)
class Groups:
    """Training groups with ragged positives/negatives flattened to arrays of ids."""

    path: Path
    query_ids: pa.StringArray
    positive_ids: pa.StringArray
    positive_offsets: np.ndarray
    negative_ids: pa.StringArray
    negative_offsets: np.ndarray
    file_groups: int | None = None  # groups in the file, when train_queries kept fewer

    @classmethod
    def read(cls, path: str | Path, negatives_per_query: int,
             train_queries: float = 1.0) -> Groups:
        """Read and check the groups: every query needs a positive, and negatives if n > 0;
        keep the share `train_queries` of them (train_subset).

        An empty group is an error, not a skipped example: it means the negatives stage and
        this run disagree about the data, which silently shrinking the training set would hide.
        Every group is checked, kept or not.
        """
        table = read_table(path, schemas.GROUPS)
        if table.num_rows == 0:
            raise DataError(path, None, "no training groups")
        query_ids = table.column("query_id").combine_chunks()
        positives = table.column("positives").cast(pa.large_list(pa.string())).combine_chunks()
        negatives = table.column("negatives").cast(pa.large_list(pa.string())).combine_chunks()
        _require_members(path, query_ids, positives, "positives", minimum=1)
        needed = min(1, negatives_per_query)
        _require_members(path, query_ids, negatives, "negatives", minimum=needed)
        file_groups = None
        if train_queries != 1:
            kept = pa.array(train_subset(query_ids, train_queries))
            file_groups = len(query_ids)
            query_ids, positives, negatives = (
                column.take(kept) for column in (query_ids, positives, negatives))
        return cls(
            Path(path),
            query_ids,
            positives.values,
            positives.offsets.to_numpy().astype(np.int64),
            negatives.values,
            negatives.offsets.to_numpy().astype(np.int64),
            file_groups,
        )

    def __len__(self) -> int:
        return len(self.query_ids)

    def passage_ids(self) -> pa.Array:
        """Every passage the groups name (positives and negatives), once."""
        return pc.unique(pa.concat_arrays([self.positive_ids, self.negative_ids]))

    def sample(self, index: int, epoch: int, seed: int, negatives: int) -> tuple[int, np.ndarray]:
        """Positions (into positive_ids / negative_ids) of one example's passages.

        Negatives are drawn without replacement, or with replacement where the group has fewer
        than asked.
        """
        rng = np.random.default_rng((seed, epoch, index))
        first_pos, end_pos = self.positive_offsets[index], self.positive_offsets[index + 1]
        positive = int(first_pos + rng.integers(end_pos - first_pos))
        first_neg, end_neg = self.negative_offsets[index], self.negative_offsets[index + 1]
        available = int(end_neg - first_neg)
        picked = rng.choice(available, size=negatives, replace=available < negatives)
        return positive, first_neg + picked.astype(np.int64)


def train_subset(query_ids: pa.Array, share: float) -> np.ndarray:
    """Rows (ascending) of the training groups optimisation.train_queries keeps.

    round(share x N) rows (Python's round: halves to even), at least one: those whose query
    ids come first when ranked by blake2b(TRAIN_QUERIES_KEY, id), ties by id. The subset
    depends on the ids and the share alone: the same for every method, variant and training
    seed, and whatever the order of the file; a smaller share keeps a subset of a larger one
    (the same ranking, cut earlier).
    """
    if not 0 < share <= 1:
        raise ConfigError(f"optimisation.train_queries must be in (0, 1], got {share}")
    count = len(query_ids)
    kept = max(1, round(share * count))
    if kept >= count:
        return np.arange(count, dtype=np.int64)
    ids = query_ids.to_pylist()
    ranks = np.fromiter(
        (int.from_bytes(hashlib.blake2b(str(qid).encode(), digest_size=8,
                                        key=TRAIN_QUERIES_KEY).digest(), "big") for qid in ids),
        dtype=np.uint64, count=count,
    )
    order = np.lexsort((np.array(ids, dtype=object).astype(str), ranks))
    return np.sort(order[:kept]).astype(np.int64)


def _require_members(
    path: str | Path, query_ids: pa.Array, lists: pa.LargeListArray, column: str, minimum: int
) -> None:
    # A null list is as empty as an empty one.
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)
    short = np.flatnonzero(lengths < minimum)
    if len(short):
        query = query_ids[int(short[0])].as_py()
        raise DataError(
            path,
            f"query {query!r}, column {column!r}",
            f"empty ({len(short)} group(s) in all have no {column}); every training query "
            f"needs at least {minimum}",
        )


@dataclass(frozen=True)
class ModelTokens:
    """One model's tokenization of the training queries and of the corpus."""

    queries: TokenTable
    corpus: TokenTable
    pad_id: int

    @classmethod
    def read(cls, query_tokens: Path, corpus_tokens: Path, groups: Groups, pad_id: int,
             scratch: Path | None = None) -> ModelTokens:
        """The rows of the groups' queries and passages, nothing else."""
        return cls(
            TokenTable.read(query_tokens, keep_ids(groups.query_ids), scratch),
            TokenTable.read(corpus_tokens, keep_ids(groups.passage_ids()), scratch),
            pad_id,
        )

    def batch(self, query_rows: np.ndarray, passage_rows: np.ndarray) -> EncoderInputs:
        from lead.modeling.encoders import collate

        return EncoderInputs(
            collate(self.queries.token_ids(query_rows), self.pad_id),
            collate(self.corpus.token_ids(passage_rows), self.pad_id),
        )

    def index(self, groups: Groups) -> _Rows:
        return _Rows(
            query=self.queries.rows(groups.query_ids, groups.path),
            positive=self.corpus.rows(groups.positive_ids, groups.path),
            negative=self.corpus.rows(groups.negative_ids, groups.path),
        )


@dataclass(frozen=True)
class EncoderInputs:
    """A micro-batch for one model: B queries and their B*(1+n) passages, group by group.

    Token batches ({"input_ids", "attention_mask"}) for a model that runs, or (N, L, d)
    per-layer vectors read from a teacher's layer cache."""

    queries: dict[str, torch.Tensor] | torch.Tensor
    passages: dict[str, torch.Tensor] | torch.Tensor

    def to(self, device: torch.device) -> EncoderInputs:
        def move(value):
            if isinstance(value, torch.Tensor):
                return value.to(device, non_blocking=True)
            return {k: v.to(device, non_blocking=True) for k, v in value.items()}

        return EncoderInputs(move(self.queries), move(self.passages))


@dataclass(frozen=True)
class _Rows:
    """The groups resolved to one model's rows."""

    query: np.ndarray
    positive: np.ndarray
    negative: np.ndarray


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


class TrainingData:
    """This process's micro-batches, addressed by a global micro-batch counter.

    Micro-batch c is batch c % batches_per_epoch of epoch c // batches_per_epoch of this rank's
    DistributedSampler order, so the position of a run is a plain integer: resuming needs no
    iterator state, and every rank's batch has the same size (the tail of an epoch is dropped).
    `models` maps a name to its ModelTokens, or to a TeacherCache
    for a teacher read from its layer cache.
    """

    def __init__(
        self,
        groups: Groups,
        models: dict,
        *,
        batch_size: int,
        negatives_per_query: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.groups = groups
        self.models = models
        self.batch_size = batch_size
        self.negatives = negatives_per_query
        self.seed = seed
        self.rows = {name: source.index(groups) for name, source in models.items()}
        self.sampler = DistributedSampler(
            range(len(groups)), num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
            drop_last=True,
        )
        self.batches_per_epoch = len(self.sampler) // batch_size
        if self.batches_per_epoch == 0:
            kept = ("" if groups.file_groups is None else
                    f" kept of its {groups.file_groups} (optimisation.train_queries)")
            raise ConfigError(
                f"{groups.path} has {len(groups)} training groups{kept}, fewer than one global "
                f"batch ({batch_size} queries x {world_size} processes)"
            )
        self._order: tuple[int, np.ndarray] | None = None

    @property
    def group_size(self) -> int:
        return 1 + self.negatives

    def position(self, counter: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of global micro-batch `counter`."""
        return divmod(counter, self.batches_per_epoch)

    def examples(self, counter: int) -> list[tuple[int, int, np.ndarray]]:
        """(group index, positive position, negative positions) of each query of a micro-batch."""
        epoch, batch = self.position(counter)
        order = self._epoch_order(epoch)
        indices = order[batch * self.batch_size : (batch + 1) * self.batch_size]
        return [
            (int(i), *self.groups.sample(int(i), epoch, self.seed, self.negatives))
            for i in indices
        ]

    def micro_batch(self, counter: int) -> dict[str, EncoderInputs]:
        """Micro-batch `counter` for every model (positive of query j at j*(1+n))."""
        examples = self.examples(counter)
        batches = {}
        for name, source in self.models.items():
            rows = self.rows[name]
            query_rows = np.array([rows.query[group] for group, _, _ in examples])
            passage_rows = np.array([
                row
                for _, positive, negatives in examples
                for row in (rows.positive[positive], *rows.negative[negatives])
            ])
            batches[name] = source.batch(query_rows, passage_rows)
        return batches

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            self.sampler.set_epoch(epoch)
            self._order = (epoch, np.fromiter(iter(self.sampler), dtype=np.int64))
        return self._order[1]
