"""lead.data.bm25: batched, threaded BM25 retrieval gives bm25s's per-query results exactly."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from lead import schemas
from lead.data import bm25
from lead.io import iter_batches as bm25_iter_batches
from lead.io import write_table


def reference_top_k(index, tokens: list[int], k: int) -> np.ndarray:
    """The per-query path as it was: bm25s's dense scores over the whole corpus, then the k
    best positive ones, score descending then corpus index ascending."""
    scores = index.retriever.get_scores(tokens)
    hits = np.flatnonzero(scores > 0)
    hit_scores = scores[hits]
    if len(hits) > k:
        kth = np.partition(hit_scores, len(hits) - k)[len(hits) - k]
        keep = hit_scores >= kth
        hits, hit_scores = hits[keep], hit_scores[keep]
    return hits[np.lexsort((hits, -hit_scores))[:k]]


@pytest.fixture(scope="module")
def tied_index(tmp_path_factory):
    """2,000 passages over 40 words: many share their length and counts (hence their scores,
    for ties), and queries of up to 9 tokens make the order of additions matter."""
    rng = np.random.default_rng(7)
    words = [f"w{i}" for i in range(40)]
    rows = [(f"d{i}", "", " ".join(rng.choice(words, size=rng.integers(1, 30))))
            for i in range(2000)]
    rows += [("copy-a", "", "w1 w2"), ("copy-b", "", "w1 w2"), ("empty", "", "the of")]
    path = tmp_path_factory.mktemp("bm25") / "corpus.parquet"
    columns = dict(zip(schemas.CORPUS.names, zip(*rows, strict=True), strict=True))
    write_table(pa.table(columns, schemas.CORPUS), path)
    queries = [" ".join(rng.choice(words, size=rng.integers(1, 10))) for _ in range(300)]
    queries += ["w1 w2", "w1 w1 w2", "quantum", "", "the w3 w3 w3"]
    index = bm25.build_index(path, k1=1.2, b=0.75)
    return index, index.tokenize(queries)


@pytest.mark.parametrize("k", [1, 3, 17, 500])
def test_batched_bm25_gives_the_per_query_results_exactly(tied_index, monkeypatch, k):
    index, queries = tied_index
    expected = [reference_top_k(index, tokens, k) if tokens else np.empty(0, np.int64)
                for tokens in queries]
    assert sum(len(e) for e in expected) > 0
    # The fixture exercises the tie-breaking: in many queries, equal scores among the k + 1
    # best decide which passages are retrieved, or their order.
    best = [np.sort(scores[scores > 0])[::-1][: k + 1]
            for scores in (index.retriever.get_scores(t) for t in queries if t)]
    assert sum(len(np.unique(b)) < len(b) for b in best) >= 5
    for block, chunk, threads in ((bm25.BLOCK, bm25.CHUNK, 1), (7, 5, 2), (64, 1, 3)):
        monkeypatch.setattr(bm25, "BLOCK", block)  # several accumulator blocks per query
        monkeypatch.setattr(bm25, "CHUNK", chunk)  # several chunks per thread
        found = list(bm25.top_k(index, queries, k, threads=threads))
        assert len(found) == len(queries)
        for tokens, got, want in zip(queries, found, expected, strict=True):
            assert got.tolist() == want.tolist(), (tokens, block, chunk, threads)


def test_a_depth_past_the_corpus_costs_what_the_corpus_does(tied_index):
    """negatives.retrieve_depth 10^9 used to allocate 256 x 10^9 int32 per chunk of queries
    (a MemoryError naming 596 GiB): no query can have more than the corpus."""
    index, queries = tied_index
    num_docs = int(index.retriever.scores["num_docs"])
    deep = list(bm25.top_k(index, queries, 10**9, threads=1))
    whole = list(bm25.top_k(index, queries, num_docs, threads=1))
    assert all(np.array_equal(a, b) for a, b in zip(deep, whole, strict=True))


def test_the_index_built_batch_by_batch_is_bm25s_own_to_the_bit(tmp_path, monkeypatch):
    """build_index streams the corpus (bm25s's BM25.index holds every token as a Python int,
    20 GB at MS MARCO's size): across batches, with repeated words, titles and an empty
    passage, its postings and scores equal bm25s's index of the same tokens exactly."""
    import bm25s
    from bm25s.tokenization import Tokenizer

    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(300)] + ["the", "of"]
    rows = [(f"d{i}", "" if i % 3 else f"title w{i % 7}",
             " ".join(rng.choice(words, size=rng.integers(0, 60)))) for i in range(1000)]
    path = tmp_path / "corpus.parquet"
    columns = dict(zip(schemas.CORPUS.names, zip(*rows, strict=True), strict=True))
    write_table(pa.table(columns, schemas.CORPUS), path)
    monkeypatch.setattr(bm25, "iter_batches",
                        lambda p, schema: bm25_iter_batches(p, schema, batch_size=97))
    index = bm25.build_index(path, k1=0.9, b=0.4)

    tokenizer = Tokenizer(lower=True, stopwords=bm25.STOPWORDS, stemmer=None)
    texts = [f"{title} {text}" for _, title, text in rows]
    tokens = tokenizer.tokenize(texts, update_vocab=True, return_as="ids",
                                show_progress=False, allow_empty=False)
    reference = bm25s.BM25(k1=0.9, b=0.4)
    reference.index((tokens, tokenizer.get_vocab_dict()), create_empty_token=False,
                    show_progress=False)
    assert index.retriever.vocab_dict == reference.vocab_dict
    assert index.retriever.scores["num_docs"] == reference.scores["num_docs"] == 1000
    for name in ("indptr", "indices", "data"):
        assert np.array_equal(index.retriever.scores[name], reference.scores[name]), name
    assert index.doc_ids.tolist() == [doc_id for doc_id, _, _ in rows]
