"""What a run tells its user (lead.training.progress): the training log's window means, exact
across a resume, and the TensorBoard events beside the log, read back with TensorBoard's own
reader."""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from training_world import distill_argv, read_checkpoint, read_log

from lead.__main__ import main
from lead.training import progress
from lead.training.progress import Board, LossWindow, scalars, tensorboard_dir

LOSSES = ["loss", "student_ce", "teacher_ce", "response_kl", "reverse_kl", "layer"]
OWN_STEP = ["lr", "teacher_lr", "grad_norm", "teacher_grad_norm"]  # the logged step's own
DEV = ["dev_RR@10", "dev_nDCG@10", "dev_R@20"]


def events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a TensorBoard folder, tag -> [(step, value)], as TensorBoard reads it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def expected_events(log) -> dict[str, list[tuple[int, float]]]:
    """A log's numbers as the scalars TensorBoard should hold (float32, as events store them)."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for row in log.to_dict("records"):
        present = {k: v for k, v in row.items()
                   if not (isinstance(v, float) and math.isnan(v))}
        for tag, value in scalars(present).items():
            expected.setdefault(tag, []).append((int(row["step"]), float(np.float32(value))))
    return expected


@pytest.mark.slow
def test_tensorboard_holds_every_number_of_the_log_at_its_step(lead_run):
    log = read_log(lead_run)
    found = events(tensorboard_dir(lead_run / "log.parquet"))
    assert set(found) == {*(f"loss/{c}" for c in LOSSES), "optim/lr", "optim/teacher_lr",
                          "optim/grad_norm", "optim/teacher_grad_norm", "run/examples_per_s",
                          "run/seconds_per_step", "run/memory_mb", "dev/RR@10", "dev/nDCG@10",
                          "dev/R@20"}
    assert found == expected_events(log)
    assert [step for step, _ in found["dev/RR@10"]] == [0, 8, 16, 24]
    assert [step for step, _ in found["loss/layer"]] == list(range(1, 25))


def _interrupt_at(monkeypatch, step: int) -> None:
    """Make optimizer step `step` report a NaN loss: the run stops there, its last checkpoint
    kept (lead.training.loop.NonFiniteLoss), as a killed run leaves it."""
    from lead.training import loop

    original, calls = loop.train_step, {"n": 0}

    def train_step(*args, **kwargs):
        result = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == step:
            return progress.StepResult({**result.losses, "loss": float("nan")},
                                       result.layer_weights, result.grad_norms)
        return result

    monkeypatch.setattr(loop, "train_step", train_step)


@pytest.mark.slow
def test_a_row_holds_its_windows_mean_losses_also_after_a_resume_mid_window(
    world, lead_run, tmp_path, monkeypatch
):
    """Logged every 5 steps, checkpointed every 8 (inside the window 6..10), stopped at step
    12 and resumed from step 8: each row's losses are the means of the same run's per-step
    losses (`lead_run`, logged every step) over its window, its other columns are its own
    step's, and the TensorBoard events are the log's, without the stopped run's rows past
    its checkpoint."""
    argv = distill_argv(world, tmp_path, optimisation={"log_every": 5})
    _interrupt_at(monkeypatch, 12)
    assert main(argv) == 2
    stopped = read_checkpoint(tmp_path)["progress"]
    assert stopped["step"] == 8 and stopped["loss_window"]["steps"] == 3  # steps 6, 7, 8
    assert read_log(tmp_path)["step"].tolist() == [0, 5, 8]
    monkeypatch.undo()
    assert main(argv) == 0  # resumes at step 8

    log, every_step = read_log(tmp_path).set_index("step"), read_log(lead_run).set_index("step")
    assert log.index.tolist() == [0, 5, 8, 10, 15, 16, 20, 24]
    windows = {5: range(1, 6), 10: range(6, 11), 15: range(11, 16), 20: range(16, 21),
               24: range(21, 25)}
    for step, window in windows.items():
        for column in LOSSES:
            values = [every_step.at[s, column] for s in window]
            assert log.at[step, column] == sum(values) / len(values), (step, column)
        for column in OWN_STEP:
            assert log.at[step, column] == every_step.at[step, column], (step, column)
        assert log.at[step, "layer_weights"].tolist() == \
            every_step.at[step, "layer_weights"].tolist()
    for step in (8, 16):  # evaluation steps that are not logging steps: dev columns only
        assert log.loc[step, LOSSES + OWN_STEP].isna().all()
    assert log[DEV].dropna().equals(every_step[DEV].dropna())
    folder = tensorboard_dir(tmp_path / "log.parquet")
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1  # written anew at the resume
    assert events(folder) == expected_events(log.reset_index())


def test_a_window_survives_a_checkpoint_round_trip(tmp_path):
    window = LossWindow()
    for value in (0.1, 0.2, 0.7):
        window.add({"loss": value, "layer": 2 * value})
    torch.save({"window": window.state()}, tmp_path / "state.pt")
    restored = LossWindow.from_state(torch.load(tmp_path / "state.pt",
                                                weights_only=True)["window"])
    window.add({"loss": 1.0, "layer": 0.5})
    restored.add({"loss": 1.0, "layer": 0.5})
    assert restored.take() == window.take() == {"loss": (0.1 + 0.2 + 0.7 + 1.0) / 4,
                                                "layer": (0.2 + 0.4 + 1.4 + 0.5) / 4}
    assert window.steps == 0 and window.sums == {}  # the next window starts empty
    assert LossWindow.from_state({}).steps == 0  # a checkpoint written before windows


ROWS = [{"step": 0, "dev_RR@10": 0.25},
        {"step": 2, "loss": 1.5, "student_ce": 1.5, "lr": 1e-3, "grad_norm": 0.5,
         "layers": [[1, 1]], "layer_weights": [1.0]},
        {"step": 4, "loss": 1.25, "student_ce": 1.25, "lr": 5e-4, "grad_norm": 0.25,
         "dev_RR@10": 0.5, "teacher_dev_RR@10": 0.75}]


def test_a_board_starts_from_the_rows_it_is_given(tmp_path):
    log = tmp_path / "training" / "student-lead-s1.parquet"
    board = Board.open(log, "distill", ROWS[:2])
    board.write(ROWS[2])
    board.close()
    folder = tmp_path / "training" / "student-lead-s1.tensorboard"
    f32 = float(np.float32(1e-3)), float(np.float32(5e-4))  # events hold float32
    assert events(folder) == {"dev/RR@10": [(0, 0.25), (4, 0.5)],
                              "loss/loss": [(2, 1.5), (4, 1.25)],
                              "loss/student_ce": [(2, 1.5), (4, 1.25)],
                              "optim/lr": [(2, f32[0]), (4, f32[1])],
                              "optim/grad_norm": [(2, 0.5), (4, 0.25)],
                              "teacher_dev/RR@10": [(4, 0.75)]}
    # A resumed run (its checkpoint at step 2): the stopped run's step 4 is gone.
    Board.open(log, "distill", ROWS[:2]).close()
    assert {tag: [s for s, _ in e] for tag, e in events(folder).items()} == {
        "dev/RR@10": [0], "loss/loss": [2], "loss/student_ce": [2], "optim/lr": [2],
        "optim/grad_norm": [2]}


def test_without_tensorboard_nothing_is_written_and_one_line_says_so(tmp_path, monkeypatch,
                                                                     caplog):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(progress.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else find_spec(name, *a))
    with caplog.at_level(logging.INFO, logger="lead.training.progress"):
        board = Board.open(tmp_path / "log.parquet", "distill", ROWS)
        for row in ROWS:
            board.write(row)
        board.close()
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert "tensorboard package is not installed" in caplog.records[0].getMessage()
    assert list(tmp_path.iterdir()) == []


# Hostile input: what is in the way of the events folder is left as it is, and the run goes
# on without events (the folder is no artifact of the workflow: no refusal for it).


@pytest.mark.parametrize("in_the_way", ["a folder of other files", "a link", "a file",
                                        "another command's folder"])
def test_what_lead_did_not_make_is_left_alone(tmp_path, caplog, in_the_way):
    folder = tmp_path / "log.tensorboard"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if in_the_way == "a folder of other files":
        folder.mkdir()
        (folder / "notes.txt").write_text("mine")
    elif in_the_way == "a link":
        folder.symlink_to(elsewhere)
    elif in_the_way == "a file":
        folder.write_text("mine")
    else:
        Board.open(tmp_path / "log.parquet", "warmup", ROWS).close()
    before = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    with caplog.at_level(logging.WARNING, logger="lead.training.progress"):
        board = Board.open(tmp_path / "log.parquet", "distill", ROWS)
    assert board.writer is None
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert str(folder) in caplog.records[0].getMessage()
    assert {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")} == before
