"""What every hostile-input test checks: the stage refuses with ONE line naming the culprit,
exits with status 2, and leaves every file where it was (no output, no partial artifact,
nothing outside the output, no marker file of an injected command)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from lead.__main__ import main

MARKER = "MARKER"
# Names a careless or malicious user might give where lead builds a path or a shell word.
HOSTILE_NAMES = ["$(touch MARKER)", "`touch MARKER`", "a;touch MARKER", "../../x", ".hidden",
                 "a/b", "a b", "x\n"]


def tree(*roots: Path) -> dict[str, tuple]:
    """Every path under `roots` with what it is: a folder, a link and its target, or a file and
    the hash of its bytes. Links are not followed."""
    state: dict[str, tuple] = {}
    for root in roots:
        for folder, folders, files in os.walk(root):
            for name in folders + files:
                path = Path(folder, name)
                if path.is_symlink():
                    state[str(path)] = ("link", os.readlink(path))
                elif path.is_dir():
                    state[str(path)] = ("folder",)
                else:
                    state[str(path)] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def run_stage(capsys, *argv) -> tuple[int, str]:
    """`python -m lead ARGV` in this process: (exit status, what it printed on stderr)."""
    capsys.readouterr()
    status = main([str(arg) for arg in argv])
    return status, capsys.readouterr().err


def error_line(stage: str, status: int, err: str) -> str:
    """The one error line of a refused stage; fails unless it is the only one, is last (a
    message spanning lines would continue after it), and the status is 2 (a user error)."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"lead {stage}: error: ")]
    assert status == 2, f"exit status {status}, expected 2:\n{err}"
    assert "Traceback" not in err, err
    assert len(errors) == 1 and lines[-1] == errors[0], f"not one error line:\n{err}"
    return errors[0]


def refused(capsys, roots: list[Path], *argv, expect: tuple[str, ...] = ()) -> str:
    """Run a stage that must refuse: one line holding every `expect` fragment, and no path
    under `roots` created, changed or removed. Returns the line."""
    before = tree(*roots)
    status, err = run_stage(capsys, *argv)
    line = error_line(str(argv[0]), status, err)
    for fragment in expect:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert_unchanged(before, tree(*roots))
    return line


def assert_unchanged(before: dict[str, tuple], after: dict[str, tuple]) -> None:
    changed = {path: (before.get(path), after.get(path)) for path in before.keys() | after.keys()
               if before.get(path) != after.get(path)}
    assert not changed, f"paths created, changed or removed: {sorted(changed.items())}"
