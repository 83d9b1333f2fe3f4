"""OpenAI-compatible server backend (`vllm serve`, or any server speaking /v1/completions).

Scoring uses the legacy completions endpoint. When a local tokenizer of the served model is found, prompts
are sent as token ids built exactly as the `hf` backend builds them (a `prefix_chars` prefix is tokenized on
its own), so both backends score the same token sequences.
- fast path, single-token candidates: one request per prompt with `max_tokens=1`; a vLLM server is asked
  for the log-probs of exactly the candidate tokens (`logprob_token_ids`), any other server for its top-K
  next tokens (`logprobs=K`), in which a candidate may be missing;
- exact path, multi-token candidates (or a candidate missing from the top K): one request per prompt with
  `echo=true` and every such candidate appended (a list of prompts), summing the log-probs of the candidate
  tokens.
Requests run concurrently (bounded by `concurrency`) and are retried with exponential backoff on timeouts,
refused or dropped connections, 429 and 5xx. Retry limits come from the constructor, else from env
`LLMST_OPENAI_MAX_ATTEMPTS`, `LLMST_OPENAI_RETRY_SECONDS` and `LLMST_OPENAI_TIMEOUT`. The start-up probe of
`/v1/models` gives up after a few quick attempts. The API key is read from LLMST_API_KEY or OPENAI_API_KEY
and never logged.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from llmst.backends.base import ScoreRequest, cut_at_stop, normalize_base_url, truncate_with_tokenizer
from llmst.errors import BackendError, ConfigError

TOP_LOGPROBS = 20  # vLLM's default --max-logprobs
PROBE_ATTEMPTS = 3  # start-up probe of /v1/models: fail fast when nothing listens
PROBE_TIMEOUT = 10.0
MAX_STOP_STRINGS = 4  # the OpenAI completions API's limit (vLLM takes more)

Prompt = str | list[int]


class _Retryable(Exception):
    """A transient server answer (429/5xx) worth retrying."""


def _is_transient(err: BaseException) -> bool:
    return isinstance(err, (_Retryable, httpx.TransportError))


def _env(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError as err:
        raise ConfigError(f"{name} must be a number, got {value!r}") from err


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def _connect_reason(err: BaseException) -> str:
    """'connection refused' and the like, from the OS error under httpx's (async: uninformative) message."""
    cause: BaseException | None = err
    for _ in range(8):
        if cause is None:
            break
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno).lower() if cause.errno > 0 else str(cause.strerror)
        cause = cause.__cause__ or cause.__context__
    return f"connection failed ({_one_line(err)})"


def _describe(err: BaseException | None, timeout: float) -> str:
    """A short human reason for a failed request."""
    if isinstance(err, httpx.ConnectError):
        return _connect_reason(err)
    if isinstance(err, httpx.TimeoutException):
        return f"no answer within {timeout:g} s"
    if isinstance(err, httpx.RemoteProtocolError | httpx.ReadError):
        return "connection closed by the server"
    if isinstance(err, _Retryable):
        return _one_line(err)
    return f"{type(err).__name__}: {_one_line(err)}"


class OpenAIBackend:
    name = "openai"
    # The server decides dtype and device; `fingerprint` names the served model (id, root, context, parent).
    dtype = "server"
    device_kind = "server"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        concurrency: int = 32,
        timeout: float | None = None,
        max_attempts: int | None = None,
        max_retry_seconds: float | None = None,
        tokenizer: str | None = None,
    ):
        self.base_url = normalize_base_url(base_url)
        self.model_id = model
        self.concurrency = concurrency
        self.chunk_size = concurrency * 4  # keeps `concurrency` requests in flight across a chunk
        self.timeout = timeout if timeout is not None else _env("LLMST_OPENAI_TIMEOUT", 120.0)
        self.max_attempts = int(max_attempts or _env("LLMST_OPENAI_MAX_ATTEMPTS", 6))
        self.max_retry_seconds = (
            max_retry_seconds if max_retry_seconds is not None else _env("LLMST_OPENAI_RETRY_SECONDS", 60.0)
        )
        key = os.environ.get("LLMST_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        info = self._server_model()
        self.fingerprint = f"{info.get('id')}|{info.get('root', '')}|{info.get('max_model_len', '')}"
        if info.get("parent"):  # a LoRA adapter: the base model it runs on
            self.fingerprint += f"|{info['parent']}"
        self.max_context = int(info.get("max_model_len") or 2048)
        self._tokenizer = self._load_tokenizer([tokenizer] if tokenizer else [info.get("root"), model])
        # vLLM returns the log-prob of any requested token id (`logprob_token_ids`) and accepts logprobs=0
        self._vllm = info.get("owned_by") == "vllm"
        self._candidate_cache: dict[str, list[int]] = {}

    @property
    def scoring(self) -> str:
        """How requests are scored (part of the answer-cache key): vLLM token-id requests or generic."""
        return ("vllm" if self._vllm else "generic") + ("-ids" if self._tokenizer is not None else "-text")

    # ----------------------------------------------------------------- set-up
    def _server_model(self) -> dict[str, Any]:
        try:
            answer = asyncio.run(
                self._request(
                    "GET", "/models", None, attempts=PROBE_ATTEMPTS, timeout=min(self.timeout, PROBE_TIMEOUT)
                )
            )
        except BackendError as err:
            raise BackendError(
                err.message, hint="check --base-url, or start a server: scripts/serve_vllm.sh MODEL"
            ) from err.__cause__
        served = answer.get("data", [])
        for item in served:
            if item.get("id") == self.model_id:
                return item
        names = ", ".join(item.get("id", "?") for item in served) or "none"
        raise ConfigError(
            f"model '{self.model_id}' is not served at {self.base_url}",
            hint=f"served models: {names}; pass one of them with --model",
        )

    def _load_tokenizer(self, specs: list[str | None]):
        """A local tokenizer for token ids, counting and truncating; None: text prompts, 4 chars per token."""
        from llmst.models import resolve_model

        for spec in specs:
            if not spec:
                continue
            try:
                resolved = resolve_model(spec)
                if not resolved.is_local:
                    continue
                from transformers import AutoTokenizer

                return AutoTokenizer.from_pretrained(resolved.path)
            except (ConfigError, OSError, ValueError):
                continue
        return None

    def _encode(self, text: str, *, first: bool) -> list[int]:
        return self._tokenizer(text, add_special_tokens=first)["input_ids"]

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            return (len(text) + 3) // 4
        return len(self._encode(text, first=False))

    def truncate(self, text: str, max_tokens: int) -> str:
        if self._tokenizer is None:
            return text[: max(max_tokens, 0) * 4]
        return truncate_with_tokenizer(self._tokenizer, text, max_tokens)

    # ------------------------------------------------------------------- HTTP
    async def _request(
        self,
        method: str,
        path: str,
        payload: dict | None,
        client: httpx.AsyncClient | None = None,
        *,
        attempts: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """One JSON request, retried on transient failures; BackendError (one line) when it cannot succeed."""
        timeout = timeout or self.timeout
        attempts = attempts or self.max_attempts
        own = client is None
        client = client or httpx.AsyncClient(timeout=timeout, headers=self._headers)
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(attempts) | stop_after_delay(self.max_retry_seconds),
                wait=wait_exponential(multiplier=0.5, max=8.0) + wait_random(0, 0.5),
                retry=retry_if_exception(_is_transient),
                reraise=False,
            ):
                with attempt:
                    response = await client.request(method, self.base_url + path, json=payload)
                    if response.status_code == 429 or response.status_code >= 500:
                        raise _Retryable(f"HTTP {response.status_code}: {_one_line(response.text, 200)}")
                    if response.status_code >= 400:
                        raise BackendError(
                            f"server at {self.base_url} rejected the request: HTTP {response.status_code}: "
                            f"{_one_line(response.text)}"
                        )
                    try:
                        return response.json()
                    except json.JSONDecodeError as err:
                        raise BackendError(
                            f"server at {self.base_url} answered {path} with something that is not JSON: "
                            f"{_one_line(response.text, 120)}"
                        ) from err
        except RetryError as err:
            cause = err.last_attempt.exception()
            tries = err.last_attempt.attempt_number
            raise BackendError(
                f"server at {self.base_url} did not answer after {tries} attempt{'s' * (tries > 1)}: "
                f"{_describe(cause, timeout)}",
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

            tasks = [asyncio.ensure_future(bounded(c)) for c in calls]
            try:
                return await asyncio.gather(*tasks)
            finally:
                # the first failure ends the call: the requests still in flight are cancelled here, before
                # the client closes, so a straggler cannot hold the exit for its whole read timeout
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _completions(self, client, payload: dict[str, Any]) -> list[dict[str, Any]]:
        answer = await self._request("POST", "/completions", {"model": self.model_id, **payload}, client)
        return sorted(answer["choices"], key=lambda choice: choice.get("index", 0))

    # ------------------------------------------------------ cross-encoder pairs
    def score_pairs(
        self, pairs: list[tuple[str, str]], *, batch_size: int = 32, truncate: int | None = None
    ) -> list[float]:
        """A served cross-encoder's score of each (text_1, text_2) pair through the score API (`POST /score`,
        which `vllm serve` exposes for a one-label sequence-classification model: its sigmoid score, what
        sentence-transformers' `CrossEncoder.predict` gives). `truncate`: tokens per pair at most (and never
        more than the server's context, which vLLM refuses)."""
        extra = {"truncate_prompt_tokens": min(truncate, self.max_context)} if truncate else {}

        def make(part: list[tuple[str, str]]):
            async def call(client) -> list[float]:
                payload = {
                    "model": self.model_id,
                    "text_1": [a for a, _ in part],
                    "text_2": [b for _, b in part],
                    **extra,
                }
                answer = await self._request("POST", "/score", payload, client)
                data = sorted(answer.get("data", []), key=lambda item: item.get("index", 0))
                if len(data) != len(part):
                    raise BackendError(
                        f"server at {self.base_url} scored {len(data)} of {len(part)} pairs",
                        hint="is the served model a cross-encoder (one-label sequence classifier)?",
                    )
                return [float(item["score"]) for item in data]

            return call

        parts = [pairs[i : i + batch_size] for i in range(0, len(pairs), batch_size)]
        return [score for part in asyncio.run(self._gather([make(p) for p in parts])) for score in part]

    # ---------------------------------------------------------------- scoring
    def score(self, requests: list[ScoreRequest]) -> list[list[float]]:
        return asyncio.run(self._gather([self._score_one_call(r) for r in requests]))

    def _prompt(self, request: ScoreRequest) -> Prompt:
        """Token ids built as the hf backend builds them (text without a local tokenizer)."""
        if self._tokenizer is None:
            return request.prompt
        if request.prefix_chars > 0:
            head = request.prompt[: request.prefix_chars]
            return self._encode(head, first=True) + self._encode(
                request.prompt[request.prefix_chars :], first=False
            )
        return self._encode(request.prompt, first=True)

    def _candidate_ids(self, candidate: str) -> list[int]:
        ids = self._candidate_cache.get(candidate)
        if ids is None:
            ids = self._encode(candidate, first=False)
            if not ids:
                raise BackendError(f"the candidate continuation {candidate!r} encodes to no tokens")
            self._candidate_cache[candidate] = ids
        return ids

    def _score_one_call(self, request: ScoreRequest):
        async def call(client) -> list[float]:
            prompt = self._prompt(request)
            ids = [self._candidate_ids(c) for c in request.candidates] if self._tokenizer else None
            scores: list[float | None] = [None] * len(request.candidates)
            single = [i for i in range(len(scores)) if ids is None or len(ids[i]) == 1]
            if single:
                top = await self._next_token_logprobs(
                    client, prompt, [ids[i][0] for i in single] if ids else []
                )
                for i in single:
                    keys = [request.candidates[i]]
                    if ids is not None:
                        keys.append(self._tokenizer.decode([ids[i][0]]))
                    found = next((top[k] for k in keys if k in top), None)
                    scores[i] = float(found) if found is not None else None
            rest = [i for i, s in enumerate(scores) if s is None]
            if rest:
                exact = await self._echo_scores(
                    client,
                    prompt,
                    [request.candidates[i] for i in rest],
                    [ids[i] for i in rest] if ids else None,
                )
                for i, value in zip(rest, exact, strict=True):
                    scores[i] = value
            return [float(s) for s in scores]  # type: ignore[arg-type]  # every slot is filled

        return call

    async def _next_token_logprobs(self, client, prompt: Prompt, token_ids: list[int]) -> dict[str, float]:
        """Log-probs of next tokens keyed by token text: the requested ids on vLLM, else the top K."""
        payload: dict[str, Any] = {"prompt": prompt, "max_tokens": 1, "temperature": 0.0}
        if self._vllm and token_ids:
            payload.update(logprobs=1, logprob_token_ids=sorted(set(token_ids)))
        else:
            payload["logprobs"] = TOP_LOGPROBS
        choice = (await self._completions(client, payload))[0]
        top = (choice.get("logprobs") or {}).get("top_logprobs") or [{}]
        return top[0] or {}

    async def _echo_scores(
        self, client, prompt: Prompt, candidates: list[str], ids: list[list[int]] | None
    ) -> list[float]:
        """Exact log-prob of each full candidate: prompt + candidate echoed back with per-token log-probs."""
        if ids is not None:
            assert isinstance(prompt, list)
            batch: list[Any] = [prompt + cand for cand in ids]
        else:
            assert isinstance(prompt, str)
            batch = [prompt + cand for cand in candidates]
        payload = {
            "prompt": batch,
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": 0 if self._vllm else 1,
        }
        choices = await self._completions(client, payload)
        if len(choices) != len(batch):
            raise BackendError(f"server answered {len(choices)} choices for {len(batch)} echoed prompts")
        totals = []
        for index, choice in enumerate(choices):
            info = choice.get("logprobs") or {}
            logprobs = info.get("token_logprobs") or []
            if ids is not None:  # token-id prompt: the candidate is the slice right after the prompt
                start, end = len(prompt), len(prompt) + len(ids[index])
                picked = logprobs[start:end]
                if len(picked) != end - start or any(lp is None for lp in picked):
                    raise BackendError("server did not echo the prompt's log-probs (is echo supported?)")
            else:  # text prompt: the tokens that start inside the candidate
                start, end = len(prompt), len(prompt) + len(candidates[index])
                offsets = info.get("text_offset") or []
                picked = [lp for off, lp in zip(offsets, logprobs, strict=False) if start <= off < end]
                if not picked or any(lp is None for lp in picked):
                    raise BackendError("server did not echo the prompt's log-probs (is echo supported?)")
            totals.append(float(sum(picked)))
        return totals

    # ------------------------------------------------------------- generation
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
        """Completions, or with `chat` chat completions (`/chat/completions`: the server applies the model's
        chat template to one user message)."""
        greedy = temperature <= 0  # deterministic: vLLM rejects n > 1 here, so ask once and repeat
        # the OpenAI API takes at most 4 stop strings: the server stops at the first 4, the rest are cut here
        stop = list(stop or [])
        sent, extra = stop[:MAX_STOP_STRINGS], stop[MAX_STOP_STRINGS:]

        def make(prompt: str):
            async def call(client) -> list[str]:
                payload = {
                    "n": 1 if greedy else n,
                    "temperature": max(temperature, 0.0),
                    "max_tokens": max_tokens,
                    **({"stop": sent} if sent else {}),
                }
                if chat:
                    payload["messages"] = [{"role": "user", "content": prompt}]
                    answer = await self._request(
                        "POST", "/chat/completions", {"model": self.model_id, **payload}, client
                    )
                    choices = sorted(answer["choices"], key=lambda choice: choice.get("index", 0))
                    texts = [cut_at_stop(c["message"]["content"] or "", extra) for c in choices]
                else:
                    payload["prompt"] = prompt
                    texts = [cut_at_stop(c["text"], extra) for c in await self._completions(client, payload)]
                return texts * n if greedy else texts

            return call

        return asyncio.run(self._gather([make(p) for p in prompts]))

    def close(self) -> None:
        pass
