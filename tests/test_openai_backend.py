"""The openai backend against a REAL vLLM server (started once for this module from .venv-vllm).

Scores must agree with the in-process hf backend (float32) up to the server's bf16 rounding; the CLI must
survive 503s, fail with exit 3 and one error line when the server goes away, and resume afterwards. Server
faults come from a small TCP proxy in front of the real server.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import read_lines, sst2_rows, write_jsonl

from llmst.backends.base import ScoreRequest
from llmst.errors import BackendError, ConfigError

SERVED = "smollm2-135m-instruct"
LLMST = [sys.executable, "-m", "llmst.cli"]
N_ROWS = 60
SINGLE = (" negative", " positive")  # the sentiment task's verbalizers, in label order
MULTI = (" very positive", " quite negative", " great")  # two multi-token candidates and a single-token one
FEW_SHOT = 'Movie review: "a joyless mess"\nThe reviewer\'s opinion of the movie is negative\n\n'
# The server computes in bf16: its logits are rounded to 1/8 at |logit| ~ 16-32, so single log-probs differ
# from float32 by up to ~0.15 nats (mean ~0.04).
ATOL, MEAN_TOL = 0.3, 0.1


def _prompt(text: str) -> str:
    from llmst.label.task import load_task

    return load_task("sentiment").render({"text": text}, text)


def _reference_requests() -> dict[str, list[ScoreRequest]]:
    rows = sst2_rows("dev", N_ROWS)
    prompts = [_prompt(r["text"]) for r in rows]
    return {
        "single": [ScoreRequest(p, SINGLE) for p in prompts],
        "multi": [ScoreRequest(p, MULTI) for p in prompts[:8]],
        "prefix": [ScoreRequest(FEW_SHOT + p, MULTI, len(FEW_SHOT)) for p in prompts[8:12]],
    }


def _hf_reference() -> dict[str, np.ndarray]:
    from llmst.backends.hf import HFBackend

    hf = HFBackend(SERVED, dtype="float32", batch_size=16)
    try:
        return {name: np.asarray(hf.score(reqs)) for name, reqs in _reference_requests().items()}
    finally:
        hf.close()


@dataclass
class Served:
    url: str
    port: int
    log: Path
    hf: Future  # dict of hf (float32) scores for _reference_requests()


@pytest.fixture(scope="module")
def served(smollm2_dir, tmp_path_factory):
    """A real vLLM server for the bundled model; the hf reference scores are computed while it starts.

    LLMST_TEST_VLLM_URL=http://127.0.0.1:PORT/v1 reuses a server that already serves the bundled model
    under its name (scripts/serve_vllm.sh), to iterate on these tests without the start-up wait.
    """
    from llmst.backends.vllm_server import start_vllm_server, vllm_python

    if os.environ.get("LLMST_TEST_VLLM_URL"):
        url = os.environ["LLMST_TEST_VLLM_URL"].rstrip("/")
        with ThreadPoolExecutor(1) as pool:
            yield Served(url, int(url.rsplit(":", 1)[1].split("/")[0]), Path("-"), pool.submit(_hf_reference))
        return
    python, missing = None, None
    try:
        python = vllm_python()
    except ConfigError as err:
        missing = err.message
    if missing:  # a missing vLLM environment fails these tests: they are part of `make test`
        pytest.fail(f"{missing}: run `make vllm-env` to create .venv-vllm", pytrace=False)
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with ThreadPoolExecutor(1) as pool:
        reference = pool.submit(_hf_reference)
        with start_vllm_server(smollm2_dir, served_name=SERVED, python=str(python), log_path=log) as url:
            yield Served(url, int(url.rsplit(":", 1)[1].split("/")[0]), log, reference)


# ------------------------------------------------------------------------------------------------- helpers
class FaultyProxy:
    """A TCP proxy (own thread and event loop) in front of the server: stop() drops every connection and
    refuses new ones until start(); the first `fail_posts` POST requests are answered with HTTP 503."""

    def __init__(self, target_port: int, fail_posts: int = 0):
        from llmst.backends.vllm_server import free_port

        self.target_port, self.fail_posts, self.failed = target_port, fail_posts, 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    def _call(self, coroutine) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def start(self) -> FaultyProxy:
        self._call(self._start())
        return self

    def stop(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just before stop(), handled after it: drop it too
            writer.transport.abort()
            return
        self._writers.add(writer)
        upstream = None
        try:
            head = b""
            if self.failed < self.fail_posts:  # look at the connection's first request
                head = await reader.readuntil(b"\r\n\r\n")
                if head.startswith(b"POST") and self.failed < self.fail_posts:
                    self.failed += 1
                    length = next(
                        (
                            int(line.split(b":")[1])
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length:")
                        ),
                        0,
                    )
                    await reader.readexactly(length)
                    writer.write(
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )
                    writer.close()  # graceful: the client reads the 503, then sees the close
                    await writer.wait_closed()
                    return
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._writers.add(upstream)
            if self._server is None:  # stop() ran while connecting
                raise ConnectionAbortedError
            upstream.write(head)
            await asyncio.gather(self._pipe(reader, upstream), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            for end in (writer, upstream):
                if end is not None:
                    end.close()  # flushes what is buffered; stop() aborts instead
                    self._writers.discard(end)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.close()


def _label_args(src: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [
        "label", str(src), "-o", str(out), "--task", "sentiment", "--backend", "openai", "--base-url", url,
        "--model", SERVED,
        "--calibrate", "none",  # raw scores: compared with the hf backend's raw argmax
        "--cache-path", str(out.with_name("cache.sqlite")), "-q", *extra,
    ]  # fmt: skip


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        LLMST + args, capture_output=True, text=True, timeout=600, cwd=cwd, env={**os.environ, **env}
    )


def _assert_close(got: np.ndarray, want: np.ndarray) -> None:
    diff = np.abs(np.asarray(got) - want)
    assert diff.max() <= ATOL and diff.mean() <= MEAN_TOL, f"max {diff.max():.3f}, mean {diff.mean():.3f}"


# --------------------------------------------------------------------------------------------------- tests
@pytest.mark.vllm
def test_cli_label_end_to_end_agrees_with_hf(served, tmp_path):
    rows = sst2_rows("dev", N_ROWS)
    src, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    result = _run(_label_args(src, out, served.url, "--concurrency", "16"), tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["labeled"] == N_ROWS and summary["rejected"] == 0
    records = read_lines(out)
    assert [r["id"] for r in records] == [r["id"] for r in rows]
    for record in records:
        assert abs(sum(record["probs"].values()) - 1.0) < 1e-6
    hf = served.hf.result()["single"]
    hf_labels = [("negative", "positive")[i] for i in hf.argmax(axis=1)]
    agree = np.mean([r["label"] == h for r, h in zip(records, hf_labels, strict=True)])
    assert agree >= 0.9, f"labels agree with the hf backend on {agree:.0%} of rows"


@pytest.mark.vllm
@pytest.mark.parametrize("mode", ["vllm", "generic", "text"])
def test_scores_match_hf_backend(served, mode):
    """Single- and multi-token candidates, with and without a separately tokenized prefix.

    vllm: token-id prompts, exact candidate log-probs (`logprob_token_ids`) + echo for multi-token ones;
    generic: what any OpenAI-compatible server gets (top-K, echo when a candidate is not in it);
    text: no local tokenizer (text prompts, echo offsets).
    """
    from llmst.backends.openai import OpenAIBackend

    backend = OpenAIBackend(served.url, SERVED, concurrency=16)
    if mode != "vllm":
        backend._vllm = False
    if mode == "text":
        backend._tokenizer = None
    requests, reference = _reference_requests(), served.hf.result()
    # a text prompt is tokenized in one piece by the server; the hf backend splits it at the prefix
    names = ["single", "multi"] + (["prefix"] if mode != "text" else [])
    for name in names:
        _assert_close(np.asarray(backend.score(requests[name])), reference[name])


@pytest.mark.vllm
def test_server_gone_then_resume(served, tmp_path):
    rows = sst2_rows("dev", 200)
    src, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    checkpoint = out.with_name(out.name + ".progress.json")
    proxy = FaultyProxy(served.port).start()
    args = _label_args(src, out, proxy.url, "--concurrency", "8")
    fast_fail = {"LLMST_OPENAI_MAX_ATTEMPTS": "3", "LLMST_OPENAI_RETRY_SECONDS": "5"}
    try:
        process = subprocess.Popen(
            LLMST + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
            env={**os.environ, **fast_fail},
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while not (
            checkpoint.exists() and json.loads(checkpoint.read_text() or "{}").get("labeled", 0) >= 32
        ):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no progress through the proxy"
            time.sleep(0.1)
        proxy.stop()
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 3, stderr
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "did not answer after 3 attempts" in errors[0], stderr
        assert "Traceback" not in stderr
        done = json.loads(checkpoint.read_text())["labeled"]
        assert 32 <= done < len(rows)

        # the server is back at another address (no proxy): the same served model, so the same job
        result = _run(_label_args(src, out, served.url, "--concurrency", "8"), tmp_path, **fast_fail)
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["resumed_rows"] == done and summary["labeled"] == len(rows)
    ids = [r["id"] for r in read_lines(out)]
    assert len(ids) == len(rows) and len(set(ids)) == len(ids)
    assert set(ids) == {r["id"] for r in rows}


@pytest.mark.vllm
def test_503s_are_retried(served, tmp_path):
    rows = sst2_rows("dev", 40)
    src, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    proxy = FaultyProxy(served.port, fail_posts=6).start()
    try:
        result = _run(_label_args(src, out, proxy.url, "--concurrency", "4"), tmp_path)
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr
    assert proxy.failed == 6
    assert len(read_lines(out)) == len(rows)


@pytest.mark.vllm
def test_generate_returns_n_completions(served):
    from llmst.backends.openai import OpenAIBackend

    backend = OpenAIBackend(served.url, SERVED)
    prompts = ["Once upon a time", "The three best things about summer are"]
    for temperature in (0.0, 0.8):
        outputs = backend.generate(prompts, n=3, temperature=temperature, max_tokens=12)
        assert len(outputs) == len(prompts)
        for completions in outputs:
            assert len(completions) == 3 and all(isinstance(c, str) and c for c in completions)


@pytest.mark.vllm
def test_generate_sends_at_most_four_stop_strings_and_cuts_at_the_rest(served, monkeypatch):
    from llmst.backends.openai import OpenAIBackend

    backend = OpenAIBackend(served.url, SERVED)
    prompt = "Once upon a time in a land far away there was"
    full = backend.generate([prompt], max_tokens=16)[0][0]
    stop = next((full[i : i + 3] for i in range(2, len(full) // 2) if full[i : i + 3].strip()), None)
    assert stop, f"no usable stop string in {full!r}"
    sent = []
    real = backend._completions

    async def spy(client, payload):
        sent.append(payload.get("stop"))
        return await real(client, payload)

    monkeypatch.setattr(backend, "_completions", spy)
    unused = ["<<1>>", "<<2>>", "<<3>>", "<<4>>"]  # the server gets these four; the fifth is cut here
    cut = backend.generate([prompt], max_tokens=16, stop=[*unused, stop])[0][0]
    assert sent == [unused]
    assert cut == full[: full.find(stop)]


@pytest.mark.vllm
def test_debate_resumes_and_reuses_answers_at_another_url_but_not_for_another_served_model(served, tmp_path):
    """A served debater is known by what /v1/models says of it (id, root, context length), not its URL: a run
    stopped after 2 questions resumes through a proxy on another port with every finished turn kept, and a
    new output there takes every turn from the answer cache; another model under the same name does not."""
    from dataclasses import replace

    from llmst.backends.openai import OpenAIBackend
    from llmst.debate.config import DebateConfig
    from llmst.debate.run import run_debate

    rows = [{"id": f"q{i}", "question": f"Is {i} even?", "answers": ["yes", "no"]} for i in range(5)]
    src, out = write_jsonl(tmp_path / "q.jsonl", rows), tmp_path / "debates.jsonl"
    config = DebateConfig(
        model=SERVED, backend="openai", base_url=served.url, turns=2, max_tokens=8, limit=2,
        cache_path=str(tmp_path / "cache.sqlite"), progress=False,
    )  # fmt: skip
    first = run_debate(src, out, config)
    assert first.questions == 2 and first.generated == 4
    proxy = FaultyProxy(served.port).start()
    try:
        elsewhere = replace(config, base_url=proxy.url, limit=None)
        resumed = run_debate(src, out, elsewhere)
        assert resumed.resumed_rows == 2 and resumed.questions == 5 and resumed.generated == 6
        again = run_debate(src, tmp_path / "again.jsonl", elsewhere)
        assert again.generated == 0 and again.from_cache == 10
        assert read_lines(tmp_path / "again.jsonl") == read_lines(out)
        other = OpenAIBackend(proxy.url, SERVED)
        other.fingerprint = f"{SERVED}|/elsewhere/other-weights|2048"  # another model under the same name
        with pytest.raises(ConfigError, match="different debate job"):
            run_debate(src, out, elsewhere, backend=other)
        fresh = run_debate(src, tmp_path / "other.jsonl", elsewhere, backend=other)
        assert fresh.from_cache == 0 and fresh.generated == 10
    finally:
        proxy.close()


@pytest.mark.vllm
def test_chat_generation_goes_through_chat_completions_with_the_models_template(served, smollm2_dir):
    """`chat=True` asks /chat/completions with one user message; the server's template gives the same reply
    as the raw completion of the template's text (so the template was applied once, by the server)."""
    from transformers import AutoTokenizer

    from llmst.backends.base import chat_text
    from llmst.backends.openai import OpenAIBackend

    backend = OpenAIBackend(served.url, SERVED)
    prompt = "Name one colour of the sky."
    paths = []
    real = backend._request

    async def spy(method, path, payload, client=None, **kwargs):
        paths.append(path)
        return await real(method, path, payload, client, **kwargs)

    backend._request = spy
    replied = backend.generate([prompt], max_tokens=10, chat=True)[0][0]
    assert paths == ["/chat/completions"] and replied.strip()
    rendered = chat_text(AutoTokenizer.from_pretrained(smollm2_dir), prompt, SERVED)
    assert backend.generate([rendered], max_tokens=10)[0][0] == replied


def test_unreachable_server_fails_fast_with_one_line():
    from llmst.backends.openai import OpenAIBackend
    from llmst.backends.vllm_server import free_port

    with pytest.raises(BackendError) as caught:
        OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1", SERVED)
    assert "did not answer after 3 attempts: connection refused" in caught.value.message
    assert "\n" not in caught.value.message


def test_startup_probe_gives_up_after_a_few_attempts(monkeypatch):
    """Fails fast by attempt count, not by the (larger) retry budget of scoring requests."""
    import socket

    from llmst.backends import openai as openai_module

    monkeypatch.setenv("LLMST_OPENAI_MAX_ATTEMPTS", "50")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted = []

    def hang_up() -> None:  # accept each connection and close it without answering
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)
            connection.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        with pytest.raises(BackendError) as caught:
            openai_module.OpenAIBackend(f"http://127.0.0.1:{port}/v1", SERVED)
    finally:
        listener.close()
    assert len(accepted) == openai_module.PROBE_ATTEMPTS == 3
    assert "did not answer after 3 attempts: connection closed by the server" in caught.value.message


def test_missing_vllm_env_names_the_make_target(tmp_path):
    from llmst.backends.vllm_server import start_vllm_server

    with pytest.raises(ConfigError) as caught:
        with start_vllm_server(tmp_path, served_name="x", python=str(tmp_path / "no-python")):
            pass
    assert "make vllm-env" in (caught.value.hint or "")


def test_a_failed_request_cancels_the_ones_still_in_flight():
    """The first failure ends a batch: a request hanging on a slow server is cancelled (not awaited for its
    whole read timeout) and the client closes after it."""
    from llmst.backends.openai import OpenAIBackend

    backend = OpenAIBackend.__new__(OpenAIBackend)  # no server probe: only the batching is under test
    backend.concurrency, backend.timeout, backend._headers = 4, 600.0, {}
    hanging_started, cancelled = asyncio.Event(), []

    async def hangs(client):
        hanging_started.set()
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            cancelled.append(client.is_closed)
            raise

    async def fails(client):
        await hanging_started.wait()
        raise BackendError("server gone")

    with pytest.raises(BackendError, match="server gone"):
        asyncio.run(backend._gather([hangs, fails]))
    assert cancelled == [False]  # cancelled while the client was still open
