"""The training loop (lead.training.loop) via `distill`/`warmup`: learning, selection, bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hostile import damaged_model, refused, training_argv
from repo import REPO
from training_world import TIMING, distill_argv, read_checkpoint, read_log, read_weights

from lead.__main__ import main
from lead.config import dumps
from lead.training.checkpoint import CHECKPOINT_FILE


@pytest.mark.slow
def test_lead_distillation_between_different_tokenizers_lowers_the_loss(world, lead_run):
    from transformers import AutoModel

    from lead.modeling.encoders import load_encoder

    log = read_log(lead_run)
    assert log["step"].tolist() == list(range(0, 25))  # step 0: the initial model's dev row
    steps = log[log["step"] > 0]
    for column in ("loss", "student_ce", "teacher_ce", "response_kl", "reverse_kl", "layer",
                   "lr", "teacher_lr", "grad_norm", "teacher_grad_norm", *TIMING):
        assert steps[column].notna().all(), column
    assert all(len(pairs) == 2 and all(t >= 1 and s >= 1 for t, s in pairs)
               for pairs in steps["layers"])
    assert all(abs(sum(w) - 1) < 1e-5 for w in steps["layer_weights"])
    assert steps["loss"].iloc[-6:].mean() < steps["loss"].iloc[:6].mean() - 0.2
    evaluated = log.dropna(subset=["dev_RR@10"])
    assert evaluated["step"].tolist() == [0, 8, 16, 24]
    # The saved model is the best one on dev, and loads both ways.
    best = evaluated["dev_RR@10"].idxmax()
    assert read_checkpoint(lead_run)["progress"]["best_step"] == log["step"][best]
    assert AutoModel.from_pretrained(lead_run / "model").config.num_hidden_layers == 2
    encoder = load_encoder(lead_run / "model")
    assert encoder.kind == "dual" and encoder.hidden_size == 16
    assert (lead_run / "model" / "modules.json").is_file()


@pytest.mark.slow
def test_two_gloo_processes_take_the_same_steps_as_one_process_on_the_whole_batch(
    world, tmp_path
):
    """Loss, pre-clip gradient norms (clipping active) and weights after 2 steps of 2
    accumulated micro-batches, and the dev metrics of the sharded evaluation (with the exact
    gradient scale; tests/test_distributed.py checks the release's 1/G)."""
    settings = {"steps": 2, "checkpoint_every": 1, "eval_every": 2, "max_grad_norm": 0.5,
                "gradient_accumulation": 2, "gradient_scale": "exact"}
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(distill_argv(world, one, optimisation={**settings, "batch_size": 4})) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "--", "lead",  # "--": torchrun would take --log
               *distill_argv(world, two, optimisation={**settings, "batch_size": 2})]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log_one, log_two = read_log(one), read_log(two)
    assert (log_one["grad_norm"].dropna() > 0.5).all()  # clipping happened
    numbers = [c for c in log_one.columns if c not in (*TIMING, "layers", "layer_weights", "step")]
    assert np.allclose(log_one[numbers].to_numpy(float), log_two[numbers].to_numpy(float),
                       rtol=1e-5, atol=1e-6, equal_nan=True)
    layers = [pq.read_table(out / "log.parquet").column("layers").to_pylist() for out in (one, two)]
    assert layers[0] == layers[1]
    for model in ("student", "teacher"):
        a, b = read_checkpoint(one)["models"][model], read_checkpoint(two)["models"][model]
        for name in a:
            assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-6), (model, name)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"layers": {"k": 3}}, r"layers\.k = 3"),
        ({"layers": {"strategy": "pairs", "pairs": [[4, 1]]}}, r"pairs entry \[4, 1\]"),
        ({"optimisation": {"batch_size": 100}}, r"fewer than one global batch"),
    ],
)
def test_a_config_that_does_not_fit_the_models_or_data_fails_before_training(
    world, tmp_path, capsys, settings, message
):
    assert main(distill_argv(world, tmp_path, **settings)) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "log.parquet").exists()


def _poison_from_step(monkeypatch, step: int) -> None:
    """Make the objective's loss NaN from optimizer step `step` on (one micro-batch a step)."""
    from lead.training.objective import Objective

    original = Objective.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= step:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(Objective, "forward", forward)


def _train_argv(world, out: Path, **overrides) -> list[str]:
    settings = {"optimisation": {"steps": 12, "checkpoint_every": 4, "eval_every": 4,
                                 **overrides}}
    return [
        "warmup", "--settings", dumps(settings), "--model", str(world["student"]),
        "--corpus-tokens", str(world["student_corpus_tokens"]),
        "--query-tokens", str(world["student_train_queries_tokens"]),
        "--groups", str(world["groups"]),
        "--dev-query-tokens", str(world["student_dev_queries_tokens"]),
        "--dev-qrels", str(world["dev_qrels"]),
        "--out", str(out / "model"), "--log", str(out / "log.parquet"),
        "--checkpoint-dir", str(out / "checkpoints"), "--keep-checkpoint",
    ]


@pytest.mark.slow
def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(
    world, tmp_path, monkeypatch, capsys
):
    _poison_from_step(monkeypatch, 6)
    assert main(_train_argv(world, tmp_path, log_every=1)) == 2
    error = capsys.readouterr().err
    assert "non-finite loss" in error and "at step 6" in error
    checkpoint = tmp_path / "checkpoints" / CHECKPOINT_FILE
    assert torch.load(checkpoint, weights_only=True)["progress"]["step"] == 4
    assert not (tmp_path / "model").exists()
    monkeypatch.undo()
    assert main(_train_argv(world, tmp_path, log_every=1)) == 0  # resumes from step 4
    assert read_log(tmp_path)["step"].tolist() == list(range(0, 13))  # each step once
    assert (tmp_path / "model" / "lead.json").is_file()


@pytest.mark.slow
def test_the_initial_model_is_kept_when_training_only_hurts(world, lead_run, tmp_path):
    """From a trained student, a learning rate that wrecks it: no dev evaluation beats step
    0's, so the saved model is the initial one, weight for weight."""
    optimisation = {"steps": 8, "eval_every": 4, "checkpoint_every": 4, "learning_rate": 0.3,
                    "warmup_ratio": 0.0}
    trained = lead_run / "model"
    assert main(distill_argv(world, tmp_path, "none", student=trained,
                              optimisation=optimisation)) == 0
    log = read_log(tmp_path).dropna(subset=["dev_RR@10"])
    assert log["step"].tolist() == [0, 4, 8]
    assert (log["dev_RR@10"].iloc[1:] < log["dev_RR@10"].iloc[0]).all()
    assert read_checkpoint(tmp_path)["progress"]["best_step"] == 0
    initial, saved = read_weights(trained), read_weights(tmp_path / "model")
    assert all(torch.equal(initial[name], saved[name]) for name in initial)
    card = (tmp_path / "model" / "README.md").read_text()
    assert "selected at step | 0 of 8" in card and "none" in card


@pytest.mark.slow
def test_a_jointly_trained_teachers_dev_metric_is_logged(world, tmp_path):
    argv = distill_argv(world, tmp_path, optimisation={"steps": 4, "eval_every": 2,
                                                        "checkpoint_every": 4})
    argv.remove("--keep-checkpoint")
    argv += ["--teacher-dev-query-tokens", str(world["teacher_dev_queries_tokens"])]
    assert main(argv) == 0
    assert not (tmp_path / "checkpoints").exists()  # nothing resumes a finished run
    log = read_log(tmp_path).dropna(subset=["dev_RR@10"])
    assert log["step"].tolist() == [0, 2, 4]
    assert log["teacher_dev_RR@10"].notna().all()
    assert log["teacher_dev_RR@10"].tolist() != log["dev_RR@10"].tolist()


# Hostile input: each refusal is one line naming the culprit, and changes no file (hostile.py).


@pytest.mark.parametrize("damage", ["empty weights", "weights cut at the end",
                                    "config: more layers"])
@pytest.mark.parametrize("role", ["teacher", "student"])
def test_distill_refuses_a_broken_model_directory(capsys, work, roots, artifacts, role, damage):
    model = damaged_model(artifacts, work, damage, name=role)
    teacher, student = ((model, artifacts / "model") if role == "teacher"
                        else (artifacts / "model", model))
    refused(capsys, roots, *training_argv(artifacts, work, "distill", teacher, student),
            expect=(str(model),))
