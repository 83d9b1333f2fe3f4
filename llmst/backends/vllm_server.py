"""Start a real vLLM OpenAI-compatible server as a child process (tests, benchmarks, local serving).

vLLM runs from its own virtual environment (it pins its own torch and transformers), found in this order:
the `python` argument, env `LLMST_VLLM_PYTHON`, `<repo>/.venv-vllm/bin/python`. The recipe is the one that
works on CPU and GPU alike: `python -m vllm.entrypoints.openai.api_server --dtype bfloat16
--enable-prefix-caching`, with `VLLM_CPU_KVCACHE_SPACE` (GiB of KV cache; ignored on GPUs).

```python
with start_vllm_server(resolve_model("smollm2-135m-instruct").path, served_name="smollm2-135m-instruct") as url:
    backend = OpenAIBackend(url, "smollm2-135m-instruct")
```
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from llmst.errors import BackendError, ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_TAIL_LINES = 30


def vllm_python(python: str | None = None) -> Path:
    """The interpreter of the vLLM environment (raises ConfigError when it is missing)."""
    chosen = python or os.environ.get("LLMST_VLLM_PYTHON") or str(REPO_ROOT / ".venv-vllm" / "bin" / "python")
    path = Path(chosen)
    if not path.exists():
        raise ConfigError(
            f"no vLLM python at {path}",
            hint="run `make vllm-env` (creates .venv-vllm) or set LLMST_VLLM_PYTHON",
        )
    return path


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(
    python: Path, model_dir: str, served_name: str, port: int, max_model_len: int
) -> list[str]:
    """The vLLM command line (the `vllm` console script does not work everywhere; `python -m` does).

    Keep in step with scripts/serve_vllm.sh.
    """
    return [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(max_model_len),
        "--dtype",
        "bfloat16",
        "--enable-prefix-caching",
        "--disable-uvicorn-access-log",  # one log line per request costs server CPU and buries errors
    ]


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM the server when the process that started it dies, so a
    killed test run or script does not leave a server behind. No-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left after `grace` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # also reaps worker processes that outlived the leader
    except ProcessLookupError:
        pass
    process.wait()


def _wait_ready(process: subprocess.Popen, base: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code = process.poll()
        if code is not None:
            raise BackendError(
                f"vLLM server exited with code {code} during start-up; last log lines:\n{_log_tail(log_path)}",
                hint=f"full log: {log_path}",
            )
        try:
            if httpx.get(base + "/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise BackendError(
                f"vLLM server not ready after {timeout:.0f} s; last log lines:\n{_log_tail(log_path)}",
                hint=f"full log: {log_path}",
            )
        time.sleep(1.0)


@contextmanager
def start_vllm_server(
    model_dir: str | os.PathLike,
    *,
    served_name: str,
    python: str | None = None,
    port: int | None = None,
    kv_cache_gib: int = 2,
    max_model_len: int = 2048,
    log_path: str | os.PathLike | None = None,
    startup_timeout: float = 420.0,
    extra_args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Serve `model_dir` (a transformers folder) under `served_name`; yields `http://127.0.0.1:PORT/v1`.

    Waits until `/health` answers; raises BackendError with the tail of the server log if the server dies
    or is not ready within `startup_timeout` seconds. On exit the whole process group is terminated.
    `extra_args` are appended to the vLLM command line; `extra_env` is added to its environment. The server
    log goes to `log_path` (default: a temporary file named in errors).
    """
    interpreter = vllm_python(python)
    if not (Path(model_dir) / "config.json").exists():
        raise ConfigError(f"{model_dir} is not a transformers model folder (no config.json)")
    port = port or free_port()
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix=f"vllm-{port}-", suffix=".log")
        os.close(handle)
        log = Path(name)
    else:
        log = Path(log_path)
        log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib), **(extra_env or {})}
    command = server_command(interpreter, str(model_dir), served_name, port, max_model_len) + list(extra_args)
    root = f"http://127.0.0.1:{port}"
    with open(log, "ab") as sink:
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # own process group: one signal stops the API server and its workers
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    try:
        _wait_ready(process, root, log, startup_timeout)
        yield root + "/v1"
    finally:
        _stop(process)


def main(argv: list[str] | None = None) -> None:
    """`python -m llmst.backends.vllm_server MODEL_DIR NAME [PORT]`: serve until Ctrl-C or SIGTERM."""
    args = argv if argv is not None else sys.argv[1:]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwinds the context manager: server stopped
    if len(args) not in (2, 3):
        sys.exit("usage: python -m llmst.backends.vllm_server MODEL_DIR SERVED_NAME [PORT]")
    with start_vllm_server(
        args[0], served_name=args[1], port=int(args[2]) if len(args) == 3 else None
    ) as url:
        print(url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
