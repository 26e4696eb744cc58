"""Training examples (lead.training.data): batches, ranks, negatives, bad groups."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from training_world import training_data

from lead import schemas
from lead.errors import ConfigError, DataError
from lead.io import write_table
from lead.modeling.encoders import load_encoder
from lead.training.data import Groups, ModelTokens, TrainingData, train_subset


def test_batches_hold_each_query_positive_first_then_its_negatives_in_both_tokenizations(world):
    data = training_data(world)
    groups = pq.read_table(world["groups"]).to_pylist()
    student, teacher = data.models["student"], data.models["teacher"]
    examples = data.examples(0)
    passage_ids = [data.groups.positive_ids[p].as_py() for _, p, _ in examples]
    for (group, positive, negatives), expected in zip(examples, passage_ids, strict=True):
        assert data.groups.positive_ids[positive].as_py() in groups[group]["positives"]
        assert expected in groups[group]["positives"]
        assert {data.groups.negative_ids[n].as_py() for n in negatives} <= set(
            groups[group]["negatives"])
        assert len(set(negatives.tolist())) == 3  # enough negatives: drawn without replacement
    batch = data.micro_batch(0)
    for name, tokens in (("student", student), ("teacher", teacher)):
        ids = batch[name].passages["input_ids"]
        assert ids.shape[0] == 4 * (1 + 3)
        for j, doc_id in enumerate(passage_ids):
            row = tokens.corpus.rows(pa.array([doc_id]), "test")[0]
            expected = tokens.corpus.token_ids([row])[0]
            assert ids[j * 4, : len(expected)].tolist() == expected  # positive at column j*(1+n)
    # Same seed and counter -> same batch; another epoch -> another order.
    again = training_data(world).micro_batch(0)
    same = again["student"].passages["input_ids"]
    assert torch.equal(same, batch["student"].passages["input_ids"])
    epoch_two = data.examples(data.batches_per_epoch)
    assert [g for g, _, _ in epoch_two] != [g for g, _, _ in examples]


def test_two_ranks_split_one_global_batch_between_them(world):
    single = training_data(world, batch_size=4)
    ranks = [training_data(world, batch_size=2, rank=r, world_size=2) for r in range(2)]
    whole = sorted(g for g, _, _ in single.examples(0))
    assert sorted(g for r in ranks for g, _, _ in r.examples(0)) == whole


def test_negatives_are_drawn_with_replacement_when_a_group_has_too_few(world, tmp_path):
    groups = pq.read_table(world["groups"]).to_pylist()
    for group in groups:
        group["negatives"] = group["negatives"][:2]
    path = tmp_path / "groups.parquet"
    write_table(pa.Table.from_pylist(groups, schemas.GROUPS), path)
    data = training_data(world, negatives=5, groups=path)
    assert all(len(negatives) == 5 for _, _, negatives in data.examples(0))


def test_an_empty_group_is_an_error_naming_the_query_and_the_file(world, tmp_path):
    groups = pq.read_table(world["groups"]).to_pylist()
    groups[3]["negatives"] = []
    path = tmp_path / "groups.parquet"
    write_table(pa.Table.from_pylist(groups, schemas.GROUPS), path)
    with pytest.raises(DataError, match=r"groups\.parquet.*'q3'.*negatives"):
        Groups.read(path, negatives_per_query=3)
    assert len(Groups.read(path, negatives_per_query=0)) == 48  # no negatives needed
    groups[3]["positives"] = []
    write_table(pa.Table.from_pylist(groups, schemas.GROUPS), path)
    with pytest.raises(DataError, match=r"'q3'.*positives"):
        Groups.read(path, negatives_per_query=0)


def test_a_passage_missing_from_a_models_tokens_names_the_file_and_id(world, tmp_path):
    groups = pq.read_table(world["groups"]).to_pylist()
    groups[0]["negatives"][0] = "nowhere"
    path = tmp_path / "groups.parquet"
    write_table(pa.Table.from_pylist(groups, schemas.GROUPS), path)
    with pytest.raises(DataError, match=r"teacher-corpus-tokens\.parquet.*'nowhere'"):
        training_data(world, groups=path)


def _epoch_queries(world, groups_path, share, seed, roles) -> set[str]:
    """The queries one epoch of a run trains on, read as the training loop reads them."""
    groups = Groups.read(groups_path, 3, share)
    sources = {role: ModelTokens.read(world[f"{role}_train_queries_tokens"],
                                      world[f"{role}_corpus_tokens"], groups,
                                      load_encoder(world[role]).pad_id)
               for role in roles}
    data = TrainingData(groups, sources, batch_size=4, negatives_per_query=3, seed=seed)
    return {groups.query_ids[index].as_py() for counter in range(data.batches_per_epoch)
            for index, _, _ in data.examples(counter)}


def test_train_queries_keeps_a_fixed_share_of_the_groups_for_every_seed_and_method(
    world, tmp_path
):
    rows = pq.read_table(world["groups"]).to_pylist()  # 48 groups
    quarter = Groups.read(world["groups"], 3, train_queries=0.25)
    assert (len(quarter), quarter.file_groups) == (12, 48)
    kept = quarter.query_ids.to_pylist()
    by_query = {row["query_id"]: row for row in rows}
    for index, query in enumerate(kept):  # each kept query keeps its own group
        start, end = quarter.positive_offsets[index : index + 2]
        assert quarter.positive_ids[start:end].to_pylist() == by_query[query]["positives"]
        start, end = quarter.negative_offsets[index : index + 2]
        assert quarter.negative_ids[start:end].to_pylist() == by_query[query]["negatives"]
    # every training seed, and every method (the student's tokens alone for none, a teacher's
    # too for the methods that distil), trains on exactly these queries
    for seed in (1, 5, 888):
        for roles in (("student",), ("student", "teacher")):
            assert _epoch_queries(world, world["groups"], 0.25, seed, roles) == set(kept)
    # the file's order changes nothing; a smaller share keeps a subset of a larger one
    shuffled = tmp_path / "groups.parquet"
    write_table(pa.Table.from_pylist(rows[::-1], schemas.GROUPS), shuffled)
    assert set(Groups.read(shuffled, 3, 0.25).query_ids.to_pylist()) == set(kept)
    tenth = Groups.read(world["groups"], 3, 0.1).query_ids.to_pylist()
    assert len(tenth) == 5 and set(tenth) < set(kept)  # round(4.8) = 5
    # the whole set by default; at least one group
    assert len(Groups.read(world["groups"], 3)) == 48
    assert Groups.read(world["groups"], 3).file_groups is None
    assert len(Groups.read(world["groups"], 3, 0.001)) == 1


def test_train_queries_out_of_range_or_too_few_for_a_batch_is_refused(world):
    from lead.config import resolve

    assert resolve("distillation", {})["optimisation"]["train_queries"] == 1.0  # all of them
    for share in (0, 1.2):
        with pytest.raises(ConfigError, match=r"optimisation\.train_queries: "):
            resolve("distillation", {"optimisation": {"train_queries": share}})
    for share in (0.0, -0.5, 1.5):
        with pytest.raises(ConfigError, match="train_queries must be in"):
            train_subset(pa.array(["q1", "q2"]), share)
    with pytest.raises(ConfigError, match=r"has 2 training groups kept of its 48 \(optimisation"
                                          r"\.train_queries\), fewer than one global batch"):
        _epoch_queries(world, world["groups"], 0.04, 1, ("student",))
