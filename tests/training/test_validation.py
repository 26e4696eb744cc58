"""Dev evaluation in training (lead.training.validation): the pool, every model kind."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from lead.training.validation import candidate_pool


def test_dev_pool_is_judged_passages_plus_a_seeded_sample():
    judged = np.array([3, 50, 97])
    pool = candidate_pool(100, judged, 10, seed=1)
    assert len(pool) == 10 and set(judged) <= set(pool.tolist())
    assert np.array_equal(pool, candidate_pool(100, judged, 10, seed=1))
    assert np.array_equal(candidate_pool(8, judged[:1], 10, seed=1), np.arange(8))


def _dev_set(world, pool_size=40):
    from lead.training.validation import load_dev_set

    return load_dev_set(world["student_dev_queries_tokens"], world["dev_qrels"],
                        world["student_corpus_tokens"], pool_size, seed=3)


def _scoring(batch_size=7, rank=0, world_size=1):
    from lead.training.validation import Scoring

    return Scoring(torch.device("cpu"), contextlib.nullcontext, batch_size, rank, world_size)


def test_dev_evaluation_ranks_the_pool_as_brute_force_does(world):
    from lead.evaluation.evaluate import evaluate_run
    from lead.modeling.encoders import collate, load_encoder
    from lead.training.validation import dev_metrics

    encoder = load_encoder(world["student"])
    dev = _dev_set(world)
    measures = ["RR@10", "R@20"]
    got = dev_metrics(encoder, dev, depth=20, measures=measures, scoring=_scoring(), seed=3)
    with torch.no_grad():
        def embed(encode, table, rows):
            return encode(collate(table.token_ids(rows), encoder.pad_id)).final

        query_rows = np.array(sorted(dev.judged))
        scores = (embed(encoder.encode_query, dev.queries, query_rows)
                  @ embed(encoder.encode_passage, dev.corpus, dev.pool).T).numpy()
    run = [(dev.queries.ids[int(q)].as_py(), dev.corpus.ids[int(p)].as_py(), float(s))
           for q, row in zip(query_rows, scores, strict=True)
           for p, s in zip(dev.pool, row, strict=True)]
    import pandas as pd

    summary, _ = evaluate_run(pd.DataFrame(run, columns=["query_id", "doc_id", "score"]),
                              dev.qrels, measures=measures)
    assert got == pytest.approx(dict(zip(summary["measure"], summary["value"], strict=True)),
                                abs=1e-9)
    assert len(dev.pool) == 40 and set(dev.qrels["doc_id"]) <= {
        dev.corpus.ids[int(p)].as_py() for p in dev.pool}


@pytest.mark.parametrize("kind", ["colbert", "cross"])
def test_dev_evaluation_scores_colbert_and_cross_encoder_models(world, tmp_path, kind):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lead.modeling.encoders import build_encoder
    from lead.modeling.spec import EncoderSpec
    from lead.training.validation import dev_metrics

    tokenizer = AutoTokenizer.from_pretrained(world["student"])
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    spec = EncoderSpec(kind=kind, colbert_dim=8, colbert_markers=False)  # a trained vocabulary
    encoder = build_encoder(spec, BertModel(config), tokenizer)
    metrics = dev_metrics(encoder, _dev_set(world), depth=12, measures=["RR@10", "R@12"],
                             scoring=_scoring(), seed=3)
    assert set(metrics) == {"RR@10", "R@12"} and all(0 <= v <= 1 for v in metrics.values())
    if kind == "cross":  # every query reranks its judged passages among its 12 candidates
        assert metrics["R@12"] == 1.0
