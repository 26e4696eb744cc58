"""Where a model comes from and how it scores (lead.modeling.spec): packages, hub cache, and
sentence-transformers and Hugging Face folders scored as sentence-transformers scores them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from tiny_models import RANDOM

from lead.errors import ConfigError
from lead.modeling.encoders import load_encoder
from lead.modeling.init import init_model
from lead.modeling.spec import resolve_model_settings, scoring_of, source_dir


def test_packaged_minilm_is_found_through_its_python_package():
    directory = source_dir("package:minilm")
    assert (directory / "config.json").is_file() and directory.name == "model"
    with pytest.raises(ConfigError, match=r"package:bert.*known: package:minilm"):
        source_dir("package:bert")


def test_packaged_minilm_is_a_cosine_model_with_mean_pooling():
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


def _sentence_transformers_folder(tokenizer, root: Path, prompts: dict[str, str],
                                  extra=None, include_prompt: bool = True) -> Path:
    """A folder saved by sentence-transformers itself: a tiny random BERT (16 wide), mean
    pooling, a Tanh Dense module 16 -> 12, then `extra` (a module) or Normalize."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st

    backbone = root / "backbone"
    if not backbone.exists():
        init_model(RANDOM, backbone, tokenizer_dir=tokenizer, seed=4)
    transformer = st.Transformer(str(backbone))
    modules = [transformer, st.Pooling(16, "mean", include_prompt=include_prompt),
               st.Dense(16, 12, activation_function=torch.nn.Tanh()),
               extra if extra is not None else st.Normalize()]
    folder = root / f"st-{len(list(root.glob('st-*')))}"
    SentenceTransformer(modules=modules, device="cpu", prompts=prompts).save(str(folder))
    return folder


def test_a_sentence_transformers_folder_gives_its_pooling_dense_layers_prompts_and_similarity(
    tokenizer, tmp_path
):
    """Everything encode_query / encode_document apply is read from the folder; what the config
    sets wins (the dense layers are no config key: they are the checkpoint's own)."""
    folder = _sentence_transformers_folder(tokenizer, tmp_path,
                                           {"query": "query: ", "document": "passage: "})
    assert scoring_of(folder) == {
        "pooling": "mean", "similarity": "cosine", "titles": "space", "query_prompt": "query: ",
        "passage_prompt": "passage: ",
        "dense": ({"in_features": 16, "out_features": 12, "bias": True, "activation": "Tanh"},),
    }
    resolved = resolve_model_settings({"init": str(folder)})
    assert (resolved["pooling"], resolved["similarity"], resolved["scale"], resolved["titles"],
            resolved["query_prompt"], resolved["passage_prompt"]) == (
        "mean", "cosine", 20.0, "space", "query: ", "passage: ")
    assert [layer["out_features"] for layer in resolved["dense"]] == [12]
    chosen = resolve_model_settings({"init": str(folder), "query_prompt": "",
                                     "passage_prompt": "document: "})
    assert (chosen["query_prompt"], chosen["passage_prompt"]) == ("", "document: ")
    assert [layer["out_features"] for layer in chosen["dense"]] == [12]


@pytest.mark.parametrize("saved", [
    {"query": "q: ", "passage": "p: "},
    {"query": "q: ", "document": "d: ", "passage": "p: "},
    {"document": "d: "},
])
def test_the_prompts_are_those_sentence_transformers_encode_query_and_encode_document_apply(
    tokenizer, tmp_path, saved
):
    """sentence-transformers' encode_document takes `prompts.document`, which its defaults
    always hold, so a saved `passage` prompt is never applied: neither does lead."""
    from sentence_transformers import SentenceTransformer

    folder = _sentence_transformers_folder(tokenizer, tmp_path, saved)
    found = scoring_of(folder)
    model = SentenceTransformer(str(folder), device="cpu")
    texts = ["dense retrieval maps queries", "rivers flow to the sea"]
    for prompt, encode in ((found["query_prompt"], model.encode_query),
                           (found["passage_prompt"], model.encode_document)):
        torch.testing.assert_close(encode(texts, convert_to_tensor=True),
                                   model.encode([prompt + t for t in texts],
                                                convert_to_tensor=True))
    assert found["query_prompt"] == saved.get("query", "")
    assert found["passage_prompt"] == saved.get("document", "")


def test_a_plain_hugging_face_folder_is_scored_as_sentence_transformers_defaults_score_it(
    tokenizer, tmp_path, caplog
):
    """No sentence-transformers files: mean pooling and cosine, with a warning naming the
    folder unless the config chooses both."""
    folder = tmp_path / "plain"
    model = load_encoder(init_model(RANDOM, tmp_path / "lead", tokenizer_dir=tokenizer))
    model.backbone.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    assert scoring_of(folder) == {"pooling": "mean", "similarity": "cosine", "plain": True}
    with caplog.at_level(logging.WARNING, logger="lead"):
        resolved = resolve_model_settings({"init": str(folder)})
    assert (resolved["pooling"], resolved["similarity"], resolved["scale"]) == (
        "mean", "cosine", 20.0)
    assert [r.getMessage() for r in caplog.records if str(folder) in r.getMessage()
            and "no sentence-transformers files" in r.getMessage()]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lead"):
        chosen = resolve_model_settings({"init": str(folder), "pooling": "cls",
                                         "similarity": "dot"})
    assert (chosen["pooling"], chosen["similarity"], chosen["scale"]) == ("cls", "dot", 1.0)
    assert not caplog.records


# Hostile input: each refusal is one line naming the culprit, and changes no file (hostile.py).


def _damage(folder: Path, damage: str) -> str:
    """Break a sentence-transformers folder one way; returns the file the refusal must name."""
    if damage == "modules.json a dict":
        (folder / "modules.json").write_text(json.dumps({"0": {"path": "", "type": "x"}}))
        return str(folder / "modules.json")
    config = folder / "2_Dense" / "config.json"
    values = json.loads(config.read_text())
    values["activation_function"] = "mypackage.activations.Swish"
    config.write_text(json.dumps(values))
    return str(config)


@pytest.mark.parametrize("damage", ["a LayerNorm module", "Pooling include_prompt false",
                                    "a Dense activation outside torch", "modules.json a dict"])
def test_a_sentence_transformers_folder_lead_cannot_reproduce_is_refused_by_name(
    capsys, tokenizer, tmp_path, damage
):
    from hostile import refused, small_files
    from sentence_transformers.sentence_transformer import modules as st

    prompts = {"query": "query: "}
    if damage == "a LayerNorm module":
        folder = _sentence_transformers_folder(tokenizer, tmp_path, prompts, st.LayerNorm(12))
        expect = (str(folder / "modules.json"), "LayerNorm", "3_LayerNorm")
    elif damage == "Pooling include_prompt false":
        folder = _sentence_transformers_folder(tokenizer, tmp_path, prompts,
                                               include_prompt=False)
        expect = (str(folder / "1_Pooling" / "config.json"), "include_prompt")
    else:
        folder = _sentence_transformers_folder(tokenizer, tmp_path, prompts)
        expect = (_damage(folder, damage),)
        expect += ("expected a list of modules",) if damage == "modules.json a dict" else (
            "mypackage.activations.Swish",)
    collection = small_files(tmp_path / "collection")
    refused(capsys, [tmp_path], "evaluate-model", "--model", folder,
            "--corpus", collection["local"]["corpus"],
            "--queries", collection["local"]["queries"]["test"],
            "--qrels", collection["local"]["qrels"]["test"], "--out", tmp_path / "scored",
            expect=expect)
