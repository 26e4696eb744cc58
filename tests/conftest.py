"""Shared test setup: no network, deterministic and small; fixtures of more than one folder.

Helper modules (tiny_models, training_world, hostile, data_files, run_files, data_server,
workflow_copy, repo) sit beside this file and are importable from every folder
(`pythonpath = ["tests"]` in pyproject.toml). Heavy imports stay inside the fixtures.
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module, restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A 2-layer, 16-d student and 3-layer, 24-d teachers (dual, colbert, cross) with another
    tokenizer, weights spread so that scores differ (tests/tiny_models.py)."""
    from tiny_models import make_model, make_tokenizer, spread_weights

    root = tmp_path_factory.mktemp("models")
    student_tok = make_tokenizer(root / "student-tok", vocab_size=90)
    teacher_tok = make_tokenizer(root / "teacher-tok", vocab_size=140, lowercase=False)
    dirs = {"student": make_model(root / "student", student_tok, layers=2, hidden=16,
                                  pooling="mean")}
    for kind in ("dual", "colbert", "cross"):
        dirs[kind] = make_model(root / kind, teacher_tok, kind=kind, layers=3, hidden=24, seed=1)
    for seed, path in enumerate(dirs.values()):
        spread_weights(path, seed)
    return dirs


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> dict[str, Path]:
    """The training tests' synthetic world: corpus, queries, groups, a teacher and a student
    with their tokens (tests/training_world.py). Read only."""
    from training_world import make_world

    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    """Every artifact a stage reads, built once from the tiny fixture with lead's own stages:
    data/, model/, tokens/, embeddings/, run.parquet, run.trec, metrics/, groups.parquet.
    Read only: the hostile-input tests check that a refusal leaves it unchanged."""
    import torch
    from hostile import local_settings
    from repo import TINY_DATA as TINY
    from tiny_models import make_model, make_tokenizer

    from lead.__main__ import main
    from lead.config import resolve
    from lead.data.negatives import bm25_groups
    from lead.data.sources import build_dataset
    from lead.evaluation.evaluate import write_evaluation
    from lead.retrieval.encode import encode_file
    from lead.retrieval.search import search
    from lead.tokenization import tokenize_file

    splits = ("train", "dev", "test")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run many tiny ops: one thread is far faster
    try:
        root = tmp_path_factory.mktemp("built")
        make_model(root / "model", make_tokenizer(root / "tokenizer"), layers=2, hidden=16)
        build_dataset(local_settings(TINY / "collection.tsv", {s: TINY / f"queries.{s}.tsv"
                                                              for s in splits},
                                     {s: TINY / f"qrels.{s}.tsv" for s in splits}), root / "data")
        tokenize_file(root / "model", root / "data" / "corpus.parquet",
                      root / "tokens" / "corpus.parquet", max_length=32)
        for split in splits:
            tokenize_file(root / "model", root / "data" / "queries" / f"{split}.parquet",
                          root / "tokens" / f"{split}.parquet", max_length=16)
        encode = resolve("encode", {"batch_size": 64})
        encode_file(root / "model", root / "tokens" / "corpus.parquet", "passage",
                    root / "embeddings" / "corpus.parquet", encode)
        encode_file(root / "model", root / "tokens" / "test.parquet", "query",
                    root / "embeddings" / "test.parquet", encode)
        search(root / "embeddings" / "test.parquet", [root / "embeddings" / "corpus.parquet"],
               root / "run.parquet", resolve("search", {"depth": 20}))
        assert main([str(arg) for arg in ["export-trec", "--run", root / "run.parquet", "--out",
                                          root / "run.trec", "--tag", "tiny"]]) == 0
        report = resolve("evaluate", {})
        write_evaluation(root / "metrics", root / "run.parquet",
                         root / "data" / "qrels" / "test.parquet",
                         measures=list(dict.fromkeys([*report["report_measures"],
                                                      report["significance_measure"]])))
        bm25_groups(root / "data" / "corpus.parquet",
                    root / "data" / "queries" / "train.parquet",
                    root / "data" / "qrels" / "train.parquet", root / "groups.parquet", depth=5,
                    retrieve_depth=20, k1=0.9, b=0.4, threads=1)
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.fixture
def work(tmp_path, monkeypatch, artifacts) -> Path:
    """The test's own folder, also the current directory and the download cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEAD_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture
def roots(work, artifacts) -> list[Path]:
    """Where nothing may change when a stage refuses: the test's folder (inputs, outputs,
    the folder links point to) and the shared artifacts."""
    return [work, artifacts]


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """check-config reads the tiny config's relative paths from the repository root."""
    from repo import REPO

    monkeypatch.chdir(REPO)
    return tmp_path
