"""`evaluate-model` (lead.evaluation.evaluate_model) refuses a hostile split name."""

from __future__ import annotations

import pytest
from hostile import HOSTILE_NAMES, refused
from repo import TINY_DATA as TINY

# Hostile input: each refusal is one line naming the culprit, and changes no file (hostile.py).


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_evaluate_model_refuses_a_hostile_split_name(capsys, work, roots, artifacts, name):
    refused(capsys, roots, "evaluate-model", "--model", artifacts / "model",
            "--corpus", TINY / "collection.tsv", "--queries", TINY / "queries.test.tsv",
            "--qrels", TINY / "qrels.test.tsv", "--split", name, "--out", work / "scored",
            expect=(repr(name),))
