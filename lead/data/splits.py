"""From raw queries and judgments to the splits every later stage reads.

Each split keeps only judgments whose query and document exist (a judgment of an unknown id
is an error when strict) and only queries that have a judgment (an unjudged query can
neither be trained on nor scored). Checkpoint selection needs a `dev` split that is never
reported: when a source has none, it is drawn from the training queries with a seeded
generator, and training excludes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lead import schemas
from lead.data.checks import Checks
from lead.data.corpus import ids_like, known_ids
from lead.data.text import codepoints, lookalike
from lead.errors import ConfigError, DataError
from lead.io import write_table
from lead.paths import check_name, child

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """One split's queries and judgments (with source line numbers) and where they came from."""

    name: str
    queries: pa.Table
    qrels: pa.Table
    queries_path: Path
    qrels_path: Path

    def restricted(self, query_ids: pa.Array, name: str | None = None, keep: bool = True) -> Split:
        """The split limited to (or, keep=False, without) the given queries."""

        def select(table: pa.Table) -> pa.Table:
            inside = pc.is_in(table["query_id"], value_set=query_ids)
            return table.filter(inside if keep else pc.invert(inside))

        return replace(self, name=name or self.name, queries=select(self.queries),
                       qrels=select(self.qrels))


def hold_out_dev(train: Split, count: int, seed: int) -> tuple[Split, Split]:
    """Draw `count` training queries (seeded, from the sorted ids) as the dev split."""
    ids = pc.unique(train.queries["query_id"]).sort()
    if count >= len(ids):
        raise ConfigError(
            f"dataset.dev_queries is {count}, but the training split has only {len(ids)} "
            "judged queries: lower it so that some remain for training"
        )
    chosen = np.sort(np.random.default_rng(seed).choice(len(ids), size=count, replace=False))
    dev_ids = ids.take(pa.array(chosen))
    return train.restricted(dev_ids, keep=False), train.restricted(dev_ids, name="dev")


def _drop_judgments(
    split: Split, unknown: pa.Array, checks: Checks, kind: str, message: Callable[[dict], str]
) -> Split:
    """Remove the judgments flagged in `unknown` (a boolean column), as `checks` allows."""
    rows = pc.indices_nonzero(unknown)
    if not len(rows):
        return split
    first = split.qrels.slice(rows[0].as_py(), 1).to_pylist()[0]
    checks.problem(kind, split.qrels_path, first["line"], message(first), count=len(rows))
    return replace(split, qrels=split.qrels.filter(pc.invert(unknown)))


def clean(split: Split, known_documents: pa.Array, corpus_source: Path, checks: Checks,
          corpus_path: Path | None = None) -> Split:
    """Drop (or, strict, refuse) judgments of unknown ids; keep only judged queries. An
    unknown document is looked for in `corpus_path` in another Unicode normalisation."""
    split = _drop_judgments(
        split,
        pc.invert(pc.is_in(split.qrels["query_id"], value_set=split.queries["query_id"])),
        checks,
        "drop judgments of unknown queries",
        lambda row: _unknown("query", row["query_id"], split.queries["query_id"],
                             str(split.queries_path)),
    )
    split = _drop_judgments(
        split,
        pc.invert(pc.is_in(split.qrels["doc_id"], value_set=known_documents)),
        checks,
        "drop judgments of unknown documents",
        lambda row: _unknown("document", row["doc_id"], known_documents if corpus_path is None
                             else ids_like(corpus_path, row["doc_id"]),
                             f"the corpus ({corpus_source})"),
    )
    if not split.qrels.num_rows:
        raise DataError(split.qrels_path, None, f"no usable judgments for split {split.name!r}")
    judged = split.restricted(pc.unique(split.qrels["query_id"]))
    unjudged = split.queries.num_rows - judged.queries.num_rows
    if unjudged:
        log.info("split %s: %d queries of %s have no judgment and are left out",
                 split.name, unjudged, split.queries_path)
    return judged


def _unknown(what: str, value: str, known: pa.Array, where: str) -> str:
    """Why a judgment's id is unknown, showing an id that only looks the same."""
    message = f"{what} {value!r} is not in {where}"
    twin = lookalike(value, known)
    if twin is not None:
        message += (f"; it has {twin!r}, the same text in another Unicode normalisation "
                    f"({codepoints(value)} here, {codepoints(twin)} there): normalise both files")
    return message


def refuse_leakage(splits: Mapping[str, Split]) -> None:
    """Refuse an evaluation split that shares its judgments file or a query with `train`.

    A score on queries the model was trained on measures memory, not retrieval. (The `dev`
    split held out from the training queries is drawn after this check, and taken out of
    training.)
    """
    train = splits.get("train")
    if train is None:
        return
    for name, split in splits.items():
        if name == "train":
            continue
        if split.qrels_path.resolve() == train.qrels_path.resolve():
            raise ConfigError(
                f"splits 'train' and {name!r} are built from the same judgments file "
                f"{train.qrels_path}: evaluating on training queries is leakage"
            )
        shared = pc.is_in(split.qrels["query_id"], value_set=train.qrels["query_id"])
        rows = pc.indices_nonzero(shared)
        if len(rows):
            first = split.qrels.slice(rows[0].as_py(), 1).to_pylist()[0]
            count = len(pc.unique(split.qrels["query_id"].filter(shared)))
            raise DataError(
                split.qrels_path, first["line"],
                f"query {first['query_id']!r} of split {name!r} is also judged in the training "
                f"split ({train.qrels_path}); {count} queries are shared: evaluating on "
                "training queries is leakage",
            )


def write_splits(
    splits: list[Split],
    out_dir: Path,
    *,
    corpus_path: Path,
    corpus_source: Path,
    checks: Checks,
    settings: Mapping[str, Any],
    prov: Mapping[str, Any],
) -> dict[str, int]:
    """Clean every split, hold out `dev` if needed, write queries/ and qrels/ sorted by id.

    Returns the number of queries of each split written.
    """
    names = [split.name for split in splits]
    wanted = pc.unique(pa.chunked_array([s.qrels["doc_id"] for s in splits], pa.string()))
    known = known_ids(corpus_path, wanted)
    cleaned = {split.name: clean(split, known, corpus_source, checks, corpus_path)
               for split in splits}
    refuse_leakage(cleaned)
    if "train" in cleaned and "dev" not in cleaned:
        cleaned["train"], cleaned["dev"] = hold_out_dev(
            cleaned["train"], settings["dev_queries"], settings["seed"]
        )
        names.append("dev")
    counts = {}
    for name in names:
        split = cleaned[name]
        queries = split.queries.sort_by("query_id").select(schemas.QUERIES.names)
        qrels = split.qrels.sort_by([("query_id", "ascending"), ("doc_id", "ascending")])
        file_name = f"{check_name(name, 'split name')}.parquet"
        write_table(queries.cast(schemas.QUERIES), child(out_dir, "queries", file_name), prov)
        write_table(
            qrels.select(schemas.QRELS.names).cast(schemas.QRELS),
            child(out_dir, "qrels", file_name),
            prov,
        )
        counts[name] = queries.num_rows
        log.info("split %s: %d queries, %d judgments", name, queries.num_rows, qrels.num_rows)
    return counts
