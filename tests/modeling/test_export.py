"""What a lead model directory carries for other libraries (lead.modeling.export): the
sentence-transformers files, Dense modules and prompts included, and the model card."""

from __future__ import annotations

import re

import pytest
import torch
from tiny_models import RANDOM, make_model

from lead.modeling.encoders import load_encoder
from lead.modeling.export import write_model_card
from lead.modeling.init import init_model

PROMPTS = {"query": "query: ", "document": "passage: "}
TEXTS = ["dense retrieval maps queries", "a small student learns", "rivers flow to the sea"]


@pytest.fixture(scope="module")
def st_folder(tmp_path_factory, tokenizer):
    """A folder saved by sentence-transformers itself: a tiny random BERT (16 wide), mean
    pooling, a Tanh Dense module 16 -> 12, Normalize, and query and document prompts."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st

    root = tmp_path_factory.mktemp("st")
    backbone = init_model(RANDOM, root / "backbone", tokenizer_dir=tokenizer, seed=4)
    transformer = st.Transformer(str(backbone))
    torch.manual_seed(0)
    modules = [transformer, st.Pooling(16, "mean"),
               st.Dense(16, 12, activation_function=torch.nn.Tanh()), st.Normalize()]
    SentenceTransformer(modules=modules, device="cpu", prompts=PROMPTS).save(str(root / "st"))
    return root / "st"


def _embeddings(folder):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    return model, model.encode_query(TEXTS, convert_to_tensor=True), model.encode_document(
        TEXTS, convert_to_tensor=True)


def test_a_sentence_transformers_model_survives_init_and_export(st_folder, tmp_path):
    """Loaded by init_model and saved back (Encoder.save), the folder is the same
    sentence-transformers model: its Dense module, Normalize and prompts, the same vectors."""
    init_model({"init": str(st_folder)}, tmp_path / "lead")
    load_encoder(tmp_path / "lead").save(tmp_path / "again")
    _, queries, passages = _embeddings(st_folder)
    for folder in (tmp_path / "lead", tmp_path / "again"):
        model, our_queries, our_passages = _embeddings(folder)
        assert [type(module).__name__ for module in model] == [
            "Transformer", "Pooling", "Dense", "Normalize"]
        assert (model.prompts["query"], model.prompts["document"]) == ("query: ", "passage: ")
        assert model.similarity_fn_name == "cosine"
        assert type(model[2].activation_function) is torch.nn.Tanh
        torch.testing.assert_close(our_queries, queries, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(our_passages, passages, atol=1e-5, rtol=1e-5)
        # the prompts matter: without them the vectors differ
        assert not torch.allclose(our_queries, model.encode(TEXTS, convert_to_tensor=True),
                                  atol=1e-4)


ABSOLUTE = re.compile(r"(?<![\w.])/[\w.-]+/")


def test_the_model_card_is_a_hugging_face_card_naming_the_final_folder(tokenizer, tmp_path):
    """A dual encoder's card opens with the Hugging Face metadata header of a
    sentence-transformers model, names the folder it is renamed to (not the one it is written
    in) and no path of the machine it was made on."""
    folder = tmp_path / ".student-lead-s1.tmp-123"
    make_model(folder, tokenizer, pooling="mean", query_prompt="query: ")
    facts = {"method": "lead", "teacher": str(tmp_path / "models" / "teacher-warm"),
             "student init": tmp_path / "models" / "student-init", "dev RR@10": 0.25}
    write_model_card(folder, name="student-lead-s1", facts=facts, base_model="package:minilm")
    card = (folder / "README.md").read_text(encoding="utf-8")
    header = card.split("\n---\n", 1)[0].splitlines()
    assert header[0] == "---"
    assert {"library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
            "base_model: sentence-transformers/all-MiniLM-L6-v2", "license: apache-2.0",
            "- sentence-transformers", "- lead"} <= set(header)
    assert "SentenceTransformer('student-lead-s1')" in card
    assert "| teacher | teacher-warm |" in card and "| student init | student-init |" in card
    assert "| dev RR@10 | 0.2500 |" in card and "query 'query: '" in card
    assert str(tmp_path) not in card and ".tmp-" not in card
    assert not ABSOLUTE.search(card), ABSOLUTE.search(card)


def test_a_model_card_claims_sentence_transformers_only_for_a_shared_tower_dual_encoder(
    tokenizer, tmp_path
):
    colbert = make_model(tmp_path / "colbert", tokenizer, kind="colbert")
    write_model_card(colbert, name="colbert", facts={}, base_model="someone/their-model")
    card = (colbert / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "library_name" not in card
    assert "- colbert-retrieval" in card and "SentenceTransformer(" not in card
    assert "base_model: someone/their-model" in card and "license: other" in card
