"""The workflow stays lint-clean: `snakemake --lint` and snakefmt."""

import subprocess
import sys
from pathlib import Path

from repo import REPO


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_snakemake_lint_is_clean():
    result = run(sys.executable, "-m", "snakemake", "--lint", "--configfile", "config/default.yaml")
    assert result.returncode == 0 and "Lints for" not in result.stdout, result.stdout


def test_snakefmt_is_clean():
    snakefmt = Path(sys.executable).parent / "snakefmt"
    result = run(str(snakefmt), "--check", "Snakefile", "workflow")
    assert result.returncode == 0, result.stderr
