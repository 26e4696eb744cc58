"""Local GPU jobs get devices of their own (lead.gpus), with a fake nvidia-smi of 3 GPUs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def _env(tmp_path: Path, **extra) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0\\n1\\n2\\n'\n")
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return {**env, "PATH": f"{bin_dir}:{env['PATH']}", "LEAD_GPU_LOCKS": str(tmp_path / "locks"),
            **extra}


def _job(tmp_path: Path, name: str, count: int, env: dict) -> subprocess.Popen:
    """A job that writes its devices, then waits for a `release` file (a condition, no sleep)."""
    script = (f"import os, pathlib, time; pathlib.Path({str(tmp_path / name)!r}).write_text("
              f"os.environ.get('CUDA_VISIBLE_DEVICES', '-'))\n"
              f"while not pathlib.Path({str(tmp_path / 'release')!r}).exists(): time.sleep(0.02)")
    return subprocess.Popen([sys.executable, "-m", "lead.gpus", str(count), "--",
                             sys.executable, "-c", script], env=env)


def _wait_for(path: Path, process: subprocess.Popen) -> str:
    """The devices the job wrote: the file exists, with its text (it is created empty first)."""
    while not (path.exists() and path.read_text()):
        if process.poll() is not None:  # it may have written just before it ended
            assert path.exists() and path.read_text(), "the job ended before writing its devices"
        time.sleep(0.02)
    return path.read_text()


def test_concurrent_jobs_get_distinct_devices_and_a_third_waits(tmp_path):
    env = _env(tmp_path)
    first, second = _job(tmp_path, "a", 2, env), None
    try:
        devices_a = _wait_for(tmp_path / "a", first)
        second = _job(tmp_path, "b", 1, env)
        devices_b = _wait_for(tmp_path / "b", second)
        assert devices_a == "0,1" and devices_b == "2"
        third = _job(tmp_path, "c", 1, env)  # every GPU is taken: it waits for one
        assert third.poll() is None and not (tmp_path / "c").exists()
        (tmp_path / "release").write_text("")
        assert first.wait(timeout=60) == 0 and second.wait(timeout=60) == 0
        assert _wait_for(tmp_path / "c", third) in {"0", "1", "2"}
        assert third.wait(timeout=60) == 0
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()


def test_devices_a_scheduler_chose_and_cpu_jobs_are_left_alone(tmp_path):
    (tmp_path / "release").write_text("")
    chosen = _job(tmp_path, "slurm", 1, _env(tmp_path, CUDA_VISIBLE_DEVICES="5"))
    assert chosen.wait(timeout=60) == 0 and (tmp_path / "slurm").read_text() == "5"
    cpu = _job(tmp_path, "cpu", 0, _env(tmp_path))
    assert cpu.wait(timeout=60) == 0 and (tmp_path / "cpu").read_text() == "-"
