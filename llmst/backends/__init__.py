"""LLM backends behind one protocol (`Backend`): score continuations, generate text."""

from __future__ import annotations

from llmst.backends.base import Backend, BackendSpec, ScoreRequest
from llmst.errors import ConfigError

BACKENDS = ("hf", "openai", "vllm")

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendSpec",
    "ScoreRequest",
    "answer_identity",
    "backend_model_identity",
    "make_backend",
    "spec_model_identity",
]


def spec_model_identity(spec: BackendSpec) -> str:
    """The model's identity in a stage signature, from the options alone (no model loaded): the weights'
    fingerprint (hf, vllm: `llmst.models.model_fingerprint`), or the served name at the server's URL (a
    signature is checked without contacting a server; a rerun at another URL resumes and reuses answers, which
    `answer_identity` keys by what the server says of the model)."""
    from llmst.backends.base import normalize_base_url
    from llmst.models import model_fingerprint

    if spec.backend == "openai":
        return f"{spec.model}@{normalize_base_url(spec.base_url or '')}"
    return model_fingerprint(spec.model)


def backend_model_identity(backend: Backend) -> str:
    """The same identity from a built backend (`spec_model_identity` of the spec it was built from)."""
    if backend.name == "openai":
        return f"{backend.model_id}@{getattr(backend, 'base_url', '')}"
    return backend.fingerprint


def answer_identity(backend: Backend) -> str:
    """The model's identity in resume jobs and cached generations: the weights' fingerprint (hf, vllm), or
    for a served model what the server's /v1/models says of it (`OpenAIBackend.fingerprint`: id, weights path,
    context length, LoRA parent), not its URL, so a restarted server on another port continues the same job.
    Two servers of the same weights path with other dtype or quantization flags look the same here."""
    if backend.name == "openai":
        return f"served:{backend.model_id}|{backend.fingerprint}"
    return backend.fingerprint


def make_backend(spec: BackendSpec) -> Backend:
    """Build the backend a spec asks for (heavy imports happen here, not at import time)."""
    if spec.backend == "hf":
        from llmst.backends.hf import HFBackend

        return HFBackend(
            spec.model,
            device=spec.device,
            dtype=spec.dtype,
            batch_size=spec.batch_size,
            max_context=spec.max_context,
            quiet=spec.quiet,
            compile=spec.compile,
        )
    if spec.backend == "openai":
        from llmst.backends.openai import OpenAIBackend

        if not spec.base_url:
            raise ConfigError("--backend openai needs --base-url", hint="e.g. http://127.0.0.1:8000/v1")
        return OpenAIBackend(spec.base_url, spec.model, concurrency=spec.concurrency)
    if spec.backend == "vllm":
        from llmst.backends.vllm import VLLMBackend

        return VLLMBackend(spec.model, dtype=spec.dtype, max_context=spec.max_context)
    raise ConfigError(f"unknown backend '{spec.backend}'", hint="use one of: " + ", ".join(BACKENDS))
