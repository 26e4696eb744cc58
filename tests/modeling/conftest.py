"""Fixtures of the modeling tests."""

import pytest


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A WordPiece tokenizer of 100 tokens (test_encoders.py has its own, of the default 120)."""
    from tiny_models import make_tokenizer

    return make_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer", vocab_size=100)
