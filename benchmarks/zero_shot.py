"""Zero-shot scores through lead against sentence-transformers' own, on the same texts.

The proof that lead scores a checkpoint the way it was trained: all-MiniLM-L6-v2 (or any
model) through `lead evaluate-model` (init, tokenize, encode, faiss search, trec_eval-exact
scoring) and through sentence-transformers' encode + exact inner-product search + pytrec_eval,
side by side, on a BEIR collection (default: SciFact in ../shared/data, if present) and on the
embedded default's test split. sentence-transformers gets what BEIR and MTEB feed it: the
text `title text`, encoded with encode_query / encode_document (which apply the model's
prompts), truncated at the model's max_seq_length, scored with the model's own similarity.

Besides the model as published, two variants of its folder, each scored with what its
library does by default: `plain`, its Transformer's weights and tokenizer alone (a Hugging
Face folder without sentence-transformers files: SentenceTransformer(folder) adds mean
pooling and scores by cosine), and `prompted`, the folder with the prompts
{"query": "query: ", "document": "passage: "} in its config_sentence_transformers.json.

    python benchmarks/zero_shot.py [--model package:minilm] [--collection DIR | --no-collection]
                                   [--no-embedded] [--no-variants]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pyarrow.parquet as pq

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
PROMPTS = {"query": "query: ", "document": "passage: "}
# The files of a sentence-transformers folder that are not its Transformer's.
ST_FILES = ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json",
            "README.md", "data_config.json")


def theirs(model_dir: Path, data: Path, split: str, depth: int) -> float:
    """nDCG@10 of sentence-transformers' own encode, exact search and pytrec_eval."""
    import pytrec_eval
    from sentence_transformers import SentenceTransformer

    corpus = pq.read_table(data / "corpus.parquet").to_pylist()
    queries = pq.read_table(data / "queries" / f"{split}.parquet").to_pylist()
    qrels = pq.read_table(data / "qrels" / f"{split}.parquet").to_pylist()
    model = SentenceTransformer(str(model_dir), device="cpu")
    texts = [f"{d['title']} {d['text']}" if d["title"] else d["text"] for d in corpus]
    docs = model.encode_document(texts, batch_size=128, convert_to_tensor=True)
    query_vectors = model.encode_query([q["text"] for q in queries], batch_size=128,
                                       convert_to_tensor=True)
    scores = model.similarity(query_vectors, docs).numpy()
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    run = {q["query_id"]: {corpus[j]["doc_id"]: float(depth - r) for r, j in enumerate(row)}
           for q, row in zip(queries, top, strict=True)}
    judged: dict = {}
    for row in qrels:
        judged.setdefault(row["query_id"], {})[row["doc_id"]] = row["relevance"]
    values = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10"}).evaluate(run)
    return float(np.mean([values.get(q, {"ndcg_cut_10": 0.0})["ndcg_cut_10"] for q in judged]))


def variants(model: str, work: Path) -> dict[str, str]:
    """The model as published, and its `plain` and `prompted` folders (see the docstring)."""
    from lead.modeling.spec import source_dir

    source = source_dir(model)
    plain = work / "plain"
    plain.mkdir()
    for path in source.iterdir():
        if path.is_file() and path.name not in ST_FILES:
            shutil.copy(path, plain / path.name)
    prompted = Path(shutil.copytree(source, work / "prompted"))
    settings_path = prompted / "config_sentence_transformers.json"
    settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
    settings_path.write_text(json.dumps({**settings, "prompts": PROMPTS}, indent=2))
    return {"published": model, "plain": str(plain), "prompted": str(prompted)}


def compare(name: str, model: str, dataset: dict, data: Path, split: str, work: Path) -> None:
    """lead's evaluate-model from raw text, then sentence-transformers on `data` (the same
    collection, built once by lead's data stage)."""
    from lead.evaluation.evaluate_model import evaluate_model
    from lead.modeling.spec import source_dir

    started = time.perf_counter()
    out = evaluate_model(model, dataset, work / f"{name.replace(' ', '-')}-lead", split=split,
                         measures=["nDCG@10"], search={"depth": 100})
    lead_seconds = time.perf_counter() - started
    ours = pq.read_table(out / "summary.parquet").to_pylist()[0]["value"]
    started = time.perf_counter()
    reference = theirs(source_dir(model), data, split, 100)
    st_seconds = time.perf_counter() - started
    print(f"{name} ({split}): nDCG@10 lead {100 * ours:.2f} ({lead_seconds:.0f} s, everything "
          f"from raw text)  sentence-transformers {100 * reference:.2f} ({st_seconds:.0f} s, "
          f"encode + search)  difference {100 * (ours - reference):+.2f} points")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="package:minilm")
    parser.add_argument("--collection", type=Path, default=SCIFACT,
                        help="a BEIR directory (default: SciFact in ../shared/data)")
    parser.add_argument("--no-collection", action="store_true",
                        help="skip the BEIR collection (SciFact takes the longest)")
    parser.add_argument("--no-embedded", action="store_true",
                        help="skip the embedded default's test split")
    parser.add_argument("--no-variants", action="store_true",
                        help="score the model as published only (not its plain and prompted "
                             "folders)")
    args = parser.parse_args()
    from lead.data.sources import build_dataset

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = {"published": args.model} if args.no_variants else variants(args.model, work)
        collections = []
        if args.no_collection:
            pass
        elif (args.collection / "corpus.jsonl").is_file():
            collections.append((args.collection.name,
                                {"source": "beir", "beir": {"path": str(args.collection),
                                                            "splits": {"test": "test"}},
                                 "eval_splits": ["test"]}))
        else:
            print(f"{args.collection}: no BEIR collection there; skipping it")
        if not args.no_embedded:
            collections.append(("embedded", {"source": "embedded"}))
        for collection, dataset in collections:
            data = work / f"{collection}-data"
            build_dataset(dataset, data, work / "downloads")
            for variant, model in models.items():
                compare(f"{collection} {variant}", model, dataset, data, "test", work)


if __name__ == "__main__":
    main()
