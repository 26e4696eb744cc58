"""`python -m lead` (lead.__main__): an unforeseen failure is one line; --debug raises it."""

from __future__ import annotations

import pytest
from hostile import run_stage


def test_an_unexpected_failure_is_one_line_and_debug_gives_the_traceback(capsys, monkeypatch):
    """A failure lead did not foresee (a library's RuntimeError over several lines) still ends
    in one line with status 1, pointing at --debug; --debug raises it with its traceback."""
    from lead.cli import check_config

    def fails(args):
        raise RuntimeError("a kernel failed\n  at line 3\n    ^^^^")

    monkeypatch.setattr(check_config, "run", fails)
    status, err = run_stage(capsys, "check-config")
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 1 and len(lines) == 1, err
    assert lines[0] == ("lead check-config: error: RuntimeError: a kernel failed at line 3 ^^^^ "
                        "(rerun with --debug for the traceback)")
    with pytest.raises(RuntimeError, match="a kernel failed"):
        run_stage(capsys, "check-config", "--debug")


@pytest.mark.parametrize("argv", [["--help"], ["check-config"],
                                  ["check-config", "config/msmarco-passage.yaml"]])
def test_help_and_check_config_import_no_torch(argv):
    """The command line, the config check and the workflow's parse import no model library:
    a stage's heavy imports live inside its run()."""
    import subprocess
    import sys

    from repo import REPO

    probe = (
        "import sys\nfrom lead.__main__ import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'faiss', 'sentence_transformers') "
        "if m in sys.modules]\nprint('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr
