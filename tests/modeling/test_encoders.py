"""Encoders: what "layer i" means for each model kind, padding, heads, saving and loading."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from tiny_models import TEXTS, batch, make_model, make_tokenizer, spread_weights

from lead.errors import ConfigError
from lead.modeling.encoders import collate, join_pairs, load_encoder, maxsim


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("models")
    dirs = {
        "dual": make_model(root / "dual", tokenizer, layers=3),
        "mean": make_model(root / "mean", tokenizer, layers=2, pooling="mean"),
        "towers": make_model(root / "towers", tokenizer, shared_towers=False, pooling="mean"),
        "colbert": make_model(root / "colbert", tokenizer, kind="colbert", layers=3),
        "projected": make_model(root / "projected", tokenizer, kind="colbert", layers=3,
                                colbert_dim=8, colbert_query_augmentation=False),
        "cross": make_model(root / "cross", tokenizer, kind="cross", layers=3),
    }
    for seed, path in enumerate(dirs.values()):
        spread_weights(path, seed)
    return dirs


def hidden_states(backbone, inputs):
    with torch.no_grad():
        return backbone(**inputs, output_hidden_states=True).hidden_states


def test_collate_pads_to_the_longest_row():
    padded = collate([[5, 6, 7], [8]], pad_id=0)
    assert padded["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="no empty row"):
        collate([[5], []], pad_id=0)


def test_dual_layer_i_is_the_pooled_output_of_block_i(model_dirs):
    encoder = load_encoder(model_dirs["dual"]).eval()
    assert (encoder.num_layers, encoder.hidden_size) == (3, 16)  # from the config
    inputs = batch(encoder, TEXTS[:3])
    states = hidden_states(encoder.backbone, inputs)  # [embeddings, block 1, block 2, block 3]
    with torch.no_grad():
        reps = encoder.encode_passage(inputs, layers=[1, 2, 3])
    for i in (1, 2, 3):
        torch.testing.assert_close(reps.layers[i], states[i][:, 0])
    torch.testing.assert_close(reps.final, states[3][:, 0])
    with pytest.raises(ConfigError, match=r"layer 0 does not exist.*embedding output"):
        encoder.encode_query(inputs, layers=[0])
    with pytest.raises(ConfigError, match=r"layer 4 does not exist: .*blocks 1\.\.3"):
        encoder.encode_query(inputs, layers=[4])


def test_dual_scores_are_plain_dot_products(model_dirs):
    encoder = load_encoder(model_dirs["dual"]).eval()
    with torch.no_grad():
        q = encoder.encode_query(batch(encoder, TEXTS[:2])).final
        p = encoder.encode_passage(batch(encoder, TEXTS[2:5])).final
        scores = encoder.compute_similarity(q, p)
    assert scores.shape == (2, 3)
    assert scores[1, 2].item() == pytest.approx(float(q[1] @ p[2]), rel=1e-6)
    assert q.norm(dim=-1).sub(1).abs().max() > 0.1  # not normalised


def test_mean_pooling_averages_real_tokens_only(model_dirs):
    encoder = load_encoder(model_dirs["mean"]).eval()
    inputs = batch(encoder, [TEXTS[0], TEXTS[2] + " " + TEXTS[3]])  # row 0 is padded
    with torch.no_grad():
        reps = encoder.encode_passage(inputs, layers=[1])
        alone = encoder.encode_passage(batch(encoder, [TEXTS[0]]), layers=[1])
    length = int(inputs["attention_mask"][0].sum())
    states = hidden_states(encoder.backbone, inputs)
    torch.testing.assert_close(reps.layers[1][0], states[1][0, :length].mean(dim=0))
    torch.testing.assert_close(reps.final[0], alone.final[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reps.layers[1][0], alone.layers[1][0], atol=1e-5, rtol=1e-5)


def test_separate_towers_encode_queries_with_their_own_weights(model_dirs, tmp_path):
    encoder = load_encoder(model_dirs["towers"]).eval()
    assert encoder.query_backbone is not None
    with torch.no_grad():
        encoder.query_backbone.embeddings.word_embeddings.weight.mul_(-1.0)
    inputs = batch(encoder, TEXTS[:2])
    with torch.no_grad():
        query = encoder.encode_query(inputs).final
        passage = encoder.encode_passage(inputs).final
    assert not torch.allclose(query, passage)
    encoder.save(tmp_path / "towers")
    assert not (tmp_path / "towers" / "modules.json").exists()  # not one sentence-transformer
    reloaded = load_encoder(tmp_path / "towers").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded.encode_query(inputs).final, query)
        torch.testing.assert_close(reloaded.encode_passage(inputs).final, passage)


def test_maxsim_by_hand():
    # query tokens (1, 0) and (0, 1), then a padding token (5, 5)
    # passage tokens (1, 0) and (0.5, 0.5), then a padding token (9, 9)
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    p = torch.tensor([[[1.0, 0.0], [0.5, 0.5], [9.0, 9.0]]])
    q_mask, p_mask = torch.tensor([[1, 1, 0]]), torch.tensor([[1, 1, 0]])
    # token 1: max(1, 0.5) = 1; token 2: max(0, 0.5) = 0.5; padding adds nothing -> 1.5
    assert maxsim(q, p, q_mask, p_mask).item() == pytest.approx(1.5)
    # unmasked, the padding would win: (1,0)->9, (0,1)->9, (5,5)->90
    assert maxsim(q, p, torch.ones(1, 3), torch.ones(1, 3)).item() == pytest.approx(108.0)


def test_colbert_as_released_normalises_full_size_last_tokens_and_keeps_raw_layers(model_dirs):
    encoder = load_encoder(model_dirs["colbert"]).eval()
    inputs = batch(encoder, TEXTS[:3])
    with torch.no_grad():
        reps = encoder.encode_passage(inputs, layers=[1, 3])
    prepared = encoder.prepare(inputs, "passage")
    states = hidden_states(encoder.backbone, prepared)
    assert encoder.head is None and reps.final.shape[-1] == 16  # no projection: hidden size
    torch.testing.assert_close(reps.final, torch.nn.functional.normalize(states[3], dim=-1))
    torch.testing.assert_close(reps.layers[1], states[1])
    torch.testing.assert_close(reps.layers[3], states[3])  # the last block raw, like the others
    assert torch.equal(reps.mask, inputs["attention_mask"])


def test_colbert_with_a_projection_is_the_modern_option(model_dirs):
    encoder = load_encoder(model_dirs["projected"]).eval()
    inputs = batch(encoder, TEXTS[:3])
    with torch.no_grad():
        reps = encoder.encode_query(inputs, layers=[3])
        states = hidden_states(encoder.backbone, encoder.prepare(inputs, "query"))
        expected = torch.nn.functional.normalize(encoder.head(states[3]), dim=-1)
    assert reps.final.shape[-1] == 8 and encoder.embedding_dim == 8
    torch.testing.assert_close(reps.final, expected)
    torch.testing.assert_close(reps.layers[3], states[3])
    assert torch.equal(reps.mask, inputs["attention_mask"])  # no query augmentation


def test_colbert_markers_and_mask_augmentation_by_hand(model_dirs):
    """2 queries x 3 passages: markers replace [CLS], queries are padded with attended [MASK]
    tokens to the query length, and MaxSim sums over every query position."""
    encoder = load_encoder(model_dirs["colbert"]).eval()
    tokenizer = encoder.tokenizer
    q_marker, p_marker = (tokenizer.convert_tokens_to_ids(t) for t in ("[unused1]", "[unused2]"))
    queries, passages = batch(encoder, QUERIES := ["dense vectors", "a teacher"]), batch(
        encoder, TEXTS[:3])
    query_length = encoder.spec.query_max_length
    prepared = encoder.prepare(queries, "query")
    assert prepared["input_ids"].shape == (2, query_length)
    assert prepared["input_ids"][:, 0].tolist() == [q_marker, q_marker]
    assert prepared["attention_mask"].tolist() == [[1] * query_length] * 2
    for row, text in zip(prepared["input_ids"].tolist(), QUERIES, strict=True):
        real = tokenizer(text)["input_ids"]
        assert row[1 : len(real)] == real[1:]  # the query after its marker
        assert set(row[len(real) :]) == {tokenizer.mask_token_id}  # then [MASK] to the length
    assert encoder.prepare(passages, "passage")["input_ids"][:, 0].tolist() == [p_marker] * 3
    with torch.no_grad():
        q = torch.nn.functional.normalize(hidden_states(encoder.backbone, prepared)[-1], dim=-1)
        p_inputs = encoder.prepare(passages, "passage")
        p = torch.nn.functional.normalize(hidden_states(encoder.backbone, p_inputs)[-1], dim=-1)
        expected = torch.zeros(2, 3)
        for i in range(2):
            for j in range(3):
                real = p[j][passages["attention_mask"][j].bool()]  # passage padding never wins
                expected[i, j] = (q[i] @ real.T).max(dim=1).values.sum()  # every query position
        qr, pr = encoder.encode_query(queries), encoder.encode_passage(passages)
        got = encoder.compute_similarity(qr.final, pr.final, qr.mask, pr.mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_colbert_markers_need_the_tokens_in_the_vocabulary(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from lead.modeling.encoders import build_encoder
    from lead.modeling.spec import EncoderSpec

    backend = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "a": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]",
                                        unk_token="[UNK]")
    config = BertConfig(vocab_size=3, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16)
    with pytest.raises(ConfigError, match=r"no '\[unused1\]' token.*colbert_markers: false"):
        build_encoder(EncoderSpec(kind="colbert"), BertModel(config), tokenizer)


def test_scores_come_out_in_fp32_under_bf16_autocast(model_dirs):
    """Scoring runs outside autocast: bf16 vectors (as a bf16 encoder gives) are scored in fp32,
    and fp32 vectors are not rounded to bf16 by the autocast around them."""
    for name in ("dual", "colbert"):
        encoder = load_encoder(model_dirs[name]).eval()
        queries, passages = batch(encoder, TEXTS[:2]), batch(encoder, TEXTS[2:5])
        with torch.no_grad():
            q, p = encoder.encode_query(queries, [2]), encoder.encode_passage(passages, [2])
            plain = encoder.compute_similarity(q.final, p.final, q.mask, p.mask)
            half_q, half_p = q.final.to(torch.bfloat16), p.final.to(torch.bfloat16)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                final = encoder.compute_similarity(q.final, p.final, q.mask, p.mask)
                layer = encoder.layer_similarity(q.layers[2].to(torch.bfloat16),
                                                 p.layers[2].to(torch.bfloat16), q.mask, p.mask)
                from_half = encoder.compute_similarity(half_q, half_p, q.mask, p.mask)
            exact = encoder.compute_similarity(half_q.float(), half_p.float(), q.mask, p.mask)
        assert final.dtype == layer.dtype == from_half.dtype == torch.float32, name
        assert torch.equal(final, plain), name
        assert torch.equal(from_half, exact), name
    encoder = load_encoder(model_dirs["cross"]).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        final, layers = encoder.score_groups(batch(encoder, TEXTS[:1]), batch(encoder, TEXTS[:2]),
                                             2, [1])
    assert final.dtype == layers[1].dtype == torch.float32


def test_cross_inputs_join_query_and_passage_with_zero_token_types_as_released():
    queries = {"input_ids": torch.tensor([[2, 10, 3]]), "attention_mask": torch.ones(1, 3)}
    passages = {
        "input_ids": torch.tensor([[2, 20, 21, 3], [2, 30, 3, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
    }
    pairs = join_pairs(queries, passages, group_size=2, pad_id=0)
    assert pairs["input_ids"].tolist() == [[2, 10, 3, 20, 21, 3], [2, 10, 3, 30, 3, 0]]
    assert pairs["token_type_ids"].tolist() == [[0] * 6, [0] * 6]
    assert pairs["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]]
    segments = join_pairs(queries, passages, group_size=2, pad_id=0, segments=True)
    assert segments["token_type_ids"].tolist() == [[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0]]
    # too long for the model: passage tokens go, the final [SEP] stays
    cut = join_pairs(queries, passages, group_size=2, pad_id=0, max_length=5)
    assert cut["input_ids"][0].tolist() == [2, 10, 3, 20, 3]


def test_cross_encoder_head_starts_from_the_release_initialisation():
    from transformers import BertConfig, BertModel

    from lead.modeling.encoders import build_encoder
    from lead.modeling.spec import EncoderSpec

    config = BertConfig(vocab_size=10, hidden_size=512, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=16)
    tokenizer = type("T", (), {"pad_token_id": 0})()
    torch.manual_seed(0)
    head = build_encoder(EncoderSpec(kind="cross"), BertModel(config), tokenizer).head
    assert head.bias.abs().max().item() == 0.0
    # N(0, 0.02) over 512 weights, not torch's default U(-1/sqrt(512), 1/sqrt(512)) (std 0.026)
    assert head.weight.std().item() == pytest.approx(0.02, rel=0.12)
    assert head.weight.mean().abs().item() < 0.004


def test_cross_scores_every_layer_with_the_final_head(model_dirs):
    encoder = load_encoder(model_dirs["cross"]).eval()
    queries = batch(encoder, TEXTS[:2])
    passages = batch(encoder, TEXTS[2:8])  # groups of 3
    with torch.no_grad():
        final, layers = encoder.score_groups(queries, passages, 3, layers=[1, 2])
    states = hidden_states(encoder.backbone, join_pairs(queries, passages, 3, encoder.pad_id))
    head = encoder.head
    with torch.no_grad():
        for i in (1, 2):
            torch.testing.assert_close(layers[i], head(states[i][:, 0]).view(2, 3))
        torch.testing.assert_close(final, head(states[3][:, 0]).view(2, 3))
        head.bias.add_(1.0)  # one head for every layer: moving it moves every layer's scores
        moved_final, moved = encoder.score_groups(queries, passages, 3, layers=[1, 2])
    torch.testing.assert_close(moved[1], layers[1] + 1.0)
    torch.testing.assert_close(moved_final, final + 1.0)
    with pytest.raises(ConfigError, match="cross model has no query or passage representation"):
        encoder.encode_query(queries)


@pytest.mark.parametrize("name", ["dual", "colbert", "projected", "cross"])
def test_save_and_load_give_the_same_model(model_dirs, tmp_path, name):
    encoder = load_encoder(model_dirs[name]).eval()
    encoder.save(tmp_path / "copy")
    reloaded = load_encoder(tmp_path / "copy").eval()
    spec = json.loads((tmp_path / "copy" / "lead.json").read_text())
    assert spec["kind"] == {"projected": "colbert"}.get(name, name)
    assert set(spec) == {"kind", "pooling", "similarity", "scale", "shared_towers",
                         "query_max_length", "passage_max_length", "colbert_dim",
                         "colbert_markers", "colbert_query_augmentation", "cross_token_types",
                         "titles", "query_prompt", "passage_prompt", "dense"}
    queries, passages = batch(encoder, TEXTS[:2]), batch(encoder, TEXTS[2:6])
    with torch.no_grad():
        before = encoder.score_groups(queries, passages, 2, layers=[1])
        after = reloaded.score_groups(queries, passages, 2, layers=[1])
    torch.testing.assert_close(after[0], before[0])
    torch.testing.assert_close(after[1][1], before[1][1])
    saved = {p.name: p.read_bytes() for p in (tmp_path / "copy").glob("*.safetensors")}
    reloaded.save(tmp_path / "again")
    assert saved == {p.name: p.read_bytes() for p in (tmp_path / "again").glob("*.safetensors")}


@pytest.mark.parametrize("name", ["dual", "mean"])
def test_sentence_transformers_loads_the_dual_encoder_with_its_pooling(model_dirs, name):
    from sentence_transformers import SentenceTransformer

    encoder = load_encoder(model_dirs[name]).eval()
    pooling = json.loads((model_dirs[name] / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_cls_token"] == (encoder.spec.pooling == "cls")
    assert pooling["pooling_mode_mean_tokens"] == (encoder.spec.pooling == "mean")
    model = SentenceTransformer(str(model_dirs[name]), device="cpu")
    theirs = model.encode(TEXTS, convert_to_tensor=True)
    with torch.no_grad():
        ours = encoder.encode_passage(batch(encoder, TEXTS)).final
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_loading_a_broken_directory_names_what_is_missing(model_dirs, tmp_path):
    with pytest.raises(ConfigError, match="model directory not found"):
        load_encoder(tmp_path / "nothing")
    for missing, message in [
        ("lead.json", "lead.json: missing"),
        ("config.json", "config.json: missing"),
        ("lead_head.safetensors", "lead_head.safetensors: missing"),
    ]:
        broken = shutil.copytree(model_dirs["projected"], tmp_path / missing)
        (broken / missing).unlink()
        with pytest.raises(ConfigError, match=message) as error:
            load_encoder(broken)
        assert str(broken) in str(error.value)
    broken = shutil.copytree(model_dirs["dual"], tmp_path / "no-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (broken / name).unlink()
    with pytest.raises(ConfigError, match="no tokenizer") as error:
        load_encoder(broken)
    assert str(broken) in str(error.value)
    (tmp_path / "lead.json" / "lead.json").write_text('{"kind": "dual", "colour": 1}')
    with pytest.raises(ConfigError, match="not a valid lead model description"):
        load_encoder(tmp_path / "lead.json")


DENSE = ({"in_features": 16, "out_features": 12, "bias": True, "activation": "Tanh"},
         {"in_features": 12, "out_features": 8, "bias": False, "activation": "Identity"})


def _dense_encoder(tokenizer, similarity: str = "cosine"):
    """A 2-block, 16-wide BERT dual encoder with two dense layers (16 -> 12 Tanh, 12 -> 8)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lead.modeling.encoders import build_encoder
    from lead.modeling.spec import EncoderSpec

    torch.manual_seed(0)
    config = BertConfig(vocab_size=120, hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32, initializer_range=0.3)
    spec = EncoderSpec(pooling="mean", similarity=similarity, scale=20.0, dense=DENSE)
    return build_encoder(spec, BertModel(config), AutoTokenizer.from_pretrained(tokenizer)).eval()


def test_dense_layers_shape_the_final_vector_and_leave_the_layers_raw(tokenizer):
    """As sentence-transformers' Dense modules: the pooled last block goes through each linear
    layer and its activation, then is normalised (cosine); intermediate layers are the raw
    pooled blocks, scored without the head that was trained on the last block only."""
    encoder = _dense_encoder(tokenizer)
    assert encoder.embedding_dim == 8 and encoder.hidden_size == 16
    inputs = batch(encoder, TEXTS[:3])
    with torch.no_grad():
        reps = encoder.encode_passage(inputs, layers=[1, 2])
        states = hidden_states(encoder.backbone, inputs)
        mask = inputs["attention_mask"].unsqueeze(-1).float()
        pooled = {i: (states[i] * mask).sum(1) / mask.sum(1) for i in (1, 2)}
        first, second = encoder.head
        by_hand = second.linear(torch.tanh(first.linear(pooled[2])))
    assert second.linear.bias is None
    torch.testing.assert_close(reps.final, torch.nn.functional.normalize(by_hand, dim=-1))
    assert reps.final.shape == (3, 8)
    for i in (1, 2):
        torch.testing.assert_close(reps.layers[i], pooled[i])
    with torch.no_grad():
        layer = encoder.layer_similarity(reps.layers[2], reps.layers[2])
    unit = torch.nn.functional.normalize(pooled[2], dim=-1)
    torch.testing.assert_close(layer, 20.0 * unit @ unit.T)


def test_dense_layers_are_saved_loaded_and_exported_to_sentence_transformers(tokenizer,
                                                                             tmp_path):
    """The head is saved in lead_head.safetensors and reloads to the same model; the export is
    a sentence-transformers folder with one Dense module per layer, which gives the same
    vectors."""
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    encoder = _dense_encoder(tokenizer, similarity="dot")
    encoder.save(tmp_path / "model")
    head = load_file(tmp_path / "model" / "lead_head.safetensors")
    assert {name: tuple(t.shape) for name, t in head.items()} == {
        "0.linear.weight": (12, 16), "0.linear.bias": (12,), "1.linear.weight": (8, 12)}
    reloaded = load_encoder(tmp_path / "model").eval()
    assert reloaded.spec.dense == DENSE
    inputs = batch(encoder, TEXTS)
    with torch.no_grad():
        ours = encoder.encode_query(inputs).final
        torch.testing.assert_close(reloaded.encode_query(inputs).final, ours)
    modules = json.loads((tmp_path / "model" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == [
        "Transformer", "Pooling", "Dense", "Dense"]  # dot product: no Normalize
    theirs = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    torch.testing.assert_close(theirs.encode(TEXTS, convert_to_tensor=True), ours,
                               atol=1e-5, rtol=1e-5)


def test_dense_layers_lead_cannot_apply_are_refused():
    from lead.modeling.spec import EncoderSpec

    with pytest.raises(ConfigError, match=r"dense activation 'Swish' is unknown"):
        EncoderSpec(dense=({**DENSE[0], "activation": "Swish"},))
    with pytest.raises(ConfigError, match="dense layers apply to dual encoders only"):
        EncoderSpec(kind="colbert", dense=DENSE)
