"""The plan's checks (lead.plan) via `check-config`: what would fail hours into a run."""

from __future__ import annotations

import pytest
from hostile import FAILS_LATER, check_config, error_line, tiny

# Hostile input: each refusal is one line naming the culprit, and changes no file (hostile.py).


@pytest.mark.parametrize("case", FAILS_LATER)
def test_check_config_refuses_what_would_fail_hours_later(capsys, here, case):
    config, key = FAILS_LATER[case]
    status, err = check_config(capsys, config, here)
    assert key in error_line("check-config", status, err)


def test_check_config_accepts_the_shell_words_it_quotes(capsys, here):
    """The control: a triples file whose name holds shell syntax is a valid config (the
    workflow quotes it; test_a_hostile_given_path_runs_no_command proves it)."""
    status, err = check_config(capsys, tiny(negatives={"source": "given",
                                                       "given_path": "t $(touch MARKER) `x`"}),
                               here)
    assert status == 0, err


# Configs that passed check-config and failed at the end, or ran something else than they say.

_MAIN = tiny()["dataset"]
_LOCAL = _MAIN["local"]


def _collection(**changes) -> dict:
    return {"evaluate": {"collections": {"other": {**_MAIN, "eval_splits": ["test"], **changes}}}}


PASSED_THEN_FAILED = {
    "a random model 48 x 8192": (
        tiny(student={"architecture": {"num_hidden_layers": 48, "hidden_size": 8192}}),
        "config key student.architecture.hidden_size: 8192 is greater than the maximum of 4096"),
    "a random model of ten billion parameters": (
        tiny(teacher={"architecture": {"num_hidden_layers": 48, "hidden_size": 4096,
                                       "num_attention_heads": 2, "intermediate_size": 16384}}),
        "config key teacher.architecture: 48 blocks of 4096 (feed-forward 16384) are about 9.7 "
        "billion parameters"),
    "passages longer than the model's positions": (
        tiny(student={"init": "package:bert-tiny", "tokenizer": {"train": False},
                      "passage_max_length": 1024}),
        "config key student.passage_max_length: 1024 tokens, but package:bert-tiny takes at "
        "most 512"),
    "queries longer than the model's positions": (
        tiny(teacher={"init": "package:bert-tiny", "tokenizer": {"train": False},
                      "query_max_length": 513}),
        "config key teacher.query_max_length: 513 tokens, but package:bert-tiny takes at most "
        "512"),
}

SILENTLY_WRONG = {
    "a misspelt split under relevance_level": (
        tiny(dataset={"relevance_level": {"tset": 2}}),
        "config key dataset.relevance_level: ['tset'] is no split of this collection"),
    "a misspelt split under a collection's relevance_level": (
        tiny(**_collection(relevance_level={"tset": 2})),
        "config key evaluate.collections.other.relevance_level: ['tset'] is no split"),
    "a collection scoring the training queries' files": (
        tiny(**_collection(local={**_LOCAL, "queries": {"test": _LOCAL["queries"]["train"]},
                                  "qrels": {"test": _LOCAL["qrels"]["train"]}})),
        "config key evaluate.collections.other.eval_splits: split 'test' reads "),
    "a collection scoring the training split": (
        tiny(**_collection(eval_splits=["train"])),
        "config key evaluate.collections.other.eval_splits: split 'train' reads "),
    "a collection scoring the same source's dev split": (
        tiny(dataset={"source": "embedded", "eval_splits": ["test"]},
             **_collection(source="embedded", eval_splits=["dev"])),
        "config key evaluate.collections.other.eval_splits: ['dev'] of embedded are the "
        "training data"),
    "scoring the dev split the students are selected on": (
        tiny(dataset={"eval_splits": ["test", "dev"]}),
        "config key dataset.eval_splits: ['dev'] would score the queries the students train on "
        "or are selected on"),
    "a variant's own optimisation.seed": (
        tiny(distillation={"variants": {"slow": {"optimisation": {"seed": 3,
                                                                  "learning_rate": 1e-4}}}}),
        "config key distillation.variants.slow.optimisation.seed: a variant trains once per "
        "seed of distillation.seeds"),
}


@pytest.mark.parametrize("case", [*PASSED_THEN_FAILED, *SILENTLY_WRONG])
def test_check_config_refuses_what_used_to_pass(capsys, here, case):
    config, expect = {**PASSED_THEN_FAILED, **SILENTLY_WRONG}[case]
    status, err = check_config(capsys, config, here)
    assert expect in error_line("check-config", status, err)


@pytest.mark.parametrize("config", [
    tiny(dataset={"relevance_level": {"test": 2, "dev": 1}}),
    tiny(**_collection(relevance_level={"test": 2})),
    tiny(student={"init": "package:bert-tiny", "tokenizer": {"train": False},
                  "passage_max_length": 512}),
    tiny(distillation={"variants": {"slow": {"optimisation": {"learning_rate": 1e-4}}}}),
], ids=["levels of real splits", "a collection's level", "512 tokens", "a variant's rate"])
def test_check_config_accepts_the_controls(capsys, here, config):
    status, err = check_config(capsys, config, here)
    assert status == 0, err
