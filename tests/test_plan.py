"""The plan's checks (lead.plan) via `check-config`: what would fail hours into a run."""

from __future__ import annotations

import pytest
from hostile import FAILS_LATER, check_config, error_line, tiny

# Hostile input: each refusal is one line naming the culprit, and changes no file (hostile.py).


@pytest.mark.parametrize("case", FAILS_LATER)
def test_check_config_refuses_what_would_fail_hours_later(capsys, here, case):
    config, key = FAILS_LATER[case]
    status, err = check_config(capsys, config, here)
    assert key in error_line("check-config", status, err)


def test_check_config_accepts_the_shell_words_it_quotes(capsys, here):
    """The control: a triples file whose name holds shell syntax is a valid config (the
    workflow quotes it; test_a_hostile_given_path_runs_no_command proves it)."""
    status, err = check_config(capsys, tiny(negatives={"source": "given",
                                                       "given_path": "t $(touch MARKER) `x`"}),
                               here)
    assert status == 0, err
