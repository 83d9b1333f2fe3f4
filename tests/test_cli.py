"""The CLI as users run it: exit codes, one-line errors, kill -9 then resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import read_lines, write_jsonl

LLMST = [sys.executable, "-m", "llmst.cli"]


def run(args, tmp_path, env: dict | None = None):
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        LLMST + args, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=environment
    )


def test_help_lists_commands(tmp_path):
    result = run(["--help"], tmp_path)
    assert result.returncode == 0
    for command in ("label", "evaluate", "models", "tasks"):
        assert command in result.stdout
    assert "--calibrate" in run(["label", "--help"], tmp_path).stdout
    # option help is shown as written: square brackets are not eaten as Rich markup
    pairs_help = run(["pairs", "score", "--help"], tmp_path, {"COLUMNS": "300"}).stdout
    assert 'pip install "llmst[ray]"' in pairs_help


def test_user_errors_are_one_clear_line(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "hi"}])
    cases = [
        (
            [
                "label",
                str(tmp_path / "missing.jsonl"),
                "-o",
                str(tmp_path / "o.jsonl"),
                "--task",
                "sentiment",
            ],
            "input not found",
        ),
        (["label", str(src), "-o", str(tmp_path / "o.jsonl"), "--task", "nope"], "unknown task 'nope'"),
        (
            [
                "label",
                str(src),
                "-o",
                str(tmp_path / "o.jsonl"),
                "--task",
                "sentiment",
                "--model",
                "./no/model",
            ],
            "model path not found",
        ),
        (
            [
                "label",
                str(src),
                "-o",
                str(tmp_path / "o.jsonl"),
                "--task",
                "sentiment",
                "--calibrate",
                "magic",
            ],
            "'magic' is not one of",
        ),
        (
            [
                "label",
                str(src),
                "-o",
                str(tmp_path / "o.jsonl"),
                "--task",
                "sentiment",
                "--backend",
                "openai",
                "--base-url",
                "http://127.0.0.1:9/v1",
            ],
            "did not answer",
        ),
    ]
    for args, message in cases:
        result = run(args, tmp_path)
        assert result.returncode in (2, 3), (args, result.stderr)
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[0].startswith("error: ")


def test_kill_9_then_resume(tmp_path, tiny_model_dir):
    rows = [{"id": f"doc-{i}", "text": f"document {i} " + "word " * (i % 13)} for i in range(300)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    args = [
        "label",
        str(src),
        "-o",
        str(out),
        "--task",
        "sentiment",
        "--model",
        tiny_model_dir,
        "--batch-size",
        "2",
        "-q",
        "--cache-path",
        str(tmp_path / "cache.sqlite"),
        "--dtype",
        "float32",
    ]
    process = subprocess.Popen(LLMST + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoint = tmp_path / "out.jsonl.progress.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if checkpoint.exists() and json.loads(checkpoint.read_text())["rows_consumed"] >= 40:
            break
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(read_lines(out)) if out.exists() else 0
    assert 0 < done_before < 300, "the kill should land mid-run"
    result = run(args, tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    final = read_lines(out)
    assert len(final) == 300
    assert len({r["id"] for r in final}) == 300
    assert [r["id"] for r in final] == [r["id"] for r in rows]
    assert summary["resumed_rows"] >= 40
    assert summary["from_cache"] + summary["computed"] == 300 - summary["resumed_rows"]
