"""Encoding (lead.retrieval.encode): shards, dtypes, determinism, bad models and tokens."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hostile import damaged_model, refused
from tiny_models import make_model, make_tokenizer, spread_weights

from lead.__main__ import main
from lead.config import dumps, resolve
from lead.errors import ConfigError, DataError
from lead.io import write_table
from lead.modeling.encoders import collate, load_encoder
from lead.retrieval import encode as encode_module
from lead.retrieval.encode import encode_file, encode_tokens, shard_rows
from lead.schemas import CORPUS, TOKENS, embeddings
from lead.tokenization import tokenize_file

ROWS = 41


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Tiny models run many tiny ops: on a busy machine one thread is far faster than two."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("encode-model")
    tokenizer = make_tokenizer(root / "tokenizer")
    model = make_model(root / "model", tokenizer, pooling="mean", hidden=16, seed=3)
    return spread_weights(model, seed=5, std=0.2)


@pytest.fixture(scope="module")
def tokens_path(tmp_path_factory, model_dir):
    """ROWS rows of [CLS] random tokens [SEP], lengths 2..30, in three row groups."""
    encoder = load_encoder(model_dir)
    tokenizer = encoder.tokenizer
    rng = np.random.default_rng(11)
    first_word = len(tokenizer.all_special_ids)
    rows = [
        [
            tokenizer.cls_token_id,
            *rng.integers(first_word, len(tokenizer), size=int(rng.integers(0, 29))).tolist(),
            tokenizer.sep_token_id,
        ]
        for _ in range(ROWS)
    ]
    table = pa.table({"id": [f"p{i:03d}" for i in range(ROWS)], "input_ids": rows}, TOKENS)
    path = tmp_path_factory.mktemp("encode-tokens") / "tokens.parquet"
    pq.write_table(table, path, row_group_size=15)  # several row groups, as tokenize writes
    return path


def settings(**overrides):
    return resolve("encode", {"batch_size": 4, **overrides})


def read_embeddings(path):
    table = pq.read_table(path)
    dim = table.schema.field("embedding").type.list_size
    values = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return table.column("id").to_pylist(), values.reshape(-1, dim).astype(np.float32)


def one_by_one(model_dir, tokens_path, role="passage"):
    """The reference: every row encoded alone, without any padding."""
    encoder = load_encoder(model_dir).eval()
    encode = encoder.encode_passage if role == "passage" else encoder.encode_query
    rows = pq.read_table(tokens_path).column("input_ids").to_pylist()
    with torch.inference_mode():
        return np.stack(
            [encode(collate([row], encoder.pad_id)).final[0].numpy() for row in rows]
        )


@pytest.fixture
def small_windows(monkeypatch):
    """Windows of 3 batches of 4 rows: the 41 rows span several sort windows."""
    monkeypatch.setattr(encode_module, "SORT_WINDOW_BATCHES", 3)


def test_encode_writes_embeddings_in_input_order_without_padding_effects(
    model_dir, tokens_path, tmp_path, small_windows
):
    out = tmp_path / "emb.parquet"
    written = encode_file(model_dir, tokens_path, "passage", out, settings())

    assert written == ROWS
    assert pq.read_schema(out).remove_metadata().equals(embeddings(16, "float32"))
    ids, vectors = read_embeddings(out)
    assert ids == [f"p{i:03d}" for i in range(ROWS)]
    reference = one_by_one(model_dir, tokens_path)
    np.testing.assert_allclose(vectors, reference, rtol=1e-4, atol=1e-5)
    # The rows really differ, so the comparison above can fail.
    assert np.linalg.norm(reference - reference[0], axis=1)[1:].min() > 1e-2


def test_query_role_uses_the_query_encoder(model_dir, tokens_path, tmp_path):
    out = tmp_path / "q.parquet"
    encode_file(model_dir, tokens_path, "query", out, settings())
    _, vectors = read_embeddings(out)
    np.testing.assert_allclose(
        vectors, one_by_one(model_dir, tokens_path, "query"), rtol=1e-4, atol=1e-5
    )


def test_cpu_bf16_autocast_stays_close_to_fp32(model_dir, tokens_path, tmp_path):
    full, autocast = tmp_path / "f32.parquet", tmp_path / "bf16.parquet"
    encode_file(model_dir, tokens_path, "passage", full, settings())
    encode_file(model_dir, tokens_path, "passage", autocast, settings(cpu_bf16=True))
    a, b = read_embeddings(full)[1], read_embeddings(autocast)[1]
    assert not np.array_equal(a, b)  # bf16 really ran
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.99


def test_float16_output(model_dir, tokens_path, tmp_path):
    full, half = tmp_path / "f32.parquet", tmp_path / "f16.parquet"
    encode_file(model_dir, tokens_path, "passage", full, settings())
    encode_file(model_dir, tokens_path, "passage", half, settings(dtype="float16"))
    assert pq.read_schema(half).remove_metadata().equals(embeddings(16, "float16"))
    np.testing.assert_allclose(
        read_embeddings(half)[1], read_embeddings(full)[1], rtol=2e-3, atol=2e-3
    )


@pytest.mark.parametrize("num_rows", [0, 1, 7, 41, 1000])
@pytest.mark.parametrize("num_shards", [1, 3, 8])
def test_shard_rows_partition_the_rows(num_rows, num_shards):
    bounds = [shard_rows(num_rows, shard, num_shards) for shard in range(num_shards)]
    assert bounds[0][0] == 0 and bounds[-1][1] == num_rows
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_shards_concatenate_to_the_unsharded_encoding(
    model_dir, tokens_path, tmp_path, small_windows
):
    whole = tmp_path / "whole.parquet"
    encode_file(model_dir, tokens_path, "passage", whole, settings())
    parts = []
    for shard in range(4):
        out = tmp_path / f"shard{shard}.parquet"
        encode_file(
            model_dir, tokens_path, "passage", out, settings(), shard=shard, num_shards=4
        )
        parts.append(read_embeddings(out))
    whole_ids, whole_vectors = read_embeddings(whole)
    assert [len(ids) for ids, _ in parts] == [10, 10, 10, 11]
    assert [i for ids, _ in parts for i in ids] == whole_ids
    np.testing.assert_allclose(
        np.concatenate([vectors for _, vectors in parts]), whole_vectors, rtol=1e-4, atol=1e-5
    )


def test_more_shards_than_rows_gives_empty_shards(model_dir, tokens_path, tmp_path):
    out = tmp_path / "empty.parquet"
    assert encode_file(model_dir, tokens_path, "passage", out, settings(), shard=0,
                       num_shards=ROWS + 1) == 0
    assert pq.read_metadata(out).num_rows == 0
    assert pq.read_schema(out).remove_metadata().equals(embeddings(16, "float32"))


def test_encoding_is_byte_deterministic(model_dir, tokens_path, tmp_path):
    first, second = tmp_path / "1.parquet", tmp_path / "2.parquet"
    for out in (first, second):
        encode_file(model_dir, tokens_path, "passage", out, settings(), shard=1, num_shards=2)
    assert first.read_bytes() == second.read_bytes()


def test_a_killed_job_leaves_nothing_and_its_rerun_succeeds(model_dir, tokens_path, tmp_path):
    out = tmp_path / "shard1.parquet"
    encoder = load_encoder(model_dir).eval()
    calls = 0

    def embed_then_die(rows):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt  # what a killed job looks like from inside
        with torch.inference_mode():
            return encoder.encode_passage(collate(rows, encoder.pad_id)).final.numpy()

    with pytest.raises(KeyboardInterrupt):
        encode_tokens(
            tokens_path, out, embed_then_die, 16, batch_size=2, shard=1, num_shards=2
        )
    assert list(tmp_path.iterdir()) == []

    encode_file(model_dir, tokens_path, "passage", out, settings(), shard=1, num_shards=2)
    clean = tmp_path / "clean.parquet"
    encode_file(model_dir, tokens_path, "passage", clean, settings(), shard=1, num_shards=2)
    assert out.read_bytes() == clean.read_bytes()


def test_cli_encodes_one_shard(model_dir, tokens_path, tmp_path):
    out = tmp_path / "cli.parquet"
    status = main([
        "encode", "--model", str(model_dir), "--tokens", str(tokens_path), "--role", "passage",
        "--out", str(out), "--shard", "2", "--settings", dumps({"shards": 3, "dtype": "float16"}),
    ])
    assert status == 0
    ids, _ = read_embeddings(out)
    assert ids == [f"p{i:03d}" for i in range(ROWS * 2 // 3, ROWS)]
    assert pq.read_schema(out).field("embedding").type.value_type == pa.float16()


def test_cli_reports_bad_shard(model_dir, tokens_path, tmp_path, capsys):
    status = main([
        "encode", "--model", str(model_dir), "--tokens", str(tokens_path), "--role", "passage",
        "--out", str(tmp_path / "x.parquet"), "--shard", "3", "--num-shards", "3",
    ])
    assert status == 2
    assert "shard 3 of 3" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.parametrize("kind", ["colbert", "cross"])
def test_only_dual_encoders_are_encoded(kind, tmp_path, tokens_path):
    tokenizer = make_tokenizer(tmp_path / "tok")
    model = make_model(tmp_path / kind, tokenizer, kind=kind, hidden=8)
    with pytest.raises(ConfigError, match=f"is a {kind} model: only dual encoders"):
        encode_file(model, tokens_path, "passage", tmp_path / "out.parquet", settings())


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[2, 6, 3], []], r"row 1, id 'b'\): input_ids is null or empty"),
        ([[2, 6, 3], [2, 100000, 3]], r"row 1, id 'b'\): token id 100000 is outside"),
    ],
)
def test_bad_token_rows_name_file_and_row(model_dir, tmp_path, rows, message):
    tokens = tmp_path / "bad.parquet"
    write_table(pa.table({"id": ["a", "b"], "input_ids": rows}, TOKENS), tokens)
    out = tmp_path / "out.parquet"
    with pytest.raises(DataError, match=r"bad\.parquet \(" + message):
        encode_file(model_dir, tokens, "passage", out, settings())
    assert not out.exists()


def test_empty_or_wrong_tokens_files_are_data_errors(model_dir, tmp_path):
    empty = tmp_path / "empty.parquet"
    write_table(TOKENS.empty_table(), empty)
    with pytest.raises(DataError, match=r"empty\.parquet: no rows to encode"):
        encode_file(model_dir, empty, "passage", tmp_path / "o.parquet", settings())
    corpus = tmp_path / "corpus.parquet"
    write_table(pa.table({"doc_id": ["a"], "text": ["hello"]}), corpus)
    with pytest.raises(DataError, match=r"corpus\.parquet \(column 'id'\)"):
        encode_file(model_dir, corpus, "passage", tmp_path / "o.parquet", settings())
    garbage = tmp_path / "garbage.parquet"
    garbage.write_text("id,input_ids\n")
    with pytest.raises(DataError, match=r"garbage\.parquet: not a parquet file"):
        encode_file(model_dir, garbage, "passage", tmp_path / "o.parquet", settings())
    with pytest.raises(DataError, match=r"nothing\.parquet: file not found"):
        encode_file(model_dir, tmp_path / "nothing.parquet", "passage", tmp_path / "o.parquet",
                    settings())


# --- hardening: non-finite embeddings, tokens from another tokenizer ---------------------


def broken_copy(model_dir, out, damage):
    """A copy of the model with `damage(encoder)` applied to its weights."""
    encoder = load_encoder(model_dir)
    with torch.no_grad():
        damage(encoder)
    return encoder.save(out)


def tokens_with(path, rows):
    ids = [f"p{i:03d}" for i in range(len(rows))]
    write_table(pa.table({"id": ids, "input_ids": rows}, TOKENS), path)
    return path


def test_a_model_that_produces_nan_fails_naming_model_tokens_and_first_bad_row(
    model_dir, tmp_path, capsys
):
    poisoned_token = 7  # rows holding this token get NaN embeddings, the others do not

    def poison(encoder):
        encoder.backbone.get_input_embeddings().weight[poisoned_token] = float("nan")

    broken = broken_copy(model_dir, tmp_path / "broken", poison)
    tokens = tokens_with(
        tmp_path / "tokens.parquet",
        [[2, 6, 3], [2, 8, 9, 3], [2, 9, poisoned_token, 3], [2, 6, 3], [2, poisoned_token, 3]],
    )
    out = tmp_path / "out.parquet"
    with pytest.raises(DataError) as raised:
        encode_file(broken, tokens, "passage", out, settings(batch_size=2))
    message = str(raised.value)
    assert message == (
        f"{tokens} (row 2, id 'p002'): {broken} produced a non-finite embedding (NaN or inf); "
        "nothing was written"
    )
    assert not out.exists()
    # The same through the command line: one line, status 2, nothing written.
    status = main(["encode", "--model", str(broken), "--tokens", str(tokens),
                   "--role", "passage", "--out", str(out)])
    assert status == 2
    assert "row 2, id 'p002'" in capsys.readouterr().err
    assert list(tmp_path.glob("*out.parquet*")) == []
    # The undamaged model encodes the same tokens.
    assert encode_file(model_dir, tokens, "passage", out, settings()) == 5


def test_float16_overflow_is_refused_rather_than_stored_as_inf(model_dir, tmp_path):
    def inflate(encoder):
        encoder.backbone.encoder.layer[-1].output.LayerNorm.weight.mul_(1e6)

    loud = broken_copy(model_dir, tmp_path / "loud", inflate)
    tokens = tokens_with(tmp_path / "tokens.parquet", [[2, 6, 3], [2, 8, 9, 3]])
    out = tmp_path / "out.parquet"
    beyond = r"row 0, id 'p000'\): .*loud produced an embedding beyond the range of float16"
    with pytest.raises(DataError, match=beyond):
        encode_file(loud, tokens, "passage", out, settings(dtype="float16"))
    assert not out.exists()
    encode_file(loud, tokens, "passage", out, settings())  # float32 holds these values
    assert np.isfinite(read_embeddings(out)[1]).all()


@pytest.fixture(scope="module")
def texts_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("encode-texts") / "corpus.parquet"
    texts = ["dense retrieval maps queries to vectors", "cats sleep on warm mats",
             "the teacher scores every passage", "rivers flow to the sea"]
    write_table(
        pa.table({"doc_id": [f"d{i}" for i in range(len(texts))], "title": [""] * len(texts),
                  "text": texts}, CORPUS),
        path,
    )
    return path


def test_tokens_of_another_tokenizer_are_refused_naming_both(
    model_dir, texts_corpus, tmp_path
):
    # Another vocabulary, smaller than the model's: every id fits, none means the same.
    other = make_tokenizer(tmp_path / "other-tokenizer", vocab_size=90, lowercase=False)
    tokens = tmp_path / "other-tokens.parquet"
    tokenize_file(other, texts_corpus, tokens, max_length=16)
    ids = pq.read_table(tokens).column("input_ids").to_pylist()
    vocab = load_encoder(model_dir).backbone.get_input_embeddings().num_embeddings
    assert max(map(max, ids)) < vocab  # the vocabulary check alone would let these through
    out = tmp_path / "out.parquet"
    with pytest.raises(ConfigError) as raised:
        encode_file(model_dir, tokens, "passage", out, settings())
    message = str(raised.value)
    assert str(tokens) in message and str(model_dir) in message and "\n" not in message
    assert "another tokenizer" in message
    assert not out.exists()


def test_tokens_of_the_model_tokenizer_pass_after_the_model_is_saved_again(
    model_dir, texts_corpus, tmp_path
):
    """The workflow tokenizes with the initial model and encodes with the trained one."""
    tokens = tmp_path / "tokens.parquet"
    tokenize_file(model_dir, texts_corpus, tokens, max_length=16)
    trained = load_encoder(model_dir).save(tmp_path / "trained")
    assert encode_file(trained, tokens, "query", tmp_path / "q.parquet", settings()) == 4


# --- progress --------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_logs_start_bounded_updates_and_end(caplog):
    clock = FakeClock()
    with caplog.at_level(logging.INFO, logger="lead.retrieval.encode"):
        progress = encode_module.Progress(1000, "shard", "passages", every=30.0, clock=clock)
        for _ in range(9):  # 9 batches within 29 s: no update line
            clock.now += 29 / 9
            progress.advance(10)
        clock.now += 1.0  # 30 s after the start, 100 rows done: 3.3 rows/s, 900 to go
        progress.advance(10)
        clock.now += 10.0
        progress.advance(10)  # only 10 s after the last line: none
        clock.now += 20.0
        progress.advance(890)  # done: the end line says so, no update line
        progress.finish()
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "shard: encoding 1000 passages",
        "shard: 100 of 1000 passages, 3.3 passages/s, ETA 4m30s",
        "shard: encoded 1000 passages in 1m00s, 16.7 passages/s",
    ]


def test_encode_logs_progress_in_the_role_unit(model_dir, tokens_path, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="lead.retrieval.encode"):
        encode_file(model_dir, tokens_path, "query", tmp_path / "q.parquet", settings(),
                    shard=1, num_shards=2)
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == f"{tokens_path} rows 20-41: encoding 21 queries"
    assert lines[-1].startswith(f"{tokens_path} rows 20-41: encoded 21 queries in ")
    assert lines[-1].endswith(" queries/s")


# --- hostile input: broken models, shards that do not exist, unreadable tokens -----------------
# Each refusal is one line naming the culprit, and changes no file (hostile.py).


DAMAGES = ["empty weights", "weights cut in the header", "weights cut at the end",
           "weights a folder", "config: hidden size", "config: more layers",
           "config: fewer layers", "config: another model type"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_encode_refuses_a_broken_model_directory(capsys, work, roots, artifacts, damage):
    model = damaged_model(artifacts, work, damage)
    refused(capsys, roots, "encode", "--model", model, "--tokens",
            artifacts / "tokens" / "test.parquet", "--role", "query", "--out", work / "e.parquet",
            expect=(str(model),))


@pytest.mark.parametrize("shard, shards", [(0, 0), (2, 2), (-1, 2)])
def test_encode_refuses_a_shard_that_does_not_exist(capsys, work, roots, artifacts, shard, shards):
    """`--num-shards 0` used to be taken for "the settings' number", and encoded everything."""
    refused(capsys, roots, "encode", "--model", artifacts / "model", "--tokens",
            artifacts / "tokens" / "test.parquet", "--role", "query", "--shard", shard,
            "--num-shards", shards, "--out", work / "e.parquet",
            expect=("argument --num-shards" if shards < 1 else "argument --shard" if shard < 0
                    else f"shard {shard} of {shards}",))


@pytest.mark.parametrize("tokens", [[[2, 10**6, 3]], [[2, -1, 3]], [[]], [None]])
def test_encode_refuses_tokens_the_model_cannot_read(capsys, work, roots, artifacts, tokens):
    path = work / "tokens.parquet"
    pq.write_table(pa.table({"id": ["x"], "input_ids": pa.array(tokens,
                                                                pa.list_(pa.int32()))}), path)
    refused(capsys, roots, "encode", "--model", artifacts / "model", "--tokens", path, "--role",
            "query", "--out", work / "e.parquet", expect=(str(path),))
