"""`init-model` (lead.modeling.init): MiniLM blocks, new vocabularies, random models, heads."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import RANDOM

from lead.__main__ import main
from lead.errors import ConfigError
from lead.modeling.encoders import collate, load_encoder
from lead.modeling.init import init_model
from lead.modeling.spec import source_dir


@pytest.fixture(scope="module")
def minilm_blocks_0_2_4(tmp_path_factory, tokenizer):
    """MiniLM's blocks 0, 2, 4 with a trained tokenizer's vocabulary (a small directory)."""
    settings = {"init": "package:minilm", "pooling": "mean", "keep_layers": [0, 2, 4]}
    return init_model(settings, tmp_path_factory.mktemp("m") / "student", tokenizer_dir=tokenizer,
                      seed=5)


def test_keep_layers_copies_the_chosen_minilm_blocks(minilm_blocks_0_2_4):
    student = load_encoder(minilm_blocks_0_2_4)
    assert (student.num_layers, student.hidden_size) == (3, 384)
    assert json.loads((minilm_blocks_0_2_4 / "config.json").read_text())["num_hidden_layers"] == 3
    original = load_file(source_dir("package:minilm") / "model.safetensors")
    ours = load_file(minilm_blocks_0_2_4 / "model.safetensors")
    weight = "encoder.layer.{}.attention.self.query.weight"
    prefix = "" if weight.format(0) in original else "bert."
    for new, old in enumerate([0, 2, 4]):
        torch.testing.assert_close(ours[weight.format(new)], original[prefix + weight.format(old)])
    assert weight.format(3) not in ours


def test_a_trained_tokenizer_replaces_the_vocabulary_deterministically(
    minilm_blocks_0_2_4, tokenizer, tmp_path
):
    student = load_encoder(minilm_blocks_0_2_4)
    assert len(student.tokenizer) == 100
    assert student.backbone.get_input_embeddings().weight.shape == (100, 384)
    assert student.pad_id == 0 and student.backbone.config.pad_token_id == 0
    settings = {"init": "package:minilm", "pooling": "mean", "keep_layers": [0, 2, 4]}
    again = init_model(settings, tmp_path / "again", tokenizer_dir=tokenizer, seed=5)
    other = init_model(settings, tmp_path / "other", tokenizer_dir=tokenizer, seed=6)
    weights = (minilm_blocks_0_2_4 / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == weights
    assert (other / "model.safetensors").read_bytes() != weights
    new, different = load_file(again / "model.safetensors"), load_file(other / "model.safetensors")
    word = "embeddings.word_embeddings.weight"
    assert not torch.equal(new[word], different[word])  # the seed draws the new embeddings
    block = "encoder.layer.1.output.dense.weight"
    assert torch.equal(new[block], different[block])  # the blocks stay pretrained


def test_random_model_takes_the_tokenizer_vocabulary_and_the_seed(tokenizer, tmp_path):
    colbert = {**RANDOM, "kind": "colbert", "colbert_dim": 8}
    first = init_model(colbert, tmp_path / "a", tokenizer_dir=tokenizer)
    second = init_model(colbert, tmp_path / "b", tokenizer_dir=tokenizer)
    model = load_encoder(first)
    assert (model.num_layers, model.hidden_size, len(model.tokenizer)) == (3, 16, 100)
    assert model.backbone.config.vocab_size == 100
    for name in ("model.safetensors", "lead_head.safetensors", "tokenizer.json", "lead.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


@pytest.mark.parametrize("model_type", ["distilbert", "mpnet"])
def test_random_models_of_other_architectures_build_and_encode(tokenizer, tmp_path, model_type):
    settings = {**RANDOM, "architecture": {**RANDOM["architecture"], "model_type": model_type}}
    model = load_encoder(init_model(settings, tmp_path / model_type, tokenizer_dir=tokenizer))
    assert model.num_layers == 3
    ids = model.tokenizer(["dense retrieval", "a small student learns"])["input_ids"]
    reps = model.encode_passage(collate(ids, model.pad_id), layers=[2])
    assert reps.final.shape == reps.layers[2].shape == (2, 16)


def test_bad_initialisations_are_named(tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="'random' needs a vocabulary"):
        init_model(RANDOM, tmp_path / "x")
    with pytest.raises(ConfigError, match=r"nowhere/config\.json not found"):
        init_model({"init": str(tmp_path / "nowhere")}, tmp_path / "x")
    with pytest.raises(ConfigError, match=r"keep_layers \[6\] outside the model's blocks 0..5"):
        init_model({"init": "package:minilm", "keep_layers": [0, 6]}, tmp_path / "x")
    with pytest.raises(ConfigError, match="increasing, without repeats"):
        init_model({**RANDOM, "keep_layers": [1, 0]}, tmp_path / "x", tokenizer_dir=tokenizer)
    with pytest.raises(ConfigError, match="not a multiple of num_attention_heads"):
        bad = {"init": "random", "architecture": {"hidden_size": 15, "num_attention_heads": 2}}
        init_model(bad, tmp_path / "x", tokenizer_dir=tokenizer)
    with pytest.raises(ConfigError, match=r"model\.kind"):
        init_model({**RANDOM, "kind": "sparse"}, tmp_path / "x", tokenizer_dir=tokenizer)
    assert not (tmp_path / "x").exists()


def test_cli_writes_a_model_directory(tokenizer, tmp_path, capsys):
    settings = json.dumps({**RANDOM, "pooling": "mean", "keep_layers": [0, 2]})
    out = tmp_path / "model"
    argv = ["init-model", "--settings", settings, "--out", str(out), "--tokenizer",
            str(tokenizer), "--seed", "3"]
    assert main(argv) == 0
    model = load_encoder(out)
    assert (model.num_layers, model.spec.pooling) == (2, "mean")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    missing_tokenizer = ["init-model", "--settings", '{"init": "random"}', "--out", str(out)]
    assert main(missing_tokenizer) == 2
    assert "needs a vocabulary" in capsys.readouterr().err
    assert load_encoder(out).num_layers == 2  # a failed run leaves the old directory intact


def _sentence_transformers_folder(tokenizer, root, *, normalize: bool):
    """A folder saved by sentence-transformers itself: a tiny BERT, mean pooling, and a
    Normalize module when `normalize` (what makes all-MiniLM-L6-v2 a cosine model), else
    the dot-product similarity (sentence-transformers' own default would be cosine)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st

    backbone = init_model({**RANDOM, "pooling": "cls"}, root / "backbone",
                          tokenizer_dir=tokenizer, seed=4)
    transformer = st.Transformer(str(backbone))
    modules = [transformer, st.Pooling(transformer.get_embedding_dimension(), "mean")]
    if normalize:
        modules.append(st.Normalize())
    folder = root / ("cosine" if normalize else "dot")
    similarity = "cosine" if normalize else "dot"
    SentenceTransformer(modules=modules, device="cpu", similarity_fn_name=similarity).save(
        str(folder))
    return folder


@pytest.mark.parametrize("normalize", [True, False])
def test_similarity_and_pooling_are_inherited_from_a_sentence_transformers_folder(
    tokenizer, tmp_path, normalize
):
    from sentence_transformers import SentenceTransformer

    folder = _sentence_transformers_folder(tokenizer, tmp_path, normalize=normalize)
    model = load_encoder(init_model({"init": str(folder)}, tmp_path / "lead"))
    assert model.spec.pooling == "mean"
    assert model.spec.similarity == ("cosine" if normalize else "dot")
    assert model.spec.scale == (20.0 if normalize else 1.0)
    if not normalize:  # a folder with neither Normalize nor a similarity: the older dot models
        settings = json.loads((folder / "config_sentence_transformers.json").read_text())
        del settings["similarity_fn_name"]
        (folder / "config_sentence_transformers.json").write_text(json.dumps(settings))
        old = load_encoder(init_model({"init": str(folder)}, tmp_path / "old"))
        assert old.spec.similarity == "dot"
    texts = ["dense retrieval maps queries", "a small student learns", "rivers flow to the sea"]
    theirs = SentenceTransformer(str(folder), device="cpu")
    with torch.no_grad():
        ids = model.tokenizer(texts)["input_ids"]
        ours = model.encode_passage(collate(ids, model.pad_id)).final
        scores = model.compute_similarity(ours, ours)
    embeddings = theirs.encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(ours, embeddings, atol=1e-5, rtol=1e-5)
    # lead's training scores are the model's own similarity, times its scale
    expected = theirs.similarity(embeddings, embeddings) if normalize else embeddings @ embeddings.T
    torch.testing.assert_close(scores, model.spec.scale * expected, atol=1e-4, rtol=1e-5)
    # and the export carries it: sentence-transformers scores lead's folder the same way
    exported = SentenceTransformer(str(tmp_path / "lead"), device="cpu")
    assert exported.similarity_fn_name == ("cosine" if normalize else "dot")
    torch.testing.assert_close(exported.encode(texts, convert_to_tensor=True), ours,
                               atol=1e-5, rtol=1e-5)


def test_explicit_similarity_overrides_the_inherited_one(tokenizer, tmp_path):
    folder = _sentence_transformers_folder(tokenizer, tmp_path, normalize=True)
    settings = {"init": str(folder), "similarity": "dot", "pooling": "cls", "scale": 2.0}
    model = load_encoder(init_model(settings, tmp_path / "lead"))
    assert (model.spec.similarity, model.spec.pooling, model.spec.scale) == ("dot", "cls", 2.0)


def _checkpoint_with(tokenizer, root, extra: dict[str, torch.Tensor], *, classifier: bool):
    """A Hugging Face folder whose weights carry a head beside the backbone: a one-logit
    sequence classifier (`classifier`), or extra tensors such as ColBERT's `linear.weight`."""
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    backbone = init_model(RANDOM, root / "backbone", tokenizer_dir=tokenizer, seed=6)
    folder = root / "checkpoint"
    if classifier:
        AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=1).save_pretrained(
            folder)
    else:
        AutoModel.from_pretrained(backbone).save_pretrained(folder)
    if extra:
        weights = load_file(folder / "model.safetensors")
        save_file({**weights, **extra}, folder / "model.safetensors", metadata={"format": "pt"})
    AutoTokenizer.from_pretrained(backbone).save_pretrained(folder)
    return folder


def test_a_cross_encoder_starts_from_the_inits_classifier(tokenizer, tmp_path):
    folder = _checkpoint_with(tokenizer, tmp_path, {}, classifier=True)
    weights = load_file(folder / "model.safetensors")
    model = load_encoder(init_model({"init": str(folder), "kind": "cross"}, tmp_path / "lead"))
    torch.testing.assert_close(model.head.weight, weights["classifier.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.head.bias, weights["classifier.bias"], rtol=0, atol=0)
    # without one, the head starts as released: N(0, 0.02) weights, zero bias
    fresh = load_encoder(init_model({**RANDOM, "kind": "cross"}, tmp_path / "fresh",
                                    tokenizer_dir=tokenizer))
    assert torch.count_nonzero(fresh.head.bias) == 0 and 0 < fresh.head.weight.std() < 0.05


def test_a_colbert_projection_of_the_configured_size_comes_from_the_init(tokenizer, tmp_path):
    projection = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    folder = _checkpoint_with(tokenizer, tmp_path, {"linear.weight": projection},
                              classifier=False)
    settings = {"init": str(folder), "kind": "colbert", "colbert_dim": 8,
                "colbert_markers": False, "colbert_query_augmentation": False}
    model = load_encoder(init_model(settings, tmp_path / "lead"))
    torch.testing.assert_close(model.head.weight, projection, rtol=0, atol=0)
    # a projection of another size is not forced in: the head starts fresh
    other = load_encoder(init_model({**settings, "colbert_dim": 4}, tmp_path / "other"))
    assert other.head.weight.shape == (4, 16)


def _dense_folder(tokenizer, root):
    """A folder saved by sentence-transformers: a tiny BERT (16 wide), mean pooling and a Tanh
    Dense module 16 -> 12 (its weights in 2_Dense/model.safetensors)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st

    backbone = init_model(RANDOM, root / "backbone", tokenizer_dir=tokenizer, seed=4)
    transformer = st.Transformer(str(backbone))
    modules = [transformer, st.Pooling(16, "mean"),
               st.Dense(16, 12, activation_function=torch.nn.Tanh())]
    SentenceTransformer(modules=modules, device="cpu", similarity_fn_name="dot").save(
        str(root / "dense"))
    return root / "dense"


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_a_dense_module_starts_from_the_folders_own_weights(tokenizer, tmp_path, weights):
    """Each Dense module's weights become the model's head, from safetensors or from a
    weights-only PyTorch file, as sentence-transformers reads either."""
    folder = _dense_folder(tokenizer, tmp_path)
    dense = load_file(folder / "2_Dense" / "model.safetensors")
    if weights == "pytorch_model.bin":
        (folder / "2_Dense" / "model.safetensors").unlink()
        torch.save(dense, folder / "2_Dense" / "pytorch_model.bin")
    model = load_encoder(init_model({"init": str(folder)}, tmp_path / "lead"))
    assert model.spec.dense == ({"in_features": 16, "out_features": 12, "bias": True,
                                 "activation": "Tanh"},)
    assert model.embedding_dim == 12 and model.spec.similarity == "dot"
    head = load_file(tmp_path / "lead" / "lead_head.safetensors")
    assert set(head) == {"0.linear.weight", "0.linear.bias"}
    for name in ("weight", "bias"):
        torch.testing.assert_close(head[f"0.linear.{name}"], dense[f"linear.{name}"],
                                   rtol=0, atol=0)


class _Payload:
    """What a malicious pickle holds: unpickling it would create `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.mkdir, (str(self.marker),)


def test_a_pickle_that_is_no_state_dict_is_refused_and_never_run(capsys, tokenizer, tmp_path):
    """A Dense module's pytorch_model.bin goes through torch's weights-only unpickler: an
    arbitrary object is refused in one line naming the file, and its code never runs."""
    import pickle

    from hostile import refused, small_files

    folder = _dense_folder(tokenizer, tmp_path)
    (folder / "2_Dense" / "model.safetensors").unlink()
    marker = tmp_path / "MARKER"
    payload = pickle.dumps(_Payload(marker), protocol=2)
    (folder / "2_Dense" / "pytorch_model.bin").write_bytes(payload)
    collection = small_files(tmp_path / "collection")
    refused(capsys, [tmp_path], "evaluate-model", "--model", folder,
            "--corpus", collection["local"]["corpus"],
            "--queries", collection["local"]["queries"]["test"],
            "--qrels", collection["local"]["qrels"]["test"], "--out", tmp_path / "scored",
            expect=(str(folder / "2_Dense" / "pytorch_model.bin"), "weights-only"))
    assert not marker.exists()


@pytest.mark.parametrize(("umask", "file_mode", "folder_mode"),
                         [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_a_model_directory_is_as_readable_as_the_umask_allows(tokenizer, tmp_path, umask,
                                                              file_mode, folder_mode):
    """Colleagues sharing a folder can read the weights under the usual umask 022, though
    libraries write some files owner-only; a stricter umask is kept."""
    import os
    import stat

    previous = os.umask(umask)
    try:
        out = init_model({**RANDOM, "kind": "colbert", "colbert_dim": 8}, tmp_path / "model",
                         tokenizer_dir=tokenizer)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == file_mode
    for path in out.rglob("*"):
        expected = folder_mode if path.is_dir() else file_mode
        assert stat.S_IMODE(path.stat().st_mode) == expected, path.name
    assert stat.S_IMODE(out.stat().st_mode) == folder_mode


def test_a_random_model_takes_the_vocabulary_tokenizer_from_names(tokenizer, tmp_path):
    """`tokenizer.from`: a model source whose tokenizer a random model uses, vocabulary size
    included; it excludes a trained tokenizer."""
    source = init_model(RANDOM, tmp_path / "source", tokenizer_dir=tokenizer)
    settings = {**RANDOM, "tokenizer": {"from": str(source)}}
    model = load_encoder(init_model(settings, tmp_path / "random"))
    assert len(model.tokenizer) == model.backbone.config.vocab_size == 100
    assert (tmp_path / "random" / "tokenizer.json").read_bytes() == (
        source / "tokenizer.json").read_bytes()
    with pytest.raises(ConfigError, match="`from` and `train` exclude each other"):
        init_model(settings, tmp_path / "both", tokenizer_dir=tokenizer)
    with pytest.raises(ConfigError, match=r"tokenizer\.from 'random'"):
        init_model({**RANDOM, "tokenizer": {"from": "random"}}, tmp_path / "none")
