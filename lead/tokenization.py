"""Tokenizers per model: train one on the corpus, and tokenize corpus/queries into TOKENS parquet.

Teacher and student may use entirely different vocabularies (LEAD aligns layers, not tokens),
so each model gets its own TOKENS files. Tokenization runs once per model and corpus with the
Rust fast tokenizer's batch API; the arrow list column is built from flat numpy buffers, never
token by token in Python.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tokenizers import Encoding, Tokenizer

from lead import schemas
from lead.errors import ConfigError, DataError, one_line
from lead.io import (
    atomic_path,
    iter_batches,
    open_parquet,
    parquet_writer,
    provenance,
    read_provenance,
)
from lead.modeling.spec import LEAD_CONFIG, EncoderSpec, position_limit, read_json

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# The position limit of BERT-style encoders; the stages truncate further per model.
MODEL_MAX_LENGTH = 512
DEFAULT_BATCH_SIZE = 8192
# Characters a token stands for, at most in ordinary text: WordPiece turns a longer word into
# one [UNK] (BERT's max_input_chars_per_word); byte-level BPE and Unigram pieces are shorter.
MAX_CHARS_PER_TOKEN = 100
TITLES = ("pair", "space")
# The Unigram trainer's score step for characters it adds back (min_score_penalty_delta).
_ADDED_CHAR_STEP = 1e-4
_SCORE_DECIMALS = 6


@dataclass(frozen=True)
class BatchEncoder:
    """Two configured copies of one fast tokenizer, because the Rust truncation strategy is
    per tokenizer: 'only_second' (keep the title, cut the text) fails on single sequences."""

    single: Tokenizer
    pair: Tokenizer
    fingerprint: str  # sha256 of the tokenizer.json serialisation: what the tokens depend on

    def encode(self, texts: list[str], titles: list[str] | None = None) -> pa.ListArray:
        """Token ids (special tokens included, truncated) of each row, in row order."""
        titled = [i for i, title in enumerate(titles or ()) if title]
        if not titled:
            return _to_list_array(self.single.encode_batch(texts))
        untitled = [i for i, title in enumerate(titles) if not title]
        encodings: list[Encoding] = [None] * len(texts)  # type: ignore[list-item]
        pairs = self._encode_pairs([(titles[i], texts[i]) for i in titled])
        singles = self.single.encode_batch([texts[i] for i in untitled])
        for rows, encoded in ((titled, pairs), (untitled, singles)):
            for row, encoding in zip(rows, encoded, strict=True):
                encodings[row] = encoding
        return _to_list_array(encodings)

    def _encode_pairs(self, pairs: list[tuple[str, str]]) -> list[Encoding]:
        try:
            return self.pair.encode_batch(pairs)
        except Exception:  # the Rust side raises a bare Exception on truncation errors
            return [self._encode_pair(title, text) for title, text in pairs]

    def _encode_pair(self, title: str, text: str) -> Encoding:
        """A title that leaves no room for any text is kept alone: [CLS] title [SEP], cut."""
        try:
            return self.pair.encode(title, text)
        except Exception:
            return self.single.encode(title)


def _to_list_array(encodings: list[Encoding]) -> pa.ListArray:
    ids = [encoding.ids for encoding in encodings]
    offsets = np.zeros(len(ids) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, ids), dtype=np.int32, count=len(ids)), out=offsets[1:])
    values = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=offsets[-1])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def load_tokenizer(tokenizer_dir: str | Path):
    """The Hugging Face fast tokenizer of a directory, as the models load it."""
    from transformers import AutoTokenizer

    tokenizer_dir = Path(tokenizer_dir)
    if not tokenizer_dir.is_dir():
        raise ConfigError(f"{tokenizer_dir}: tokenizer directory not found")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    except Exception as err:  # transformers raises OSError, ValueError, KeyError, ...
        raise ConfigError(f"{tokenizer_dir}: cannot load a tokenizer: {one_line(err)}") from err
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"{tokenizer_dir}: {type(tokenizer).__name__} is not a fast (Rust) tokenizer; "
            "save one with tokenizer.json"
        )
    return tokenizer


def batch_encoder(tokenizer_dir: str | Path, max_length: int) -> BatchEncoder:
    """Configure the directory's fast tokenizer: no padding, truncation to `max_length`.

    The fingerprint hashes the tokenizer as loaded (its tokenizer.json serialisation), so it
    also covers a directory whose tokenizer transformers assembled from other files.
    """
    backend: Tokenizer = load_tokenizer(tokenizer_dir).backend_tokenizer
    serialised = backend.to_str()
    minimum = backend.num_special_tokens_to_add(is_pair=True) + 1
    if max_length < minimum:
        raise ConfigError(
            f"max_length {max_length} is too small for {tokenizer_dir}: "
            f"it needs at least {minimum} (special tokens plus one)"
        )
    single, pair = Tokenizer.from_str(serialised), Tokenizer.from_str(serialised)
    for tokenizer, strategy in ((single, "longest_first"), (pair, "only_second")):
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length, strategy=strategy)
    fingerprint = hashlib.sha256(serialised.encode()).hexdigest()
    return BatchEncoder(single, pair, fingerprint)


def check_tokenizer(model_dir: str | Path, tokens_path: str | Path) -> None:
    """Tokens made by another tokenizer encode without error when their ids happen to fit the
    vocabulary, into meaningless embeddings: compare the tokenizer hash the tokens file
    records with the model's. Files that record none are taken as they are."""
    recorded = read_provenance(tokens_path).get("settings", {})
    expected = recorded.get("tokenizer_sha256")
    if expected is None:
        return
    actual = batch_encoder(model_dir, recorded.get("max_length", MODEL_MAX_LENGTH)).fingerprint
    if actual != expected:
        raise ConfigError(
            f"{tokens_path} was tokenized with another tokenizer (sha256 {expected[:12]}) than "
            f"the one of {model_dir} (sha256 {actual[:12]}): tokenize with the model's tokenizer"
        )


def _input_kind(path: Path) -> tuple[pa.Schema, str]:
    """CORPUS or QUERIES, told apart by the id column."""
    names = open_parquet(path).schema_arrow.names
    if "doc_id" in names:
        return schemas.CORPUS, "doc_id"
    if "query_id" in names:
        return schemas.QUERIES, "query_id"
    raise DataError(
        path,
        "columns",
        f"found {names}; expected a corpus {schemas.CORPUS.names} "
        f"or queries {schemas.QUERIES.names}",
    )


def _batch_columns(
    path: Path, batch: pa.RecordBatch, id_column: str
) -> tuple[list[str], list[str] | None]:
    text = batch.column("text")
    if text.null_count:
        row = pc.index(pc.is_null(text), True).as_py()
        raise DataError(path, f"record {batch.column(id_column)[row]}", "text is null")
    if "title" not in batch.schema.names:
        return text.to_pylist(), None
    return text.to_pylist(), pc.fill_null(batch.column("title"), "").to_pylist()


def tokenize_file(
    tokenizer_dir: str | Path,
    input_path: str | Path,
    out_path: str | Path,
    *,
    max_length: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    titles: str | None = None,
) -> int:
    """Tokenize a corpus or queries parquet into TOKENS, one row group per batch, same order.

    A titled passage is the pair (title, text), `[CLS] title [SEP] text [SEP]` (titles
    "pair", the release's), or the one text `title text` (titles "space", as BEIR and MTEB
    feed sentence-transformers models); None takes the model directory's own choice
    (lead.json), else "pair". A model with prompts (lead.json's query_prompt or
    passage_prompt) gets its prompt put before each text, as sentence-transformers puts it
    before the whole input (before the title of a pair). Returns the number of rows written.
    """
    input_path = Path(input_path)
    schema, id_column = _input_kind(input_path)
    limit = position_limit(read_json(Path(tokenizer_dir) / "config.json"))
    if limit is not None and max_length > limit:
        raise ConfigError(f"max_length {max_length}: {tokenizer_dir} takes at most {limit} "
                          "tokens (its position embeddings); longer rows could not be encoded")
    encoder = batch_encoder(tokenizer_dir, max_length)
    spec = _model_spec(Path(tokenizer_dir))
    titles = titles or (spec.titles if spec else "pair")
    if titles not in TITLES:
        raise ConfigError(f"titles {titles!r}: expected one of {TITLES}")
    prompt = spec.prompt("passage" if schema is schemas.CORPUS else "query") if spec else ""
    settings = {"max_length": max_length, "tokenizer_sha256": encoder.fingerprint,
                "titles": titles, "prompt": prompt}
    # Texts are cut to MAX_CHARS_PER_TOKEN characters a token before tokenizing, so that a
    # 50 MB passage costs what its first tokens do: the truncated tokens change only for text
    # whose first max_length tokens average more (long runs of blanks, words of 100+ letters).
    bound = max_length * MAX_CHARS_PER_TOKEN
    rows = 0
    with parquet_writer(out_path, schemas.TOKENS, provenance("tokenize", settings)) as writer:
        for batch in iter_batches(input_path, schema, batch_size=batch_size):
            texts, titles_of = _batch_columns(input_path, batch, id_column)
            texts = [text[:bound] for text in texts]
            if titles_of is not None:
                titles_of = [title[:bound] for title in titles_of]
            if titles == "space" and titles_of is not None:
                texts = [f"{t} {x}" if t else x for t, x in zip(titles_of, texts, strict=True)]
                titles_of = None
            if prompt and titles_of is not None:
                titles_of = [prompt + t if t else t for t in titles_of]
                texts = [x if t else prompt + x for t, x in zip(titles_of, texts, strict=True)]
            elif prompt:
                texts = [prompt + x for x in texts]
            ids = batch.column(id_column)
            writer.write_table(pa.table([ids, encoder.encode(texts, titles_of)], schemas.TOKENS))
            rows += batch.num_rows
    return rows


def _model_spec(model_dir: Path) -> EncoderSpec | None:
    """The description of a lead model directory (lead.json); None for a bare tokenizer."""
    return EncoderSpec.read(model_dir) if (model_dir / LEAD_CONFIG).is_file() else None


def _training_texts(corpus_path: Path, batch_size: int = 10_000) -> Iterator[list[str]]:
    for batch in iter_batches(corpus_path, schemas.CORPUS, batch_size, ["title", "text"]):
        titles = [title for title in pc.fill_null(batch.column("title"), "").to_pylist() if title]
        yield titles + pc.fill_null(batch.column("text"), "").to_pylist()


def _untrained_tokenizer(type: str, lowercase: bool) -> Tokenizer:
    """The normalise/split/decode pipeline of one tokenizer type."""
    from tokenizers import decoders, models, normalizers, pre_tokenizers

    casing = [normalizers.Lowercase()] if lowercase else []
    if type == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
    elif type == "bpe":
        # Byte-level: every string is representable, so [UNK] never appears.
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), *casing])
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
    elif type == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), *casing])
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
    else:
        raise ConfigError(f"tokenizer type {type!r}: expected bpe, wordpiece or unigram")
    return tokenizer


def _continuation_tokens(tokenizer: Tokenizer, corpus_path: Path) -> list[str]:
    """'##c' for every character of the normalised corpus, in character order.

    The WordPiece trainer creates these tokens in hash-map order, which changes their ids and,
    through tie-breaking, the merges from one run to the next (huggingface/tokenizers#1794).
    Registering them up front, sorted, makes training deterministic.
    """
    chars: set[str] = set()
    for texts in _training_texts(corpus_path):
        for text in texts:
            chars.update(tokenizer.normalizer.normalize_str(text))
    return [f"##{char}" for char in sorted(chars) if not char.isspace()]


def _train(tokenizer: Tokenizer, type: str, vocab_size: int, corpus_path: Path) -> Tokenizer:
    from tokenizers import pre_tokenizers, trainers

    special = list(SPECIAL_TOKENS)
    if type == "wordpiece":
        continuation = _continuation_tokens(tokenizer, corpus_path)
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=special + continuation, show_progress=False
        )
    elif type == "bpe":
        alphabet = len(pre_tokenizers.ByteLevel.alphabet()) + len(special)
        if vocab_size < alphabet:
            raise ConfigError(
                f"tokenizer vocab_size {vocab_size} is below the {alphabet} tokens every "
                "byte-level BPE holds (256 bytes and the special tokens)"
            )
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=special,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=special, unk_token="[UNK]", show_progress=False
        )
    rows = pq.ParquetFile(corpus_path).metadata.num_rows
    tokenizer.train_from_iterator(_training_texts(corpus_path), trainer, length=rows)
    state = json.loads(tokenizer.to_str())
    # Only the BERT-style tokens are special; registered continuations are ordinary pieces.
    state["added_tokens"] = [t for t in state["added_tokens"] if t["content"] in special]
    if type == "unigram":
        vocab = _canonical_unigram_vocab(state["model"]["vocab"])
        state["model"]["vocab"] = vocab
        state["model"]["unk_id"] = [piece for piece, _ in vocab].index("[UNK]")
    return Tokenizer.from_str(json.dumps(state))


def _canonical_unigram_vocab(vocab: list[list]) -> list[list]:
    """Unigram pieces in an order and precision that do not depend on hash-map order.

    The Unigram trainer sums floats over words in hash-map order (scores differ in the last
    bits from run to run) and gives the characters it adds back at the end scores of
    `min + k * 1e-4` in hash-set order. Rounding the scores, handing those characters their
    scores in character order, and sorting by (score, piece) gives the same file every time.
    """
    special = [entry for entry in vocab if entry[0] in SPECIAL_TOKENS]
    scores = {piece: score for piece, score in vocab if piece not in SPECIAL_TOKENS}
    lowest = min(scores.values())
    added_back: list[tuple[str, float]] = []
    for step in itertools.count():
        target = lowest + step * _ADDED_CHAR_STEP
        matches = [p for p, s in scores.items() if len(p) == 1 and abs(s - target) < 1e-9]
        if not matches:
            break
        added_back.extend((piece, scores[piece]) for piece in matches)
    ordered_scores = sorted(score for _, score in added_back)
    for piece, score in zip(sorted(piece for piece, _ in added_back), ordered_scores, strict=True):
        scores[piece] = score
    rounded = sorted((-round(score, _SCORE_DECIMALS), piece) for piece, score in scores.items())
    return special + [[piece, -negative] for negative, piece in rounded]


def resolve_settings(settings: Mapping[str, Any] | None) -> dict:
    """A `model.tokenizer` section with its schema defaults (it is no top-level section)."""
    from lead.config import validate

    section = {"type": "object", "properties": {"tokenizer": {"$ref": "#/definitions/tokenizer"}}}
    return validate({"tokenizer": dict(settings or {})}, section)["tokenizer"]


def train_tokenizer(
    corpus_path: str | Path, out_dir: str | Path, *, type: str, vocab_size: int, lowercase: bool
) -> None:
    """Train a tokenizer on the corpus (titles and texts, streamed) and save it as a Hugging
    Face directory that `AutoTokenizer.from_pretrained(out_dir)` loads.

    The same corpus and settings give byte-identical files: the `tokenizers` trainers follow
    hash-map order, which `_train` neutralises.
    """
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    corpus_path = Path(corpus_path)
    if not corpus_path.exists():
        raise DataError(corpus_path, None, "file not found")
    tokenizer = _train(_untrained_tokenizer(type, lowercase), type, vocab_size, corpus_path)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=MODEL_MAX_LENGTH,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    with atomic_path(out_dir, directory=True, made_by="train-tokenizer") as tmp:
        wrapped.save_pretrained(tmp)
