"""`evaluate-model` (lead.evaluation.evaluate_model): any model scored as its own library scores
it, in an output folder that says what it holds; and it refuses a hostile split name."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hostile import HOSTILE_NAMES, refused
from repo import FIXTURES
from repo import TINY_DATA as TINY
from tiny_models import RANDOM, make_model, make_tokenizer, spread_weights

from lead.__main__ import main
from lead.io import read_provenance
from lead.modeling.init import init_model

PROMPTS = {"query": "query: ", "document": "passage: "}
# A 2-block, 32-wide BERT: its Dense module maps 32 -> 24.
ARCHITECTURE = {**RANDOM["architecture"], "num_hidden_layers": 2, "hidden_size": 32,
                "num_attention_heads": 2, "intermediate_size": 64}
COLLECTION = ("--corpus", TINY / "collection.tsv", "--queries", TINY / "queries.test.tsv",
              "--qrels", TINY / "qrels.test.tsv")
BEIR = FIXTURES / "data" / "beir"  # titled passages


@pytest.fixture(scope="module")
def folders(tmp_path_factory, one_torch_thread) -> dict[str, Path]:
    """A sentence-transformers folder saved by sentence-transformers itself (a tiny random BERT,
    mean pooling, a Tanh Dense module 32 -> 24, Normalize, and query and document prompts), and
    a plain Hugging Face folder of the same BERT (no sentence-transformers files). Weights are
    spread so that scores differ by more than float noise."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st

    root = tmp_path_factory.mktemp("folders")
    tokenizer = make_tokenizer(root / "tokenizer")
    backbone = init_model({**RANDOM, "architecture": ARCHITECTURE}, root / "backbone",
                          tokenizer_dir=tokenizer, seed=4)
    spread_weights(backbone, seed=3)
    transformer = st.Transformer(str(backbone), max_seq_length=48)
    torch.manual_seed(0)
    modules = [transformer, st.Pooling(transformer.get_embedding_dimension(), "mean"),
               st.Dense(32, 24, activation_function=torch.nn.Tanh()), st.Normalize()]
    SentenceTransformer(modules=modules, device="cpu", prompts=PROMPTS).save(
        str(root / "st-model"))
    plain = root / "plain-model"
    plain.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(backbone / name, plain / name)
    return {"st": root / "st-model", "plain": plain}


@pytest.fixture(scope="module")
def scored(folders, tmp_path_factory) -> Path:
    """`evaluate-model` of the sentence-transformers folder on the tiny collection."""
    out = tmp_path_factory.mktemp("scored") / "st-scored"
    assert main([str(arg) for arg in ["evaluate-model", "--model", folders["st"], *COLLECTION,
                                      "--out", out]]) == 0
    return out


def _texts(collection: str = "tiny") -> tuple[list[str], list[str], list[str], list[str]]:
    """Query ids and texts, document ids and texts of a collection as BEIR and MTEB feed
    sentence-transformers: a titled passage is `title text`. `tiny`: the tiny TSV collection
    (untitled); `beir`: the BEIR fixture (titled passages, the test split's queries)."""
    if collection == "tiny":
        corpus, queries = ([line.split("\t") for line in path.read_text("utf-8").splitlines()]
                           for path in (TINY / "collection.tsv", TINY / "queries.test.tsv"))
        return ([q[0] for q in queries], [q[1] for q in queries], [d[0] for d in corpus],
                [d[-1] for d in corpus])
    corpus, queries = ([json.loads(line) for line in (BEIR / name).read_text("utf-8").splitlines()]
                       for name in ("corpus.jsonl", "queries.jsonl"))
    judged = {line.split("\t")[0]
              for line in (BEIR / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    queries = [q for q in queries if q["_id"] in judged]
    return ([q["_id"] for q in queries], [q["text"] for q in queries],
            [d["_id"] for d in corpus],
            [f"{d['title']} {d['text']}" if d["title"] else d["text"] for d in corpus])


def _their_scores(model, collection: str = "tiny") -> tuple[list[str], list[str], np.ndarray]:
    """Query ids, document ids and every score, from sentence-transformers' own encode_query,
    encode_document and similarity (exact search)."""
    query_ids, query_texts, doc_ids, doc_texts = _texts(collection)
    documents = model.encode_document(doc_texts, convert_to_tensor=True)
    asked = model.encode_query(query_texts, convert_to_tensor=True)
    return query_ids, doc_ids, model.similarity(asked, documents).numpy()


def _assert_same_ranking(run_path: Path, query_ids, doc_ids, scores, atol=1e-5) -> None:
    """Each query's ranking is sentence-transformers' own up to float ties: their scores, read
    in lead's order, are their scores sorted; lead's own scores are theirs."""
    run = pq.read_table(run_path).to_pandas()
    column = {doc_id: j for j, doc_id in enumerate(doc_ids)}
    for i, query_id in enumerate(query_ids):
        ours = run[run.query_id == query_id].sort_values("rank")
        assert sorted(ours.doc_id) == sorted(doc_ids), query_id  # every passage, once
        theirs = scores[i, [column[d] for d in ours.doc_id]]
        np.testing.assert_allclose(theirs, np.sort(scores[i])[::-1], rtol=0, atol=atol,
                                   err_msg=query_id)
        np.testing.assert_allclose(ours.score.to_numpy(), theirs, rtol=0, atol=atol,
                                   err_msg=query_id)


def test_a_sentence_transformers_model_ranks_as_sentence_transformers_ranks_it(folders, scored):
    """Dense module, Normalize, prompts and max length all taken from the folder: every query's
    passages come out in the order encode_query / encode_document and exact search give."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folders["st"]), device="cpu")
    assert model.prompts["query"] == "query: " and model.prompts["document"] == "passage: "
    _assert_same_ranking(scored / "run.parquet", *_their_scores(model))


def test_lead_embeds_a_sentence_transformers_model_as_sentence_transformers_does(folders,
                                                                                 tmp_path):
    """The stages evaluate-model chains (init, tokenize, encode) give sentence-transformers'
    own query and document embeddings, Dense module and prompts included."""
    from sentence_transformers import SentenceTransformer

    from lead.config import resolve
    from lead.data.sources import build_dataset
    from lead.retrieval.encode import encode_file
    from lead.tokenization import tokenize_file

    build_dataset({"source": "trec", "eval_splits": ["test"],
                   "local": {"corpus": str(TINY / "collection.tsv"),
                             "queries": {"test": str(TINY / "queries.test.tsv")},
                             "qrels": {"test": str(TINY / "qrels.test.tsv")}}}, tmp_path / "data")
    model_dir = init_model({"init": str(folders["st"]), "query_max_length": 48,
                            "passage_max_length": 48}, tmp_path / "model")
    theirs = SentenceTransformer(str(folders["st"]), device="cpu")
    _, query_texts, _, doc_texts = _texts()
    for role, source, texts, encode in (
        ("passage", tmp_path / "data" / "corpus.parquet", doc_texts, theirs.encode_document),
        ("query", tmp_path / "data" / "queries" / "test.parquet", query_texts,
         theirs.encode_query),
    ):
        tokenize_file(model_dir, source, tmp_path / f"{role}.tokens.parquet", max_length=48)
        encode_file(model_dir, tmp_path / f"{role}.tokens.parquet", role,
                    tmp_path / f"{role}.parquet", resolve("encode", {}))
        ours = np.array(pq.read_table(tmp_path / f"{role}.parquet")["embedding"].to_pylist())
        assert ours.shape == (len(texts), 24)
        np.testing.assert_allclose(ours, encode(texts), rtol=0, atol=1e-5, err_msg=role)


def test_a_plain_hugging_face_folder_ranks_as_sentence_transformers_defaults_rank_it(
    folders, tmp_path, caplog
):
    """No sentence-transformers files: mean pooling and cosine, what SentenceTransformer(folder)
    builds for it, with a warning naming the folder; --pooling cls --similarity dot change it
    to what a sentence-transformers model built with CLS pooling and dot product gives."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st

    plain = folders["plain"]
    with caplog.at_level(logging.WARNING, logger="lead"):
        assert main([str(arg) for arg in ["evaluate-model", "--model", plain, *COLLECTION,
                                          "--out", tmp_path / "defaults"]]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(plain) in w and "no sentence-transformers files" in w for w in warnings)
    model = SentenceTransformer(str(plain), device="cpu")
    assert model.similarity_fn_name == "cosine"
    _assert_same_ranking(tmp_path / "defaults" / "run.parquet", *_their_scores(model))
    # titled passages too: fed as `title text`, as BEIR and MTEB feed sentence-transformers
    assert main([str(arg) for arg in ["evaluate-model", "--model", plain, "--collection", BEIR,
                                      "--out", tmp_path / "titled"]]) == 0
    _assert_same_ranking(tmp_path / "titled" / "run.parquet", *_their_scores(model, "beir"))

    assert main([str(arg) for arg in ["evaluate-model", "--model", plain, *COLLECTION,
                                      "--pooling", "cls", "--similarity", "dot",
                                      "--out", tmp_path / "cls-dot"]]) == 0
    transformer = st.Transformer(str(plain))
    cls_dot = SentenceTransformer(
        modules=[transformer, st.Pooling(transformer.get_embedding_dimension(), "cls")],
        device="cpu", similarity_fn_name="dot")
    query_ids, doc_ids, scores = _their_scores(cls_dot)
    _assert_same_ranking(tmp_path / "cls-dot" / "run.parquet", query_ids, doc_ids, scores,
                         atol=1e-5 * float(np.abs(scores).max()))
    described = json.loads((tmp_path / "cls-dot" / "model.json").read_text())["description"]
    assert (described["pooling"], described["similarity"]) == ("cls", "dot")


def test_prompts_given_on_the_command_line_replace_the_models_own(folders, tmp_path):
    """--query-prompt "" drops the folder's query prompt, --passage-prompt replaces its
    document prompt: the ranking is sentence-transformers' with those prompts."""
    from sentence_transformers import SentenceTransformer

    assert main([str(arg) for arg in ["evaluate-model", "--model", folders["st"], *COLLECTION,
                                      "--query-prompt", "", "--passage-prompt", "document: ",
                                      "--out", tmp_path / "prompted"]]) == 0
    model = SentenceTransformer(str(folders["st"]), device="cpu",
                                prompts={"query": "", "document": "document: "})
    _assert_same_ranking(tmp_path / "prompted" / "run.parquet", *_their_scores(model))
    described = json.loads((tmp_path / "prompted" / "model.json").read_text())["description"]
    assert (described["query_prompt"], described["passage_prompt"]) == ("", "document: ")


def test_a_lead_directory_keeps_its_own_lengths_when_its_scoring_is_overridden(tmp_path):
    """Overriding the pooling rebuilds a lead directory; its query and passage lengths stay
    those of its lead.json."""
    model = make_model(tmp_path / "lead-model", make_tokenizer(tmp_path / "tokenizer"),
                       query_max_length=20, passage_max_length=40)
    assert main([str(arg) for arg in ["evaluate-model", "--model", model, *COLLECTION,
                                      "--pooling", "mean", "--out", tmp_path / "scored"]]) == 0
    described = json.loads((tmp_path / "scored" / "model.json").read_text())["description"]
    assert (described["pooling"], described["query_max_length"],
            described["passage_max_length"]) == ("mean", 20, 40)

def test_the_output_folder_says_what_it_holds_and_never_names_its_temporary(folders, scored):
    """model.json (the model as given and its resolved description) and arguments.json; no
    parquet's provenance nor any text file names the temporary folder it was built in; the
    TREC run is tagged with the model's name."""
    model = json.loads((scored / "model.json").read_text())
    assert model["model"] == str(folders["st"])
    described = model["description"]
    assert (described["pooling"], described["similarity"], described["query_prompt"],
            described["passage_prompt"]) == ("mean", "cosine", "query: ", "passage: ")
    assert described["dense"] == [{"in_features": 32, "out_features": 24, "bias": True,
                                   "activation": "Tanh"}]
    assert (described["query_max_length"], described["passage_max_length"]) == (48, 48)
    arguments = json.loads((scored / "arguments.json").read_text())
    assert arguments["model"] == str(folders["st"]) and arguments["out"] == str(scored)
    assert arguments["corpus"] == str(TINY / "collection.tsv")
    temporary = f".{scored.name}.tmp-"
    parquets = sorted(scored.glob("*.parquet"))
    assert {p.name for p in parquets} >= {"run.parquet", "summary.parquet", "per_query.parquet"}
    for path in parquets:
        assert temporary not in json.dumps(read_provenance(path)), path.name
    assert read_provenance(scored / "summary.parquet")["run"] == str(scored / "run.parquet")
    assert read_provenance(scored / "summary.parquet")["qrels"] == (
        f"{TINY / 'qrels.test.tsv'} (test)")
    texts = [p for p in scored.rglob("*") if p.is_file() and p.suffix != ".parquet"]
    assert {"model.json", "arguments.json", "run.trec", "summary.md"} <= {p.name for p in texts}
    for path in texts:
        assert temporary not in path.read_text(encoding="utf-8"), path.name
    assert not [p for p in scored.rglob("*") if p.is_dir()]  # the work folder is gone
    tags = {line.split()[5] for line in (scored / "run.trec").read_text().splitlines()}
    assert tags == {"st-model"}



def test_the_provenance_names_the_judgments_of_any_collection():
    """evaluate_model takes any dataset section (benchmarks/zero_shot.py passes the embedded
    default's): the judgments are named by their BEIR folder, qrels file or source."""
    from lead.evaluation.evaluate_model import _judgments

    assert _judgments({"source": "embedded"}, "test") == "embedded"
    assert _judgments({"source": "beir", "beir": {"path": "/data/scifact"}}, "test") == (
        "/data/scifact")
    assert _judgments({"source": "tsv", "local": {"corpus": "c.tsv", "qrels": {
        "dev": "qrels.dev.tsv"}}}, "dev") == "qrels.dev.tsv"

# Hostile input: each refusal is one line naming the culprit, and changes no file (hostile.py).


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_evaluate_model_refuses_a_hostile_split_name(capsys, work, roots, artifacts, name):
    refused(capsys, roots, "evaluate-model", "--model", artifacts / "model",
            "--corpus", TINY / "collection.tsv", "--queries", TINY / "queries.test.tsv",
            "--qrels", TINY / "qrels.test.tsv", "--split", name, "--out", work / "scored",
            expect=(repr(name),))
