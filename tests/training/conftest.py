"""Fixtures of the training tests; the synthetic `world` itself is in tests/conftest.py."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def lead_run(world, tmp_path_factory) -> Path:
    """An uninterrupted `distill --method lead` run through the CLI."""
    from training_world import distill_argv

    from lead.__main__ import main

    out = tmp_path_factory.mktemp("lead-run")
    assert main(distill_argv(world, out)) == 0
    return out
