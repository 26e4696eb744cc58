"""Fixtures of the evaluation tests."""

from pathlib import Path

import pytest


@pytest.fixture
def qrels_1_2(work) -> Path:
    """TREC qrels judging queries '1' and '2' (integer-looking ids)."""
    path = work / "qrels.txt"
    path.write_text("1 0 d1 1\n2 0 d2 1\n")
    return path
