"""The label stage: record contract, bad input, cache, resume after crashes."""

from __future__ import annotations

import json
import math

import pytest
from conftest import read_lines, write_jsonl

from llmst.backends.hf import HFBackend
from llmst.errors import ConfigError
from llmst.label.run import LabelConfig, label_corpus

CONTRACT = {
    "id",
    "label",
    "probs",
    "confidence",
    "margin",
    "entropy",
    "model",
    "task",
    "prompt_hash",
    "calibration",
}


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return HFBackend(tiny_model_dir, dtype="float32", batch_size=8, max_context=128)


def corpus(n: int) -> list[dict]:
    return [
        {"text": f"review number {i}: {'great' if i % 2 else 'awful'} movie {i * 7}", "gold": i % 2}
        for i in range(n)
    ]


def config(tmp_path, **kwargs) -> LabelConfig:
    kwargs.setdefault("cache_path", str(tmp_path / "cache.sqlite"))
    kwargs.setdefault("progress", False)
    kwargs.setdefault("batch_size", 8)
    return LabelConfig(**kwargs)


class FailingBackend:
    """Delegates to a real backend, then raises on the N-th score call (fault injection)."""

    def __init__(self, inner, fail_on_call: int, error=RuntimeError("injected crash")):
        self.inner, self.fail_on_call, self.error, self.calls = inner, fail_on_call, error, 0
        self.name, self.model_id, self.fingerprint = inner.name, inner.model_id, inner.fingerprint
        self.max_context, self.chunk_size = inner.max_context, inner.chunk_size

    def score(self, requests):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise self.error
        return self.inner.score(requests)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_records_follow_the_contract(tmp_path, backend):
    src = write_jsonl(tmp_path / "in.jsonl", corpus(20))
    out = tmp_path / "out.jsonl"
    summary = label_corpus(src, out, config(tmp_path), backend=backend)
    rows = read_lines(out)
    assert summary.labeled == 20 and len(rows) == 20 and summary.rejected == 0
    for row in rows:
        assert CONTRACT <= set(row)
        assert row["gold"] in (0, 1) and row["text"].startswith("review")  # input fields kept
        assert math.isclose(sum(row["probs"].values()), 1.0, abs_tol=1e-6)
        assert row["label"] == max(row["probs"], key=row["probs"].get)
        assert row["confidence"] == pytest.approx(max(row["probs"].values()))
        assert row["margin"] >= 0 and 0 <= row["entropy"] <= math.log(2) + 1e-9
        assert row["task"] == "sentiment" and row["calibration"] == "none"
    assert len({row["id"] for row in rows}) == 20
    import datasets

    loaded = datasets.load_dataset("json", data_files=str(out), split="train")
    assert loaded.num_rows == 20 and "probs" in loaded.column_names


def test_bad_input_goes_to_rejects_and_never_crashes(tmp_path, backend):
    src = tmp_path / "bad.jsonl"
    good = json.dumps({"text": "fine text"}).encode()
    lines = [
        good,
        b'{"text": "unterminated',
        json.dumps({"other": "no text field"}).encode(),
        json.dumps({"text": "   "}).encode(),
        b'{"text": "bad \xff\xfe bytes"}',
        b"[1, 2, 3]",
        json.dumps({"text": "long " * 400}).encode(),
        good,
    ]
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"
    summary = label_corpus(src, out, config(tmp_path), backend=backend)
    rejects = read_lines(tmp_path / "out.jsonl.rejects.jsonl")
    reasons = {r["line"]: r["reason"] for r in rejects}
    assert set(reasons) == {2, 3, 4, 5, 6}
    assert "malformed JSON" in reasons[2]
    assert "missing text field 'text'" in reasons[3]
    assert reasons[4] == "empty text"
    assert "invalid UTF-8" in reasons[5]
    assert "not an object" in reasons[6]
    rows = read_lines(out)
    assert summary.labeled == 3 and summary.rejected == 5 and len(rows) == 3
    assert summary.truncated == 1 and [r["truncated"] for r in rows] == [False, True, False]


def test_csv_and_several_text_fields(tmp_path, backend):
    src = tmp_path / "in.csv"
    src.write_text('title,body\n"Great","a, quoted, body"\nBad,worse\n', encoding="utf-8")
    task = tmp_path / "task.yaml"
    task.write_text(
        "task: pair\ntext_fields: [title, body]\nlabels: {good: [' good'], bad: [' bad', ' poor']}\n"
        "prompt: 'Title: {{ title }}\\nBody: {{ body }}\\nVerdict:'\n",
        encoding="utf-8",
    )
    out = tmp_path / "out.jsonl"
    label_corpus(src, out, config(tmp_path, task=str(task)), backend=backend)
    rows = read_lines(out)
    assert [r["title"] for r in rows] == ["Great", "Bad"] and set(rows[0]["probs"]) == {"good", "bad"}


def test_rerun_uses_cache_and_overwrite_keeps_answers(tmp_path, backend):
    src = write_jsonl(tmp_path / "in.jsonl", corpus(30))
    out = tmp_path / "out.jsonl"
    first = label_corpus(src, out, config(tmp_path), backend=backend)
    assert first.computed == 30 and first.from_cache == 0
    again = label_corpus(src, out, config(tmp_path, overwrite=True), backend=backend)
    assert again.from_cache == 30 and again.computed == 0
    assert read_lines(out) == read_lines(out)  # sanity
    done = label_corpus(src, out, config(tmp_path), backend=backend)  # complete job: nothing to do
    assert done.rows_read == 0 and done.labeled == 30 and len(read_lines(out)) == 30


def test_crash_then_resume_has_no_duplicates(tmp_path, backend):
    rows = corpus(100)
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    cfg = config(tmp_path)
    small = HFBackend(backend.model_id, dtype="float32", batch_size=5, max_context=128)  # chunks of 20 rows
    with pytest.raises(RuntimeError, match="injected"):
        label_corpus(src, out, cfg, backend=FailingBackend(small, fail_on_call=3))
    partial = read_lines(out)
    assert len(partial) == 40
    with open(out, "ab") as handle:  # a half-written line, as after kill -9 mid-write
        handle.write(b'{"id": "half')
    summary = label_corpus(src, out, cfg, backend=small)
    final = read_lines(out)
    assert len(final) == 100 and len({r["id"] for r in final}) == 100
    assert summary.resumed_rows == 40 and summary.rows_read == 60
    assert [r["text"] for r in final] == [r["text"] for r in rows]  # input order kept


def test_failed_calls_are_never_cached(tmp_path, backend):
    src = write_jsonl(tmp_path / "in.jsonl", corpus(10))
    out = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        label_corpus(src, out, config(tmp_path), backend=FailingBackend(backend, fail_on_call=1))
    from llmst.cache import AnswerCache

    assert len(AnswerCache(tmp_path / "cache.sqlite")) == 0


def test_other_job_on_same_output_is_refused(tmp_path, backend):
    src = write_jsonl(tmp_path / "in.jsonl", corpus(5))
    out = tmp_path / "out.jsonl"
    label_corpus(src, out, config(tmp_path), backend=backend)
    with pytest.raises(ConfigError, match="different labeling job"):
        label_corpus(src, out, config(tmp_path, labels=["yes", "no"], task=None), backend=backend)


def test_calibration_shifts_predictions_to_the_prior(tmp_path, backend):
    src = write_jsonl(tmp_path / "in.jsonl", corpus(40))
    out = tmp_path / "out.jsonl"
    summary = label_corpus(src, out, config(tmp_path, calibrate="prior"), backend=backend)
    probs = [r["probs"]["positive"] for r in read_lines(out)]
    assert sum(probs) / len(probs) == pytest.approx(0.5, abs=1e-3)
    assert set(summary.calibration_bias) == {"negative", "positive"}
    out2 = tmp_path / "out2.jsonl"
    label_corpus(src, out2, config(tmp_path, calibrate="contextual"), backend=backend)
    assert all(r["calibration"] == "contextual" for r in read_lines(out2))


def test_few_shot_random_and_knn(tmp_path, backend):
    shots = write_jsonl(
        tmp_path / "shots.jsonl",
        [{"text": f"example {i}", "label": ["negative", "positive"][i % 2]} for i in range(6)]
        + [{"text": "x", "label": 1}],
    )
    src = write_jsonl(tmp_path / "in.jsonl", corpus(6))
    for select in ("random", "knn"):
        out = tmp_path / f"out-{select}.jsonl"
        cfg = config(tmp_path, few_shot=str(shots), shots=4, select=select)
        summary = label_corpus(src, out, cfg, backend=backend)
        assert summary.labeled == 6
    bad = write_jsonl(tmp_path / "bad_shots.jsonl", [{"text": "x", "label": "neutral"}])
    with pytest.raises(ConfigError, match="not one of"):
        label_corpus(src, tmp_path / "o.jsonl", config(tmp_path, few_shot=str(bad)), backend=backend)


def test_limit_and_adhoc_labels(tmp_path, backend):
    src = write_jsonl(tmp_path / "in.jsonl", corpus(25))
    out = tmp_path / "out.jsonl"
    summary = label_corpus(
        src,
        out,
        config(tmp_path, task=None, labels=["sports", "politics", "science"], limit=7),
        backend=backend,
    )
    rows = read_lines(out)
    assert (
        summary.labeled == 7 and len(rows) == 7 and set(rows[0]["probs"]) == {"sports", "politics", "science"}
    )
