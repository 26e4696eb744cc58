"""A private copy of the workflow, for tests that run Snakemake on the tiny config.

The copy carries the package files the rules declare as inputs, so a test may edit them
without touching the checkout.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from repo import REPO, TINY_CONFIG, TINY_DATA

from lead.config import merge


def copy_workflow(dest: Path, config_name: str = "tiny.yaml", **changes: Any) -> Path:
    """Copy the workflow into `dest`, with the tiny config (plus `changes`) as `config_name`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "profiles", "config", "lead"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / name)
    shutil.copytree(TINY_DATA, dest / "tests" / "fixtures" / "tiny")
    config = merge(yaml.safe_load(TINY_CONFIG.read_text()), changes)
    (dest / config_name).write_text(yaml.safe_dump(config))
    return dest
