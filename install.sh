#!/usr/bin/env bash
# Install lead and everything it needs into ./.venv (idempotent; pinned, as CI proves it).
# torch comes first and pinned, so that nothing later pulls another build of it.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "lead installed in $(pwd)/.venv"
