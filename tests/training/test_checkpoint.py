"""Resumable state (lead.training.checkpoint): a killed run resumes exactly; corrupt ones."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch
from hostile import refused, training_argv
from repo import REPO
from training_world import TIMING, distill_argv, read_checkpoint, read_log, read_weights

from lead.__main__ import main
from lead.io import mark_output
from lead.training.checkpoint import CHECKPOINT_FILE


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_weights_and_log(world, lead_run, tmp_path):
    argv = distill_argv(world, tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "lead", *argv], cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = tmp_path / "checkpoints" / CHECKPOINT_FILE
    while not checkpoint.exists() and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = torch.load(checkpoint, weights_only=True)["progress"]["step"]
    assert killed_at < 24 and len(read_log(tmp_path)) >= killed_at  # the log is written first

    assert main(argv) == 0  # resumes
    expected, resumed = read_weights(lead_run / "model"), read_weights(tmp_path / "model")
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)
    first, second = read_checkpoint(lead_run), read_checkpoint(tmp_path)
    for model in ("student", "teacher"):
        for name, tensor in first["models"][model].items():
            assert torch.equal(tensor, second["models"][model][name]), (model, name)
    assert _states_equal(first["optimizers"], second["optimizers"])
    assert read_log(lead_run).drop(columns=TIMING).equals(read_log(tmp_path).drop(columns=TIMING))


def _states_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_states_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_states_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# Hostile input: each refusal is one line naming the culprit, and changes no file (hostile.py).


@pytest.mark.parametrize("checkpoint", ["garbage", "empty", "a folder", "a zip of nothing"])
@pytest.mark.parametrize("stage", ["warmup", "distill"])
def test_a_corrupt_checkpoint_is_one_line_naming_it(capsys, work, roots, artifacts, stage,
                                                    checkpoint):
    path = work / "checkpoints" / "checkpoint.pt"
    path.parent.mkdir()
    mark_output(path.parent, stage, whole=False)  # the stage's own checkpoints, one damaged
    if checkpoint == "a folder":
        path.mkdir()
    elif checkpoint == "a zip of nothing":
        import zipfile

        with zipfile.ZipFile(path, "w"):
            pass
    else:
        path.write_bytes(b"" if checkpoint == "empty" else b"not a checkpoint at all")
    refused(capsys, roots, *training_argv(artifacts, work, stage, artifacts / "model",
                                          artifacts / "model"),
            expect=(str(path), "corrupt checkpoint"))
