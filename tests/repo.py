"""Where the repository and the test data are, for the tests of every folder."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
FIXTURES = TESTS / "fixtures"  # data/: small files of every source; tiny/: the tiny collection
TINY_DATA = FIXTURES / "tiny"
TINY_CONFIG = TESTS / "configs" / "tiny.yaml"  # the end-to-end config
