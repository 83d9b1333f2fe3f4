"""LLM backends behind one protocol (`Backend`): score continuations, generate text."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmst.backends.base import Backend, ScoreRequest
from llmst.errors import ConfigError

if TYPE_CHECKING:
    from llmst.label.run import LabelConfig

BACKENDS = ("hf", "openai", "vllm")

__all__ = ["BACKENDS", "Backend", "ScoreRequest", "make_backend"]


def make_backend(config: LabelConfig) -> Backend:
    """Build the backend a labeling config asks for (heavy imports happen here, not at import time)."""
    if config.backend == "hf":
        from llmst.backends.hf import HFBackend

        return HFBackend(config.model, dtype=config.dtype, batch_size=config.batch_size)
    if config.backend == "openai":
        from llmst.backends.openai import OpenAIBackend

        if not config.base_url:
            raise ConfigError("--backend openai needs --base-url", hint="e.g. http://127.0.0.1:8000/v1")
        return OpenAIBackend(config.base_url, config.model, concurrency=config.concurrency)
    if config.backend == "vllm":
        from llmst.backends.vllm import VLLMBackend

        return VLLMBackend(config.model, dtype=config.dtype)
    raise ConfigError(f"unknown backend '{config.backend}'", hint="use one of: " + ", ".join(BACKENDS))
