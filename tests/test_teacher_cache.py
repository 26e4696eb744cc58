"""The teacher's layer cache (lead.teacher_cache): trains as the live teacher, gives embeddings."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from training_world import TIMING, distill_argv, read_log, read_weights

from lead.__main__ import main


@pytest.mark.slow
def test_a_frozen_teacher_read_from_its_layer_cache_trains_the_student_as_the_live_one(
    world, tmp_path
):
    from lead.config import resolve
    from lead.teacher_cache import cache_file

    cache = resolve("distillation", {})["teacher_cache"]
    files = {}
    for role, tokens in (("query", "teacher_train_queries_tokens"),
                         ("passage", "teacher_corpus_tokens")):
        files[role] = tmp_path / f"cache-{role}.parquet"
        cache_file(world["teacher"], world[tokens], role, files[role], cache, batch_size=7)
    settings = {"teacher_trainable": False,
                "optimisation": {"steps": 6, "eval_every": 3, "checkpoint_every": 6}}
    live, cached = tmp_path / "live", tmp_path / "cached"
    assert main(distill_argv(world, live, **settings)) == 0
    argv = distill_argv(world, cached, **settings)
    argv += ["--teacher-cache-queries", str(files["query"]),
             "--teacher-cache-passages", str(files["passage"])]
    assert main(argv) == 0
    a, b = read_log(live), read_log(cached)
    numbers = [c for c in a.columns if c not in (*TIMING, "layers", "layer_weights", "step")]
    assert np.allclose(a[numbers].to_numpy(float), b[numbers].to_numpy(float), rtol=1e-5,
                       atol=1e-5, equal_nan=True)
    first, second = read_weights(live / "model"), read_weights(cached / "model")
    assert all(torch.allclose(first[n], second[n], atol=1e-5) for n in first)
    # the cache also gives the teacher's corpus embeddings without a forward pass
    from lead.retrieval.encode import encode_file
    from lead.teacher_cache import embeddings_from_cache

    encoded, read_off = tmp_path / "encoded.parquet", tmp_path / "read-off.parquet"
    encode_file(world["teacher"], world["teacher_corpus_tokens"], "passage", encoded,
                resolve("encode", {"batch_size": 7}))
    embeddings_from_cache(world["teacher"], files["passage"], read_off)
    a, b = pq.read_table(encoded), pq.read_table(read_off)
    assert a.column("id").equals(b.column("id"))
    assert np.allclose(np.stack(a.column("embedding").to_numpy(zero_copy_only=False)),
                       np.stack(b.column("embedding").to_numpy(zero_copy_only=False)), atol=1e-5)
    # a jointly trained teacher cannot be read from a cache
    joint = distill_argv(world, tmp_path / "joint")
    joint += ["--teacher-cache-queries", str(files["query"]),
              "--teacher-cache-passages", str(files["passage"])]
    assert main(joint) == 2
