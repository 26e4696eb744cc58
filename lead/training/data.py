"""Training examples: one query, one positive and n sampled negatives, in every model's tokens.

The groups file names passages by id; teacher and student each read their OWN tokenized
parquet (they may have different tokenizers), and the same ids index both. Tokens are held as
flat numpy arrays (a few bytes per token, no Python object per passage), so an MS MARCO-sized
corpus fits in memory. Sampling is a pure function of (seed, epoch, example index): any process,
and a resumed run, draws the same passages for the same example.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DistributedSampler

from lead import schemas
from lead.errors import ConfigError, DataError
from lead.io import read_table


@dataclass(frozen=True)
class TokenTable:
    """One TOKENS parquet: ids and their token ids as flat arrays."""

    path: Path
    ids: pa.StringArray
    values: np.ndarray  # int32, every row's tokens back to back
    offsets: np.ndarray  # int64, row i is values[offsets[i]:offsets[i + 1]]

    @classmethod
    def read(cls, path: str | Path) -> TokenTable:
        table = read_table(path, schemas.TOKENS)
        ids = table.column("id").combine_chunks()
        if ids.null_count:
            raise DataError(path, "column 'id'", "has null ids")
        if pc.count_distinct(ids).as_py() != len(ids):
            counts = pc.value_counts(ids)
            duplicate = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"]
            raise DataError(path, f"id {duplicate.as_py()!r}", "appears more than once")
        # large_list: a big corpus can hold more than 2**31 tokens in all.
        tokens = table.column("input_ids").cast(pa.large_list(pa.int32())).combine_chunks()
        lengths = pc.list_value_length(tokens).fill_null(0).to_numpy(zero_copy_only=False)
        if len(lengths) and lengths.min() == 0:
            row = int(np.argmin(lengths))
            raise DataError(path, f"id {ids[row].as_py()!r}", "has no tokens")
        offsets = tokens.offsets.to_numpy().astype(np.int64)
        values = tokens.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        return cls(Path(path), ids, values, offsets)

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

    def token_ids(self, rows: Sequence[int] | np.ndarray) -> list[list[int]]:
        return [self.values[self.offsets[r] : self.offsets[r + 1]].tolist() for r in rows]


@dataclass(frozen=True)
class Groups:
    """Training groups with ragged positives/negatives flattened to arrays of ids."""

    path: Path
    query_ids: pa.StringArray
    positive_ids: pa.StringArray
    positive_offsets: np.ndarray
    negative_ids: pa.StringArray
    negative_offsets: np.ndarray

    @classmethod
    def read(cls, path: str | Path, negatives_per_query: int) -> Groups:
        """Read and check the groups: every query needs a positive, and negatives if n > 0.

        An empty group is an error, not a skipped example: it means the negatives stage and
        this run disagree about the data, which silently shrinking the training set would hide.
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
        return cls(
            Path(path),
            query_ids,
            positives.values,
            positives.offsets.to_numpy().astype(np.int64),
            negatives.values,
            negatives.offsets.to_numpy().astype(np.int64),
        )

    def __len__(self) -> int:
        return len(self.query_ids)

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


@dataclass(frozen=True)
class EncoderInputs:
    """A micro-batch for one model: B queries and their B*(1+n) passages, group by group."""

    queries: dict[str, torch.Tensor]
    passages: dict[str, torch.Tensor]

    def to(self, device: torch.device) -> EncoderInputs:
        return EncoderInputs(
            {k: v.to(device, non_blocking=True) for k, v in self.queries.items()},
            {k: v.to(device, non_blocking=True) for k, v in self.passages.items()},
        )


@dataclass(frozen=True)
class _Rows:
    """The groups resolved to one model's token rows."""

    query: np.ndarray
    positive: np.ndarray
    negative: np.ndarray


class TrainingData:
    """This process's micro-batches, addressed by a global micro-batch counter.

    Micro-batch c is batch c % batches_per_epoch of epoch c // batches_per_epoch of this rank's
    DistributedSampler order, so the position of a run is a plain integer: resuming needs no
    iterator state, and every rank's batch has the same size (the tail of an epoch is dropped).
    """

    def __init__(
        self,
        groups: Groups,
        models: dict[str, ModelTokens],
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
        self.rows = {name: _resolve(groups, tokens) for name, tokens in models.items()}
        self.sampler = DistributedSampler(
            range(len(groups)), num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
            drop_last=True,
        )
        self.batches_per_epoch = len(self.sampler) // batch_size
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"{groups.path} has {len(groups)} training groups, fewer than one global batch "
                f"({batch_size} queries x {world_size} processes)"
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
        """Micro-batch `counter` in every model's tokens (positive of query j at j*(1+n))."""
        from lead.modeling import collate

        examples = self.examples(counter)
        batches = {}
        for name, tokens in self.models.items():
            rows = self.rows[name]
            query_rows = [rows.query[group] for group, _, _ in examples]
            passage_rows = [
                row
                for _, positive, negatives in examples
                for row in (rows.positive[positive], *rows.negative[negatives])
            ]
            batches[name] = EncoderInputs(
                collate(tokens.queries.token_ids(query_rows), tokens.pad_id),
                collate(tokens.corpus.token_ids(passage_rows), tokens.pad_id),
            )
        return batches

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            self.sampler.set_epoch(epoch)
            self._order = (epoch, np.fromiter(iter(self.sampler), dtype=np.int64))
        return self._order[1]


def _resolve(groups: Groups, tokens: ModelTokens) -> _Rows:
    return _Rows(
        query=tokens.queries.rows(groups.query_ids, groups.path),
        positive=tokens.corpus.rows(groups.positive_ids, groups.path),
        negative=tokens.corpus.rows(groups.negative_ids, groups.path),
    )
