"""Give each local GPU job its own devices: `python -m lead.gpus N -- COMMAND ...`.

Snakemake counts GPUs (`--resources gpu=8`) but does not say which ones a job may use, so two
local jobs would both open GPU 0. This wrapper takes N free GPUs (an exclusive lock per device,
in a folder shared by the user's jobs), sets CUDA_VISIBLE_DEVICES to them and replaces itself
with COMMAND, which keeps the locks until it exits. Nothing is done where a scheduler already
chose the devices (CUDA_VISIBLE_DEVICES is set, as SLURM sets it), where N is 0, or where the
machine has no GPU (no nvidia-smi).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLL_SECONDS = 0.5


def gpu_indices() -> list[str]:
    """This machine's GPUs, as nvidia-smi numbers them (none without nvidia-smi)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    listed = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"],
                            capture_output=True, text=True, check=False)
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


def lock_folder() -> Path:
    folder = Path(os.environ.get("LEAD_GPU_LOCKS")
                  or Path(tempfile.gettempdir()) / f"lead-gpus-{os.getuid()}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def reserve(count: int, indices: list[str], folder: Path) -> list[str]:
    """Wait for `count` of `indices` to be free; lock them (the fds stay open and inheritable)."""
    if count > len(indices):
        raise SystemExit(f"lead.gpus: the job asks for {count} GPUs, this machine has "
                         f"{len(indices)}")
    while True:
        held: list[tuple[str, int]] = []
        for index in indices:
            fd = os.open(folder / f"{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            held.append((index, fd))
            if len(held) == count:
                for _, locked in held:
                    os.set_inheritable(locked, True)
                return [i for i, _ in held]
        for _, fd in held:
            os.close(fd)
        time.sleep(POLL_SECONDS)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--" or not args[0].isdigit():
        raise SystemExit("usage: python -m lead.gpus N -- COMMAND [ARGS...]")
    count, command = int(args[0]), args[2:]
    indices = gpu_indices() if count and "CUDA_VISIBLE_DEVICES" not in os.environ else []
    if indices:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(reserve(count, indices, lock_folder()))
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
