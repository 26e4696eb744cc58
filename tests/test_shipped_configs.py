"""The shipped configs (config/*.yaml): every one validates and plans, and the reproduction
configs resolve to the release's values that docs/method.md documents key by key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lead.config import layered
from lead.plan import build

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"
SECTION = "### The release's values, key by key"


def documented_tables() -> list[dict[str, Any]]:
    """The tables of the section, in order: each maps a config key to its YAML value."""
    text = METHOD.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start)
    tables: list[dict[str, Any]] = []
    rows: dict[str, Any] | None = None
    for line in text[start:end].splitlines():
        match = re.fullmatch(r"\| `([^`]+)` \| `([^`]+)` \| .* \|", line)
        if match:
            if rows is None:
                rows = {}
                tables.append(rows)
            rows[match[1]] = yaml.safe_load(match[2])
        elif not line.startswith("|"):
            rows = None
    return tables


def value(config: dict, key: str) -> Any:
    for part in key.split("."):
        config = config[part]
    return config


def test_the_documentation_has_the_three_tables():
    common, passage, document = documented_tables()
    assert common["teacher.colbert_dim"] is None  # the release has no ColBERT projection
    assert set(document) <= set(passage)  # the document task only overrides passage values


@pytest.mark.parametrize(("config", "tables"), [
    ("msmarco-passage.yaml", (0, 1)), ("msmarco-document.yaml", (0, 2)),
])
def test_the_reproduction_configs_have_the_release_values(config, tables):
    _, resolved = layered([ROOT / "config" / config], [])
    documented = documented_tables()
    expected = {key: v for number in tables for key, v in documented[number].items()}
    found = {key: value(resolved, key) for key in expected}
    wrong = {key: (found[key], want) for key, want in expected.items() if found[key] != want}
    assert not wrong, f"config/{config} differs from docs/method.md: {wrong}"


@pytest.mark.parametrize("config", sorted(str(p.relative_to(ROOT / "config"))
                                          for p in (ROOT / "config").rglob("*.yaml")))
def test_every_shipped_config_validates_and_plans_on_its_own(config):
    """A config layered on another says so (`extends`), so it runs on its own."""
    raw, resolved = layered([ROOT / "config" / config], [])
    assert build(resolved, raw=raw).collections


def test_the_rehearsals_random_student_tells_passages_apart(tmp_path):
    """A random model that pools [CLS] gives many passages the same score (half of 1,000 at
    MS MARCO's size), and the exact search then breaks ties against the whole shard: the
    rehearsal's searches would cost several times a trained model's. Its student pools by mean."""
    import torch

    from lead.modeling.encoders import collate, load_encoder
    from lead.modeling.init import init_model

    _, resolved = layered([ROOT / "config" / "rehearsal.yaml"], [])
    encoder = load_encoder(init_model(resolved["student"], tmp_path / "student")).eval()
    lines = (ROOT / "tests" / "fixtures" / "tiny" / "collection.tsv").read_text().splitlines()
    queries = (ROOT / "tests" / "fixtures" / "tiny" / "queries.dev.tsv").read_text().splitlines()

    def encode(lines: list[str], encode_batch) -> torch.Tensor:
        texts = [line.split("\t")[1] for line in lines]
        ids = encoder.tokenizer(texts, truncation=True, max_length=64)["input_ids"]
        with torch.no_grad():
            return encode_batch(collate(ids, encoder.tokenizer.pad_token_id)).final

    scores = encoder.compute_similarity(encode(queries, encoder.encode_query),
                                        encode(lines, encoder.encode_passage))
    distinct = min(len(torch.unique(row)) for row in scores) / len(lines)
    assert distinct >= 0.99, f"{distinct:.0%} of the passages' scores are distinct"
