#!/usr/bin/env bash
# Serve a model with vLLM's OpenAI-compatible server, for `llmst label --backend openai`.
#
#   scripts/serve_vllm.sh [MODEL]        MODEL: a bundled name (default smollm2-135m-instruct),
#                                        a .gguf file or a transformers folder
#   then: llmst label in.jsonl -o out.jsonl --task TASK --backend openai --base-url http://127.0.0.1:8000/v1 --model NAME
#
# GGUF models are converted once (by llmst, cached under ~/.cache/llmst/models). vLLM runs from its own
# environment (`make vllm-env` creates .venv-vllm). The server runs in the foreground; Ctrl-C stops it.
# Settings (environment):
#   PORT=8000  HOST=127.0.0.1  NAME=<served name; default MODEL, or the file/folder name>
#   KV_CACHE_GIB=2 (VLLM_CPU_KVCACHE_SPACE, CPU only)  MAX_MODEL_LEN=2048
#   LLMST_PYTHON=.venv/bin/python  LLMST_VLLM_PYTHON=.venv-vllm/bin/python
# Extra arguments after MODEL go to vLLM unchanged (e.g. --max-num-seqs 64).
# Same recipe as llmst/backends/vllm_server.py (used by the tests); keep the two in step.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-smollm2-135m-instruct}
shift || true
llmst_python=${LLMST_PYTHON:-$repo/.venv/bin/python}
vllm_python=${LLMST_VLLM_PYTHON:-$repo/.venv-vllm/bin/python}
if [[ ! -x $vllm_python ]]; then
    echo "error: no vLLM python at $vllm_python; run \`make vllm-env\` or set LLMST_VLLM_PYTHON" >&2
    exit 2
fi
# bundled name / .gguf / folder -> a transformers folder (converts a GGUF once)
dir=$("$llmst_python" -c 'import sys; from llmst.models import resolve_model; print(resolve_model(sys.argv[1]).path)' "$model")
if [[ ! -f $dir/config.json ]]; then
    echo "error: $model is not a local model (resolved to $dir); vLLM here needs a local folder" >&2
    exit 2
fi
if [[ -n ${NAME:-} ]]; then name=$NAME
elif [[ -e $model ]]; then name=$(basename "${model%/}" .gguf)
else name=$model
fi
port=${PORT:-8000}
echo "serving $dir as '$name' at http://${HOST:-127.0.0.1}:$port/v1 (start-up takes a few minutes on CPUs)" >&2
export VLLM_CPU_KVCACHE_SPACE=${KV_CACHE_GIB:-2}
exec "$vllm_python" -m vllm.entrypoints.openai.api_server --model "$dir" --served-model-name "$name" \
    --host "${HOST:-127.0.0.1}" --port "$port" --max-model-len "${MAX_MODEL_LEN:-2048}" \
    --dtype bfloat16 --enable-prefix-caching --disable-uvicorn-access-log "$@"
