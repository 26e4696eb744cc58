"""Score any model on any collection from raw text, with the pipeline's own stages.

The model is a lead model directory, a sentence-transformers or Hugging Face folder, a
packaged checkpoint (`package:minilm`) or a hub id from the local Hugging Face cache; anything
but a lead directory is first materialised the way `init-model` does, so it is scored the way
its own library scores it (pooling, similarity, dense layers and prompts inherited; lengths
and titled passages as sentence-transformers reads them). The collection is a BEIR directory or a
corpus, queries and qrels file. Then, exactly as the workflow's rules do: data, tokenize,
encode, search, evaluate. The output folder gets run.parquet, run.trec (tagged with the
model's name), summary.parquet, per_query.parquet and summary.md, and what says what they
are: model.json (the model and its resolved description: pooling, similarity, prompts,
lengths, dense layers) and arguments.json (the command's arguments). It is built aside and
renamed into place at the end; nothing in it names the temporary folder it was built in.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lead.config import resolve
from lead.errors import ConfigError
from lead.io import atomic_path

log = logging.getLogger(__name__)


def collection_settings(
    collection: Path | None, corpus: Path | None, queries: Path | None, qrels: Path | None,
    split: str,
) -> dict:
    """The `dataset` section of a BEIR directory, or of three files (qrels in TREC form)."""
    if collection is not None:
        if corpus or queries or qrels:
            raise ConfigError("give --collection (a BEIR directory) or --corpus, --queries and "
                              "--qrels, not both")
        if not (collection / "corpus.jsonl").is_file():
            raise ConfigError(f"--collection {collection}: not a BEIR directory "
                              f"({collection / 'corpus.jsonl'} not found)")
        return {"source": "beir", "beir": {"path": str(collection), "splits": {split: split}},
                "eval_splits": [split]}
    if not (corpus and queries and qrels):
        raise ConfigError("give --collection (a BEIR directory) or all of --corpus, --queries "
                          "and --qrels")
    return {"source": "trec", "eval_splits": [split],
            "local": {"corpus": str(corpus), "queries": {split: str(queries)},
                      "qrels": {split: str(qrels)}}}


def evaluate_model(
    model: str,
    dataset: dict,
    out: Path,
    *,
    split: str,
    measures: Sequence[str],
    relevance_level: int = 1,
    encode: dict | None = None,
    search: dict | None = None,
    scoring: dict | None = None,
    arguments: dict | None = None,
) -> Path:
    """Score `model` on the collection `dataset` describes; returns the output folder.

    `scoring` overrides what the model would inherit (pooling, similarity, query_prompt,
    passage_prompt, query_max_length, passage_max_length: keys of a model's config section).
    The folder records the model's resolved description (model.json) and `arguments`
    (arguments.json), so that it says what was scored and how.
    """
    from lead.data.sources import build_dataset
    from lead.evaluation.evaluate import evaluation_files
    from lead.evaluation.runs import export_trec
    from lead.modeling.init import init_model
    from lead.modeling.spec import LEAD_CONFIG, EncoderSpec
    from lead.retrieval.encode import encode_file
    from lead.retrieval.search import search as run_search
    from lead.tokenization import tokenize_file

    encode = resolve("encode", encode or {})
    search = resolve("search", search or {})
    scoring = {key: value for key, value in (scoring or {}).items() if value is not None}
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    with atomic_path(out, directory=True, made_by="evaluate-model") as tmp:
        work = tmp / "work"
        work.mkdir(parents=True)
        model_dir = Path(model)
        if scoring or not (model_dir / LEAD_CONFIG).is_file():
            log.info("materialising %s as a lead model directory", model)
            settings = {"init": model, **_library_settings(model), **scoring}
            model_dir = init_model(settings, work / "model")
        spec = EncoderSpec.read(model_dir)
        if spec.kind != "dual":
            raise ConfigError(f"{model}: a {spec.kind} model cannot encode a corpus; only dual "
                              "encoders are scored by retrieval")
        log.info("scoring %s: %s pooling, %s similarity, prompts %r / %r, %d / %d tokens", model,
                 spec.pooling, spec.similarity, spec.query_prompt, spec.passage_prompt,
                 spec.query_max_length, spec.passage_max_length)
        build_dataset(dataset, work / "data", work / "downloads")
        tokens = {
            "corpus": tokenize_file(model_dir, work / "data" / "corpus.parquet",
                                    work / "corpus.tokens.parquet",
                                    max_length=spec.passage_max_length),
            "queries": tokenize_file(model_dir, work / "data" / "queries" / f"{split}.parquet",
                                     work / "queries.tokens.parquet",
                                     max_length=spec.query_max_length),
        }
        log.info("tokenized %d passages and %d queries", tokens["corpus"], tokens["queries"])
        encode_file(model_dir, work / "corpus.tokens.parquet", "passage",
                    work / "corpus.embeddings.parquet", encode)
        encode_file(model_dir, work / "queries.tokens.parquet", "query",
                    work / "queries.embeddings.parquet", encode)
        run_search(work / "queries.embeddings.parquet", [work / "corpus.embeddings.parquet"],
                   tmp / "run.parquet", search)
        export_trec(tmp / "run.parquet", tmp / "run.trec", run_tag(model))
        evaluation_files(tmp, tmp / "run.parquet", work / "data" / "qrels" / f"{split}.parquet",
                         relevance_level=relevance_level, measures=list(measures),
                         recorded={"run": str(out / "run.parquet"),
                                   "qrels": f"{_judgments(dataset, split)} ({split})"})
        _write_json(tmp / "model.json", {"model": model, "description": asdict(spec)})
        _write_json(tmp / "arguments.json", arguments or {})
        shutil.rmtree(work)
    return out


def run_tag(model: str) -> str:
    """A TREC run tag naming the model: its folder's or package's name, one word."""
    name = model.removeprefix("package:").rstrip("/").rsplit("/", 1)[-1] or "model"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _judgments(dataset: dict, split: str) -> str:
    """Where the split's judgments come from, for the provenance: the BEIR directory, the qrels
    file, or the source's name (embedded, msmarco-passage, ...)."""
    if dataset["source"] == "beir":
        return str(dataset["beir"]["path"])
    local = dataset.get("local") or {}
    return str((local.get("qrels") or {}).get(split) or dataset["source"])


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def _library_settings(model: str) -> dict[str, Any]:
    """What the model's own library does beyond its scoring (lead.modeling.spec.scoring_of):
    the lengths it cuts queries and passages at and how it reads a titled passage.

    A lead directory: its lead.json's lengths. Anything else is read as sentence-transformers
    (6.x) reads it, a plain Hugging Face folder included (SentenceTransformer(folder)): titled
    passages as `title text` (as BEIR and MTEB feed it), cut at its Transformer's
    `max_seq_length` (sentence_bert_config.json, as older versions saved it), else at the
    tokenizer's `model_max_length` (where newer versions save it, and what a plain folder has)
    capped at the model's `max_position_embeddings`; a `query_length` or `document_length`
    there replaces it for that side.
    """
    from lead.modeling.spec import LEAD_CONFIG, EncoderSpec, read_json, source_dir

    source = source_dir(model)
    if source is None:
        return {}
    if (source / LEAD_CONFIG).is_file():
        spec = EncoderSpec.read(source)
        return {"query_max_length": spec.query_max_length,
                "passage_max_length": spec.passage_max_length}
    config = read_json(source / "sentence_bert_config.json")
    length = config.get("max_seq_length")
    if not length:
        length = _tokenizer_max_length(source)
        positions = read_json(source / "config.json").get("max_position_embeddings")
        if isinstance(positions, int) and positions != -1:
            length = min(length, positions) if length else positions
    lengths = {"query_max_length": config.get("query_length") or length,
               "passage_max_length": config.get("document_length") or length}
    return {"titles": "space", **{key: int(value) for key, value in lengths.items() if value}}


def _tokenizer_max_length(source: Path) -> int | None:
    """The tokenizer's model_max_length as transformers loads it (None when unknown)."""
    from transformers import AutoTokenizer

    try:
        length = AutoTokenizer.from_pretrained(source).model_max_length
    except Exception:  # no loadable tokenizer: init_model names the problem
        return None
    return int(length) if isinstance(length, int) and 0 < length < 1_000_000 else None
