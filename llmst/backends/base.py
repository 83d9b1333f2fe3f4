"""The one protocol every stage uses to talk to an LLM, and the spec that says which one to build."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from llmst.models import DEFAULT_LABELER

BackendName = Literal["hf", "openai", "vllm"]
Dtype = Literal["auto", "bfloat16", "float16", "float32"]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to (not including) the first occurrence of any `stop` string."""
    found = [index for index in (text.find(s) for s in stop) if index >= 0]
    return text[: min(found)] if found else text


@dataclass(frozen=True)
class BackendSpec:
    """Which LLM backend to build and how (`llmst.backends.make_backend(spec)`).

    A stage config holds the options and builds this (`LabelConfig.backend_spec()`), so the backends never
    import a stage. `batch_size` and `concurrency` change speed only; the rest can change answers.
    """

    backend: BackendName = "hf"
    model: str = DEFAULT_LABELER  # bundled name, folder, .gguf file, hub id, or served name (openai)
    base_url: str | None = None  # openai: the server's URL
    dtype: Dtype = "auto"  # hf, vllm; openai: the server decides
    batch_size: int | None = None  # hf: sequences per forward pass (None: the device's default)
    concurrency: int = 32  # openai: requests in flight
    device: str | None = None  # hf: "cpu", "cuda", "cuda:1"; default: cuda when available
    max_context: int | None = None  # cap on the model's context, in tokens
    quiet: bool = False  # hf: no progress bar while the weights load
    compile: bool = False  # hf: torch.compile the decoder (changes scores within rounding)

    @classmethod
    def from_options(cls, options: Any) -> BackendSpec:
        """The spec of a stage config holding the backend options (`backend`, `model`, `base_url`, `dtype`,
        `batch_size`, `concurrency`, `progress`), as `LabelConfig` and `DebateConfig` do."""
        return cls(
            backend=options.backend,
            model=options.model,
            base_url=options.base_url,
            dtype=options.dtype,
            batch_size=options.batch_size,
            concurrency=options.concurrency,
            quiet=not options.progress,
            compile=getattr(options, "compile", False),
        )


def normalize_base_url(url: str) -> str:
    """An OpenAI-compatible server URL as the openai backend uses it (no trailing slash, ends with /v1)."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def device_kind(device: str) -> str:
    """'cpu', 'cuda', 'mps', ...: the part of a device name that changes numerics.

    The same weights and dtype give slightly different scores on CPU and GPU kernels (other matmul and
    reduction orders, fused attention), so answer-cache keys include the device kind; the device index
    does not (cuda:0 and cuda:1 run the same kernels).
    """
    return device.split(":", 1)[0]


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
    dtype: str  # the dtype actually computed in ("bfloat16", ...; "server" when a server decides)
    device_kind: str  # "cpu", "cuda", ... ("server" for a remote server): see `device_kind()`
    max_context: int  # tokens
    chunk_size: int  # requests worth handing to one `score` call (a few batches, or the requests in flight)

    def score(self, requests: list[ScoreRequest]) -> list[list[float]]:
        """Exact log-probability of each full candidate continuation, one list per request."""
        ...

    def generate(
        self,
        prompts: list[str],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 64,
        stop: list[str] | None = None,
        chat: bool = False,
    ) -> list[list[str]]:
        """`n` completions per prompt; generation may end at a `stop` string (which may stay in the text).
        `chat`: each prompt is one user message in the model's chat template (instruct models), the
        completion the assistant's reply."""
        ...

    def count_tokens(self, text: str) -> int:
        """Number of tokens of `text` (no special tokens)."""
        ...

    def truncate(self, text: str, max_tokens: int) -> str:
        """`text` cut to at most `max_tokens` tokens."""
        ...

    def close(self) -> None: ...


def chat_text(tokenizer, prompt: str, model: str) -> str:
    """`prompt` as one user message in the tokenizer's chat template, ready for the assistant's reply (the
    text already holds the template's special tokens: tokenize it with add_special_tokens=False)."""
    from llmst.errors import BackendError

    if not getattr(tokenizer, "chat_template", None):
        raise BackendError(
            f"model '{model}' has no chat template",
            hint="leave chat off for a base model (it reads the prompt as plain text)",
        )
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def truncate_with_tokenizer(tokenizer, text: str, max_tokens: int) -> str:
    """`text` cut at a token boundary to at most `max_tokens` tokens (a fast tokenizer with offsets)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) <= max_tokens:
        return text
    return text[: enc["offset_mapping"][max_tokens][0]] if max_tokens > 0 else ""
