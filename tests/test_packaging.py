"""The wheel: a non-editable install ships the schema and the `lead` console script."""

import subprocess
import sys

from repo import REPO


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_wheel_installs_and_resolves_a_config(tmp_path):
    """A non-editable install: the schema ships as package data, and the console script runs.
    The wheel goes into a fresh venv without dependencies; these come from this environment's
    site-packages through a .pth line (which does not run this environment's editable finder)."""
    import site
    import venv

    wheel = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                "-w", str(tmp_path / "dist"), ".")
    assert wheel.returncode == 0, wheel.stderr[-2000:]
    (built,) = (tmp_path / "dist").glob("lead-*.whl")
    env = tmp_path / "env"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    (next((env / "lib").glob("python3*")) / "site-packages" / "deps.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index",
                              str(built)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    probe = ("import lead.config, lead; print(lead.__file__); "
             "print(lead.config.resolve('encode', {})['batch_size'])")
    done = subprocess.run([str(python), "-c", probe], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    where, batch_size = done.stdout.split()
    assert str(env) in where and batch_size == "128"
    script = subprocess.run([str(env / "bin" / "lead"), "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert script.returncode == 0 and "evaluate-model" in script.stdout
