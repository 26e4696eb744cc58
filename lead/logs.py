"""The log a stage writes: lead's own progress lines, without third-party noise.

Every stage logs a start line naming its inputs with their sizes and an end line with its
duration and peak memory; long stages log their progress in between (rows/s, ETA). The
libraries lead calls are quietened: transformers' and huggingface_hub's progress bars, faiss's
instruction-set loader messages, bm25s' debug lines.

A level set on a library's logger is not enough: bm25s sets its own logger to DEBUG when it is
imported (`logger.setLevel(logging.DEBUG)` in bm25s/__init__.py), and lead imports it lazily,
after `setup`, so the level set here was undone and its "Building index from IDs" reached the
log. Each quietened logger therefore also gets a filter that drops its records below WARNING,
which no later `setLevel` removes.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from pathlib import Path

QUIET = ("faiss", "faiss.loader", "bm25s", "transformers", "huggingface_hub", "urllib3",
         "matplotlib", "PIL", "filelock", "snakemake", "tensorboard")


class _BelowWarning(logging.Filter):
    """Drops records below WARNING, whatever level their logger has been set to since."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


_QUIET_FILTER = _BelowWarning()


def setup(debug: bool = False) -> None:
    # Read by huggingface_hub and transformers when they are first imported (a stage that
    # needs no model, such as check-config, then never imports them).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for name in QUIET:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG if debug else logging.WARNING)
        if debug:  # --debug: everything, the libraries' lines too
            logger.removeFilter(_QUIET_FILTER)
        else:  # idempotent: a filter is added once
            logger.addFilter(_QUIET_FILTER)
    if "transformers" in sys.modules:  # imported already: the variables above came too late
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()


def size(path: Path) -> str:
    """A path's size for a log line (a folder's total), or 'missing'."""
    if path.is_dir():
        total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    elif path.exists():
        total = path.stat().st_size
    else:
        return "missing"
    for unit in ("B", "KB", "MB", "GB"):
        if total < 1024 or unit == "GB":
            return f"{total:.0f} {unit}" if unit == "B" else f"{total:.1f} {unit}"
        total /= 1024
    return f"{total:.1f} TB"


class StageTimer:
    """The start and end lines of a stage."""

    def __init__(self, stage: str, inputs: dict[str, Path]):
        self.log = logging.getLogger(f"lead.{stage}")
        self.stage = stage
        self.started = time.perf_counter()
        described = ", ".join(f"{name} {path} ({size(path)})" for name, path in inputs.items())
        self.log.info("start %s%s", stage, f": {described}" if described else "")

    def done(self) -> None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.log.info("done %s in %.1f s, peak memory %.0f MB", self.stage,
                      time.perf_counter() - self.started, peak)
