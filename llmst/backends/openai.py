"""OpenAI-compatible server backend (`vllm serve`, or any server speaking /v1/completions).

Scoring uses the legacy completions endpoint:
- fast path: one request per prompt with `max_tokens=1, logprobs=K`; when every candidate is a single token
  found among the top-K next tokens, its log-prob is read from there;
- exact path (multi-token candidates, or a candidate outside the top K): one request per candidate with
  `echo=true` on prompt + candidate, summing the log-probs of the tokens that start inside the candidate.
Requests run concurrently (bounded by `concurrency`) and are retried with exponential backoff on timeouts,
refused connections, 429 and 5xx. The API key is read from LLMST_API_KEY or OPENAI_API_KEY and never logged.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from llmst.backends.base import ScoreRequest
from llmst.errors import BackendError, ConfigError

TOP_LOGPROBS = 20  # vLLM's default --max-logprobs


class _Retryable(Exception):
    """A transient server answer (429/5xx) worth retrying."""


def _is_transient(err: BaseException) -> bool:
    return isinstance(err, (_Retryable, httpx.TransportError))


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        concurrency: int = 32,
        timeout: float = 120.0,
        max_attempts: int = 6,
        max_retry_seconds: float = 60.0,
        tokenizer: str | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.model_id = model
        self.concurrency = concurrency
        self.chunk_size = concurrency * 4  # keeps `concurrency` requests in flight across a chunk
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_retry_seconds = max_retry_seconds
        key = os.environ.get("LLMST_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        info = self._server_model()
        self.fingerprint = f"{info.get('id')}|{info.get('root', '')}|{info.get('max_model_len', '')}"
        self.max_context = int(info.get("max_model_len") or 2048)
        self._tokenizer = self._load_tokenizer(tokenizer or info.get("root") or model)

    # ----------------------------------------------------------------- set-up
    def _server_model(self) -> dict[str, Any]:
        try:
            answer = asyncio.run(self._request("GET", "/models", None))
        except BackendError:
            raise
        served = answer.get("data", [])
        for item in served:
            if item.get("id") == self.model_id:
                return item
        names = ", ".join(item.get("id", "?") for item in served) or "none"
        raise ConfigError(
            f"model '{self.model_id}' is not served at {self.base_url}",
            hint=f"served models: {names}; pass one of them with --model",
        )

    def _load_tokenizer(self, spec: str):
        """A local tokenizer for counting and truncating; None falls back to a 4-characters-per-token estimate."""
        from llmst.models import resolve_model

        try:
            resolved = resolve_model(spec)
            if not resolved.is_local:
                return None
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(resolved.path)
        except (ConfigError, OSError, ValueError):
            return None

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            return (len(text) + 3) // 4
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> str:
        if self._tokenizer is None:
            return text[: max(max_tokens, 0) * 4]
        enc = self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) <= max_tokens:
            return text
        return text[: enc["offset_mapping"][max_tokens][0]] if max_tokens > 0 else ""

    # ------------------------------------------------------------------- HTTP
    async def _request(self, method: str, path: str, payload: dict | None, client=None) -> dict[str, Any]:
        own = client is None
        client = client or httpx.AsyncClient(timeout=self.timeout, headers=self._headers)
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.max_attempts) | stop_after_delay(self.max_retry_seconds),
                wait=wait_exponential_jitter(initial=0.5, max=8.0),
                retry=retry_if_exception(_is_transient),
                reraise=False,
            ):
                with attempt:
                    response = await client.request(method, self.base_url + path, json=payload)
                    if response.status_code == 429 or response.status_code >= 500:
                        raise _Retryable(f"HTTP {response.status_code}: {response.text[:200]}")
                    if response.status_code >= 400:
                        raise BackendError(
                            f"server at {self.base_url} rejected the request: HTTP {response.status_code}: "
                            f"{response.text[:300]}"
                        )
                    return response.json()
        except RetryError as err:
            cause = err.last_attempt.exception()
            raise BackendError(
                f"server at {self.base_url} did not answer after retries: {type(cause).__name__}: {cause}",
                hint="is the server running? rerun the same command to resume where it stopped",
            ) from cause
        finally:
            if own:
                await client.aclose()
        raise AssertionError("unreachable")

    async def _gather(self, calls):
        semaphore = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout, headers=self._headers, limits=limits) as client:

            async def bounded(call):
                async with semaphore:
                    return await call(client)

            return await asyncio.gather(*(bounded(c) for c in calls))

    # ---------------------------------------------------------------- scoring
    def score(self, requests: list[ScoreRequest]) -> list[list[float]]:
        return asyncio.run(self._gather([self._score_one_call(r) for r in requests]))

    def _score_one_call(self, request: ScoreRequest):
        async def call(client) -> list[float]:
            payload = {
                "model": self.model_id,
                "prompt": request.prompt,
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": TOP_LOGPROBS,
            }
            answer = await self._request("POST", "/completions", payload, client)
            top = (answer["choices"][0].get("logprobs") or {}).get("top_logprobs") or [{}]
            top = top[0] or {}
            scores: list[float] = []
            for candidate in request.candidates:
                if candidate in top and self._single_token(candidate):
                    scores.append(float(top[candidate]))
                else:
                    scores.append(await self._echo_score(client, request.prompt, candidate))
            return scores

        return call

    def _single_token(self, candidate: str) -> bool:
        return self._tokenizer is None or len(self._tokenizer(candidate, add_special_tokens=False)["input_ids"]) == 1

    async def _echo_score(self, client, prompt: str, candidate: str) -> float:
        payload = {
            "model": self.model_id,
            "prompt": prompt + candidate,
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": 1,
        }
        answer = await self._request("POST", "/completions", payload, client)
        info = answer["choices"][0]["logprobs"]
        end = len(prompt) + len(candidate)
        total = 0.0
        for offset, logprob in zip(info["text_offset"], info["token_logprobs"], strict=False):
            if len(prompt) <= offset < end and logprob is not None:
                total += float(logprob)
        return total

    # ------------------------------------------------------------- generation
    def generate(
        self, prompts: list[str], *, n: int = 1, temperature: float = 0.0, max_tokens: int = 64
    ) -> list[list[str]]:
        def make(prompt: str):
            async def call(client) -> list[str]:
                payload = {
                    "model": self.model_id,
                    "prompt": prompt,
                    "n": n,
                    "temperature": temperature,
                    "max_tokens": max_tokens,
                }
                answer = await self._request("POST", "/completions", payload, client)
                return [choice["text"] for choice in answer["choices"]]

            return call

        return asyncio.run(self._gather([make(p) for p in prompts]))

    def close(self) -> None:
        pass
