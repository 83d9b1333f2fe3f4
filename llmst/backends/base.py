"""The one protocol every stage uses to talk to an LLM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ScoreRequest:
    """Score each candidate continuation of `prompt`.

    `prefix_chars` marks the first characters of `prompt` as a prefix shared by many requests (a few-shot
    block); backends may compute it once and reuse it. It never changes the answer.
    """

    prompt: str
    candidates: tuple[str, ...]
    prefix_chars: int = 0


@runtime_checkable
class Backend(Protocol):
    """An LLM that can score continuations and generate text."""

    name: str  # backend name: "hf" | "openai" | "vllm"
    model_id: str  # what the user asked for (provenance)
    fingerprint: str  # changes when the weights change (cache key)
    max_context: int  # tokens
    chunk_size: int  # requests worth handing to one `score` call (a few batches, or the requests in flight)

    def score(self, requests: list[ScoreRequest]) -> list[list[float]]:
        """Exact log-probability of each full candidate continuation, one list per request."""
        ...

    def generate(
        self, prompts: list[str], *, n: int = 1, temperature: float = 0.0, max_tokens: int = 64
    ) -> list[list[str]]:
        """`n` completions per prompt."""
        ...

    def count_tokens(self, text: str) -> int:
        """Number of tokens of `text` (no special tokens)."""
        ...

    def truncate(self, text: str, max_tokens: int) -> str:
        """`text` cut to at most `max_tokens` tokens."""
        ...

    def close(self) -> None: ...


def truncate_with_tokenizer(tokenizer, text: str, max_tokens: int) -> str:
    """`text` cut at a token boundary to at most `max_tokens` tokens (a fast tokenizer with offsets)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) <= max_tokens:
        return text
    return text[: enc["offset_mapping"][max_tokens][0]] if max_tokens > 0 else ""
