"""Where a model comes from and how it scores (lead.modeling.spec): packages, hub cache."""

from __future__ import annotations

import pytest
from tiny_models import RANDOM

from lead.errors import ConfigError
from lead.modeling.encoders import load_encoder
from lead.modeling.init import init_model
from lead.modeling.spec import source_dir


def test_packaged_minilm_is_found_through_its_python_package():
    directory = source_dir("package:minilm")
    assert (directory / "config.json").is_file() and directory.name == "model"
    with pytest.raises(ConfigError, match=r"package:bert.*known: package:minilm"):
        source_dir("package:bert")


def test_packaged_minilm_is_a_cosine_model_with_mean_pooling():
    from lead.modeling.spec import resolve_model_settings

    resolved = resolve_model_settings({"init": "package:minilm"})
    assert (resolved["similarity"], resolved["pooling"], resolved["scale"]) == (
        "cosine", "mean", 20.0)
    # a ColBERT teacher from the same folder scores as released: no cosine, no scale
    colbert = resolve_model_settings({"init": "package:minilm", "kind": "colbert"})
    assert (colbert["similarity"], colbert["scale"]) == ("dot", 1.0)
    plain = resolve_model_settings(RANDOM)  # the release's models: dot product, CLS
    assert (plain["similarity"], plain["pooling"], plain["scale"]) == ("dot", "cls", 1.0)


def test_a_hub_id_resolves_from_the_local_cache_and_an_uncached_one_is_a_clear_error(
    tokenizer, tmp_path, monkeypatch
):
    """A hub cache laid out as huggingface_hub writes it (refs/main -> a snapshot folder)."""
    cache = tmp_path / "hub"
    repo = cache / "models--lead-test--tiny"
    snapshot = repo / "snapshots" / ("0" * 40)
    init_model({**RANDOM, "pooling": "mean"}, snapshot, tokenizer_dir=tokenizer)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert source_dir("lead-test/tiny") == snapshot
    model = load_encoder(init_model({"init": "lead-test/tiny"}, tmp_path / "from-hub"))
    assert model.spec.pooling == "mean"  # its lead.json, inherited
    with pytest.raises(ConfigError, match=r"'lead-test/absent'.*Hugging Face cache.*hf download"):
        source_dir("lead-test/absent")
