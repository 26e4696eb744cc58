"""Resumable training state: a killed run resumes and ends with the same weights.

One file, `checkpoint.pt`, holds everything a resumed run needs: model, optimizer and
scheduler states, every process's RNG states (python, numpy, torch, CUDA), the step (which
also fixes the data position and the layer selection), the best dev result so far, the log
rows and the running sums of the logging window the step is in (lead.training.progress). It
is replaced atomically, so a kill while writing leaves the previous one intact.

The best model so far lives beside it as a Hugging Face directory `best-step-NNNNNNNN/`; the
checkpoint names the one it vouches for, and directories a killed run wrote after its last
checkpoint are removed on resume (the resumed run writes them again).
"""

from __future__ import annotations

import logging
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lead.errors import LeadError
from lead.io import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
_BEST_PATTERN = re.compile(r"^best-step-(\d{8})$")
_TEMPORARY_PATTERN = re.compile(r"^\..+\.tmp-\d+$")  # lead.io.atomic_path's temporaries


@dataclass
class Progress:
    """What the loop carries from step to step besides the tensors."""

    step: int = 0
    best_step: int | None = None
    best_value: float | None = None
    log_rows: list[dict[str, Any]] = field(default_factory=list)
    loss_window: dict[str, Any] = field(default_factory=dict)  # progress.LossWindow.state()


def rng_state() -> dict[str, Any]:
    """This process's RNG states, as tensors and plain values (loadable with weights_only)."""
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    numpy = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]},
            "has_gauss": numpy["has_gauss"],
            "gauss": numpy["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """random.setstate wants tuples; a round trip through a checkpoint may give lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def save_checkpoint(
    directory: str | Path,
    *,
    fingerprint: str,
    progress: Progress,
    models: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, Any],
    rng_states: list[dict[str, Any]],
) -> Path:
    """Write the checkpoint atomically, then drop best-model directories it does not name."""
    directory = Path(directory)
    path = directory / CHECKPOINT_FILE
    payload = {
        "fingerprint": fingerprint,
        "progress": vars(progress),
        "models": {name: model.state_dict() for name, model in models.items()},
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "schedulers": {name: sched.state_dict() for name, sched in schedulers.items()},
        "rng": rng_states,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    prune_best_models(directory, keep={progress.best_step})
    return path


def load_checkpoint(directory: str | Path, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint of this same job, or None (no checkpoint, or one of another job).

    A checkpoint of other settings, inputs or process count cannot be continued: the run
    starts afresh and overwrites it at its first checkpoint.
    """
    path = Path(directory) / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        stored = payload["fingerprint"]
    except Exception as err:
        raise LeadError(
            f"{path}: corrupt checkpoint ({type(err).__name__}); delete it to start the run "
            "afresh (a killed run never leaves one: this file was damaged afterwards)"
        ) from err
    if stored != fingerprint:
        log.warning(
            "%s was written by a run with other settings, inputs or process count: "
            "starting afresh", path,
        )
        return None
    return payload


def restore(
    payload: dict[str, Any],
    *,
    models: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, Any],
    rank: int,
) -> Progress:
    for name, model in models.items():
        model.load_state_dict(payload["models"][name])
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(payload["optimizers"][name])
    for name, scheduler in schedulers.items():
        scheduler.load_state_dict(payload["schedulers"][name])
    set_rng_state(payload["rng"][rank])
    return Progress(**payload["progress"])


def best_model_dir(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"best-step-{step:08d}"


def save_best_model(encoder, directory: str | Path, step: int) -> Path:
    """Save the model that just scored best on dev (Encoder.save writes atomically)."""
    return encoder.save(best_model_dir(directory, step))


def prune_best_models(directory: str | Path, keep: set[int | None]) -> None:
    """Remove best-model directories not in `keep`, and temporaries a killed run left."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for child in directory.iterdir():
        match = _BEST_PATTERN.match(child.name)
        stale = match is not None and int(match.group(1)) not in keep
        if stale or _TEMPORARY_PATTERN.match(child.name):
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
