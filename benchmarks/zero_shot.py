"""Zero-shot scores through lead against sentence-transformers' own, on the same texts.

The proof that lead scores a checkpoint the way it was trained: all-MiniLM-L6-v2 (or any
model) through `lead evaluate-model` (init, tokenize, encode, faiss search, trec_eval-exact
scoring) and through sentence-transformers' encode + exact inner-product search + pytrec_eval,
side by side, on a BEIR collection (default: SciFact in ../shared/data, if present) and on the
embedded default's test split. sentence-transformers gets what BEIR and MTEB feed it: the
text `title text`, truncated at the model's max_seq_length.

    python benchmarks/zero_shot.py [--model package:minilm] [--collection DIR] [--no-embedded]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pyarrow.parquet as pq

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def theirs(model_dir: Path, data: Path, split: str, depth: int) -> float:
    """nDCG@10 of sentence-transformers' own encode, exact search and pytrec_eval."""
    import pytrec_eval
    from sentence_transformers import SentenceTransformer

    corpus = pq.read_table(data / "corpus.parquet").to_pylist()
    queries = pq.read_table(data / "queries" / f"{split}.parquet").to_pylist()
    qrels = pq.read_table(data / "qrels" / f"{split}.parquet").to_pylist()
    model = SentenceTransformer(str(model_dir), device="cpu")
    texts = [f"{d['title']} {d['text']}" if d["title"] else d["text"] for d in corpus]
    docs = model.encode(texts, batch_size=128, convert_to_numpy=True)
    query_vectors = model.encode([q["text"] for q in queries], batch_size=128,
                                 convert_to_numpy=True)
    scores = query_vectors @ docs.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    run = {q["query_id"]: {corpus[j]["doc_id"]: float(depth - r) for r, j in enumerate(row)}
           for q, row in zip(queries, top, strict=True)}
    judged: dict = {}
    for row in qrels:
        judged.setdefault(row["query_id"], {})[row["doc_id"]] = row["relevance"]
    values = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10"}).evaluate(run)
    return float(np.mean([values.get(q, {"ndcg_cut_10": 0.0})["ndcg_cut_10"] for q in judged]))


def compare(name: str, model: str, dataset: dict, split: str, work: Path) -> None:
    from lead.data.sources import build_dataset
    from lead.evaluation.evaluate_model import evaluate_model
    from lead.modeling.spec import source_dir

    started = time.perf_counter()
    out = evaluate_model(model, dataset, work / f"{name}-lead", split=split,
                         measures=["nDCG@10"], search={"depth": 100})
    lead_seconds = time.perf_counter() - started
    ours = pq.read_table(out / "summary.parquet").to_pylist()[0]["value"]
    data = work / f"{name}-data"
    build_dataset(dataset, data, work / "downloads")
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
    parser.add_argument("--no-embedded", action="store_true",
                        help="skip the embedded default's test split")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if (args.collection / "corpus.jsonl").is_file():
            compare(args.collection.name, args.model,
                    {"source": "beir", "beir": {"path": str(args.collection),
                                                "splits": {"test": "test"}},
                     "eval_splits": ["test"]}, "test", work)
        else:
            print(f"{args.collection}: no BEIR collection there; skipping it")
        if not args.no_embedded:
            compare("embedded", args.model, {"source": "embedded"}, "test", work)


if __name__ == "__main__":
    main()
