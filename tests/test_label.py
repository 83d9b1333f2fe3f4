"""The label stage: record contract, bad input, cache, resume after crashes, signatures, honest summaries."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from conftest import read_lines, write_jsonl

from llmst import stage
from llmst.backends.hf import HFBackend
from llmst.errors import ConfigError
from llmst.label.config import LabelConfig
from llmst.label.run import Labeler, label_corpus, label_signature
from llmst.readers import Row

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
    if kwargs.get("labels") is None:
        kwargs.setdefault("task", "sentiment")
    kwargs.setdefault("cache_path", str(tmp_path / "cache.sqlite"))
    kwargs.setdefault("progress", False)
    kwargs.setdefault("batch_size", 8)
    kwargs.setdefault("calibrate", "none")  # raw scores, unless a test is about calibration
    return LabelConfig(**kwargs)


def test_default_calibration_is_prior():
    assert LabelConfig(task="sentiment").calibrate == "prior"


class FailingBackend:
    """Delegates to a real backend, then raises on the N-th score call (fault injection)."""

    def __init__(self, inner, fail_on_call: int, error=RuntimeError("injected crash")):
        self.inner, self.fail_on_call, self.error, self.calls = inner, fail_on_call, error, 0
        self.name, self.model_id, self.fingerprint = inner.name, inner.model_id, inner.fingerprint
        self.dtype, self.device_kind = inner.dtype, inner.device_kind
        self.max_context, self.chunk_size = inner.max_context, inner.chunk_size

    def score(self, requests):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise self.error
        return self.inner.score(requests)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def direct_probs(backend, rows: list[dict]) -> np.ndarray:
    """Sentiment probs (negative, positive) of `rows` scored straight through the backend."""
    from llmst.backends.base import ScoreRequest
    from llmst.label.calibrate import softmax
    from llmst.label.task import load_task

    task = load_task("sentiment")
    candidates, owner = task.candidates()
    prefix = task.instruction
    requests = [ScoreRequest(prefix + task.render(r, r["text"]), candidates, len(prefix)) for r in rows]
    scores = np.asarray(backend.score(requests))
    pooled = np.stack(
        [
            np.logaddexp.reduce(scores[:, [j for j, o in enumerate(owner) if o == k]], axis=1)
            for k in range(2)
        ],
        axis=1,
    )
    assert task.label_names == ["negative", "positive"]
    return softmax(pooled)


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


def test_adhoc_labels_with_two_text_fields_render_both_and_reject_a_missing_one(tmp_path, backend):
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"title": "Great", "body": "loved it"},
            {"title": "Only a title"},
            {"title": "Bad", "body": "hated it"},
        ],
    )
    out = tmp_path / "out.jsonl"
    cfg = config(tmp_path, labels=["good", "bad"], text_fields=["title", "body"])
    summary = label_corpus(src, out, cfg, backend=backend)
    assert summary.rows_read == 3 == summary.labeled + summary.rejected
    assert [r["title"] for r in read_lines(out)] == ["Great", "Bad"]
    rejects = read_lines(tmp_path / "out.jsonl.rejects.jsonl")
    assert len(rejects) == 1 and "body" in rejects[0]["reason"]
    # the prompt names both fields (its scores equal those of the rendered prompt scored directly)
    from llmst.backends.base import ScoreRequest

    task = cfg.build_task()
    prompt = task.render({"title": "Great", "body": "loved it"}, "Great\nloved it")
    assert "Title: Great\nBody: loved it\n" in prompt
    candidates, owner = task.candidates()
    assert owner == [0, 1]  # one verbalizer per label: the label probs are a softmax of the two scores
    direct = np.array(backend.score([ScoreRequest(prompt, candidates)])[0])
    probs = np.exp(direct - direct.max()) / np.exp(direct - direct.max()).sum()
    first = read_lines(out)[0]["probs"]
    assert [first["good"], first["bad"]] == pytest.approx(list(probs), abs=1e-5)


def test_a_long_multi_field_row_is_cut_in_its_longest_field(tmp_path, backend):
    long_body = " ".join(f"word{i}" for i in range(3000))
    src = write_jsonl(tmp_path / "in.jsonl", [{"title": "Short title", "body": long_body}])
    out = tmp_path / "out.jsonl"
    cfg = config(tmp_path, labels=["good", "bad"], text_fields=["title", "body"])
    summary = label_corpus(src, out, cfg, backend=backend)
    assert summary.labeled == 1 and summary.truncated == 1
    labeler = Labeler(cfg, cfg.build_task(), backend, None)
    prepared, _ = labeler.prepare([Row(1, {"title": "Short title", "body": long_body})])
    prompt = prepared[0].prompt
    assert "Title: Short title\n" in prompt and prompt.endswith("Label:")
    assert backend.count_tokens(prompt) <= backend.max_context - 8


def test_two_long_fields_share_the_context(tmp_path, backend):
    both = " ".join(f"w{i}" for i in range(400))
    cfg = config(tmp_path, labels=["good", "bad"], text_fields=["question", "passage"])
    labeler = Labeler(cfg, cfg.build_task(), backend, None)
    prepared, _ = labeler.prepare([Row(1, {"question": both, "passage": both})])
    prompt = prepared[0].prompt
    assert prepared[0].truncated and "Question: w0" in prompt and "Passage: w0" in prompt
    assert backend.count_tokens(prompt) <= backend.max_context - 8


def test_rerun_uses_cache_and_overwrite_keeps_answers(tmp_path, backend):
    src = write_jsonl(tmp_path / "in.jsonl", corpus(30))
    out = tmp_path / "out.jsonl"
    first = label_corpus(src, out, config(tmp_path), backend=backend)
    assert first.computed == 30 and first.from_cache == 0
    assert first.docs_per_second is not None and first.docs_per_second > 0
    computed_rows = read_lines(out)
    expected = direct_probs(
        backend, corpus(30)
    )  # the backend's own scores, outside label_corpus and its cache
    got = np.array([[r["probs"]["negative"], r["probs"]["positive"]] for r in computed_rows])
    assert np.allclose(got, expected, atol=1e-6)
    again = label_corpus(src, out, config(tmp_path, overwrite=True), backend=backend)
    assert again.from_cache == 30 and again.computed == 0
    assert again.docs_per_second is None  # served from the cache: no speed to report
    assert read_lines(out) == computed_rows  # cached answers give the very same records
    done = label_corpus(src, out, config(tmp_path), backend=backend)  # complete job: nothing to do
    assert done.rows_read == 0 and done.labeled == 30 and len(read_lines(out)) == 30
    assert done.computed == 0 and done.docs_per_second is None


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


def test_prior_fit_and_labeling_each_show_progress(tmp_path, backend, capsys):
    """The prior fit scores up to 5,000 rows before the first output row: it has its own progress bar."""
    src = write_jsonl(tmp_path / "in.jsonl", corpus(12))
    label_corpus(
        src, tmp_path / "out.jsonl", config(tmp_path, calibrate="prior", progress=True), backend=backend
    )
    err = capsys.readouterr().err
    assert "fitting the prior" in err and "12/12" in err
    label_corpus(src, tmp_path / "quiet.jsonl", config(tmp_path, calibrate="prior"), backend=backend)
    assert "fitting the prior" not in capsys.readouterr().err


def test_fitted_calibration_travels_with_the_labels(tmp_path, backend):
    """Records carry the fitted biases; --calibration-from applies a pool's biases to a gold file instead of
    refitting on its few rows, so `filter --method conformal` sees two files calibrated alike."""
    pool_src = write_jsonl(tmp_path / "pool.jsonl", corpus(40))
    gold_src = write_jsonl(tmp_path / "gold.jsonl", corpus(12)[::-1])
    pool = tmp_path / "pool.labeled.jsonl"
    fitted = label_corpus(pool_src, pool, config(tmp_path, calibrate="prior"), backend=backend)
    rows = read_lines(pool)
    assert all(r["calibration"] == "prior" and r["calibration_bias"] == fitted.calibration_bias for r in rows)
    refit = label_corpus(
        gold_src, tmp_path / "refit.jsonl", config(tmp_path, calibrate="prior"), backend=backend
    )
    assert refit.calibration_bias != fitted.calibration_bias  # refitting on 12 other rows moves the biases
    reused_config = config(tmp_path, calibration_from=str(pool))
    reused = label_corpus(gold_src, tmp_path / "gold.labeled.jsonl", reused_config, backend=backend)
    assert reused.calibration == "prior" and reused.calibration_bias == fitted.calibration_bias
    assert reused.prior_fit_computed == 0
    assert {json.dumps(r["calibration_bias"]) for r in read_lines(tmp_path / "gold.labeled.jsonl")} == {
        json.dumps(fitted.calibration_bias)
    }
    # the file's content is an input of the signature: relabel the pool, and the gold labels are stale
    signature = label_signature(gold_src, reused_config)
    label_corpus(pool_src, pool, config(tmp_path, calibrate="contextual", overwrite=True), backend=backend)
    assert label_signature(gold_src, reused_config) != signature
    # a file that does not say how it was calibrated is refused before any model work
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"text": "x", "label": "positive"}])
    with pytest.raises(ConfigError, match="do not say how they were calibrated"):
        label_corpus(
            gold_src, tmp_path / "g2.jsonl", config(tmp_path, calibration_from=str(plain)), backend=backend
        )


def test_prompt_ensemble_in_one_run(tmp_path, backend):
    """--template, --orders and --zero-shot-member: every member labeled with one backend, calibrated on its
    own, fused by the mean; a rerun scores nothing; a gold file takes each member's pool calibration."""
    from llmst.label.ensemble import ensemble_members, members_dir

    shots = write_jsonl(
        tmp_path / "shots.jsonl",
        [{"text": f"example {i}", "label": ["negative", "positive"][i % 2]} for i in range(4)],
    )
    variant = tmp_path / "short.yaml"
    variant.write_text(
        "task: short\nlabels:\n  negative: [' negative']\n  positive: [' positive']\n"
        "prompt: 'Review: {{ text }}\\nSentiment:'\n"
    )
    src = write_jsonl(tmp_path / "in.jsonl", corpus(16))
    cfg = config(
        tmp_path, calibrate="prior", few_shot=str(shots), shots=4, templates=[str(variant)], orders=2,
        zero_shot_member=True,
    )  # fmt: skip
    assert list(ensemble_members(cfg)) == [
        "sentiment-order0", "sentiment-order1", "short-order0", "short-order1", "sentiment-zero-shot"
    ]  # fmt: skip
    out = tmp_path / "ens.jsonl"
    summary = label_corpus(src, out, cfg, backend=backend)
    assert len(summary.members) == 5 and summary.labeled == 16
    members = {n: read_lines(members_dir(out) / f"{n}.jsonl") for n in summary.members}
    assert len({json.dumps(rows[0]["calibration_bias"]) for rows in members.values()}) == 5  # own fits
    fused = read_lines(out)
    for i, record in enumerate(fused):
        mean = np.mean([rows[i]["probs"]["positive"] for rows in members.values()])
        assert record["probs"]["positive"] == pytest.approx(mean, abs=1e-9)
        assert len(record["sources"]) == 5 and record["calibration"] == "aggregate:mean"
    assert stage.read_marker(out) == label_signature(src, cfg)
    assert label_signature(src, replace(cfg, orders=1)) != label_signature(src, cfg)
    again = label_corpus(src, out, cfg, backend=backend)
    assert again.computed == 0 and read_lines(out) == fused
    # the gold file: member k gets the pool's member k calibration
    gold = write_jsonl(tmp_path / "gold.jsonl", corpus(6))
    scored = label_corpus(
        gold, tmp_path / "gold.ens.jsonl", replace(cfg, calibration_from=str(out)), backend=backend
    )
    for name, member in scored.members.items():
        assert member["calibration_bias"] == members[name][0]["calibration_bias"]
    assert read_lines(tmp_path / "gold.ens.jsonl")[0]["calibration_bias"] == fused[0]["calibration_bias"]
    with pytest.raises(ConfigError, match="need --few-shot"):
        config(tmp_path, orders=2)


def test_prior_em_is_the_em_estimate_over_content_free_corrected_posteriors(tmp_path, backend):
    from llmst.label.calibrate import estimate_prior

    src = write_jsonl(tmp_path / "in.jsonl", corpus(40))
    raw = label_corpus(src, tmp_path / "raw.jsonl", config(tmp_path), backend=backend)
    assert raw.prior_estimate is None
    contextual = label_corpus(
        src, tmp_path / "ctx.jsonl", config(tmp_path, calibrate="contextual"), backend=backend
    )
    reference = np.array([contextual.calibration_bias[n] for n in ("negative", "positive")])
    scores = np.log(
        [[r["probs"]["negative"], r["probs"]["positive"]] for r in read_lines(tmp_path / "raw.jsonl")]
    )
    expected, _, _ = estimate_prior(scores, reference, seed=0)
    naive, _, _ = estimate_prior(scores, seed=0)
    assert np.abs(expected - naive).max() > 1e-3  # the reference matters
    out = tmp_path / "em.jsonl"
    summary = label_corpus(src, out, config(tmp_path, calibrate="prior", prior="em"), backend=backend)
    shares = [summary.prior_estimate[n]["share"] for n in ("negative", "positive")]
    assert shares == pytest.approx(expected.tolist(), abs=1e-6)
    assert all(v["low"] <= v["share"] <= v["high"] for v in summary.prior_estimate.values())
    mean = np.mean([r["probs"]["positive"] for r in read_lines(out)])
    assert mean == pytest.approx(shares[1], abs=1e-3)  # the biases match the estimated prior
    with pytest.raises(ConfigError, match="3 shares for the task's 2 labels"):
        label_corpus(
            src,
            tmp_path / "bad.jsonl",
            config(tmp_path, calibrate="prior", prior="0.2,0.3,0.5"),
            backend=backend,
        )
    for bad, message in (("0,1", "share > 0"), ("estimated", "unknown value")):
        with pytest.raises(ConfigError, match=message):
            config(tmp_path, calibrate="prior", prior=bad)


def test_ensemble_refuses_mismatched_labels_and_repeated_ids_before_labeling(tmp_path, backend):
    shots = write_jsonl(
        tmp_path / "shots.jsonl", [{"text": "x", "label": "negative"}, {"text": "y", "label": "positive"}]
    )
    other = tmp_path / "other.yaml"
    other.write_text("labels: [positive, negative]\nprompt: '{{ text }}'\n")  # same names, other order
    src = write_jsonl(tmp_path / "in.jsonl", corpus(4))
    with pytest.raises(ConfigError, match="same order"):
        label_corpus(src, tmp_path / "o.jsonl", config(tmp_path, templates=[str(other)]), backend=backend)
    repeated = write_jsonl(tmp_path / "rep.jsonl", [{"text": "same"}, {"text": "other"}, {"text": "same"}])
    cfg = config(tmp_path, few_shot=str(shots), shots=2, orders=2)
    with pytest.raises(ConfigError, match="lines 1 and 3 have the same id"):
        label_corpus(repeated, tmp_path / "r.jsonl", cfg, backend=backend)
    assert not (tmp_path / "r.jsonl.members").exists() or not list(
        (tmp_path / "r.jsonl.members").glob("*.jsonl")
    )
    with pytest.raises(ConfigError, match="needs --select random"):
        config(tmp_path, few_shot=str(shots), orders=2, select="knn")


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


def test_dtype_change_misses_the_cache(tmp_path, tiny_model_dir):
    """The dtype actually computed in is part of the cache key: float32 answers never serve a bf16 run."""
    src = write_jsonl(tmp_path / "in.jsonl", corpus(12))
    first = label_corpus(src, tmp_path / "f32.jsonl", config(tmp_path, model=tiny_model_dir, dtype="float32"))
    assert first.computed == 12 and first.from_cache == 0
    same = label_corpus(src, tmp_path / "f32b.jsonl", config(tmp_path, model=tiny_model_dir, dtype="float32"))
    assert same.from_cache == 12 and same.computed == 0  # the cache works: only the dtype differs below
    other = label_corpus(
        src, tmp_path / "bf16.jsonl", config(tmp_path, model=tiny_model_dir, dtype="bfloat16")
    )
    assert other.computed == 12 and other.from_cache == 0


def test_no_cache_counts_prior_fit_reuse_honestly(tmp_path, backend):
    src = write_jsonl(tmp_path / "in.jsonl", corpus(30))
    out = tmp_path / "out.jsonl"
    summary = label_corpus(src, out, config(tmp_path, calibrate="prior", cache=False), backend=backend)
    assert summary.from_cache == 0  # nothing came from a cache on disk
    assert summary.reused_from_prior_fit == 30 and summary.computed == 0  # scored once, for the prior fit
    assert summary.prior_fit_computed == 30 and summary.docs_per_second > 0
    assert not (tmp_path / "cache.sqlite").exists()
    # a cached rerun of the same job: every answer from disk, the prior fit's included, and no speed
    label_corpus(src, out, config(tmp_path, calibrate="prior", overwrite=True), backend=backend)
    cached = label_corpus(src, out, config(tmp_path, calibrate="prior", overwrite=True), backend=backend)
    assert cached.from_cache == 30 and cached.reused_from_prior_fit == 0 and cached.computed == 0
    assert cached.prior_fit_computed == 0 and cached.docs_per_second is None
    partial = label_corpus(  # prior fit on 10 rows: the other 20 are computed in the main pass
        src,
        tmp_path / "p.jsonl",
        config(tmp_path, calibrate="prior", cache=False, prior_fit_rows=10),
        backend=backend,
    )
    assert (partial.from_cache, partial.reused_from_prior_fit, partial.computed) == (0, 10, 20)


def test_replaced_corpus_is_refused_not_mixed(tmp_path, backend):
    src = write_jsonl(tmp_path / "in.jsonl", corpus(20))
    out = tmp_path / "out.jsonl"
    label_corpus(src, out, config(tmp_path, limit=5), backend=backend)  # a partial output of this corpus
    unchanged = tmp_path / "extended.jsonl"
    label_corpus(src, unchanged, config(tmp_path, limit=5), backend=backend)
    extended = label_corpus(src, unchanged, config(tmp_path), backend=backend)  # same content: resumes
    assert extended.resumed_rows == 5 and extended.labeled == 20
    with pytest.raises(ConfigError, match="more than --limit 5"):  # never a file that contradicts its options
        label_corpus(src, unchanged, config(tmp_path, limit=5), backend=backend)
    new_rows = [{"text": f"another corpus, line {i}", "gold": 0} for i in range(20)]
    write_jsonl(src, new_rows)  # same path, other content
    with pytest.raises(ConfigError, match="input file changed") as caught:
        label_corpus(src, out, config(tmp_path), backend=backend)
    assert "--overwrite" in caught.value.hint
    assert len(read_lines(out)) == 5  # the old output is left as it was
    fresh = label_corpus(src, out, config(tmp_path, overwrite=True), backend=backend)
    assert fresh.resumed_rows == 0 and fresh.labeled == 20
    assert [r["text"] for r in read_lines(out)] == [r["text"] for r in new_rows]


def test_complete_output_records_its_signature(tmp_path, tiny_model_dir):
    src = write_jsonl(tmp_path / "in.jsonl", corpus(8))
    out = tmp_path / "out.jsonl"
    cfg = config(tmp_path, model=tiny_model_dir, dtype="float32", limit=6)
    sig = label_signature(src, cfg)  # no model loaded
    assert not stage.is_current(out, sig)
    summary = label_corpus(src, out, cfg)
    assert summary.signature == sig and stage.is_current(out, sig)
    # options that never change records keep the signature; those that do change it
    assert label_signature(src, config(tmp_path, model=tiny_model_dir, dtype="float32", limit=6, batch_size=2,
                                       cache_path=str(tmp_path / "other.sqlite"), progress=True)) == sig  # fmt: skip
    for changed in (
        {"dtype": "bfloat16"},
        {"limit": 7},
        {"calibrate": "prior"},
        {"task": None, "labels": "a,b"},
    ):
        options = {"model": tiny_model_dir, "dtype": "float32", "limit": 6, **changed}
        assert label_signature(src, config(tmp_path, **options)) != sig, changed
    # an extension of the same job is incomplete until it finishes, then current under its own signature
    longer = config(tmp_path, model=tiny_model_dir, dtype="float32")
    label_corpus(src, out, longer)
    assert stage.is_current(out, label_signature(src, longer)) and not stage.is_current(out, sig)
    write_jsonl(src, corpus(9))  # the input's content is part of the signature
    assert not stage.is_current(out, label_signature(src, longer))


def test_few_shot_signature_matches_the_run(tmp_path, tiny_model_dir):
    shots = write_jsonl(
        tmp_path / "shots.jsonl",
        [{"text": f"example {i}", "label": ["negative", "positive"][i % 2]} for i in range(6)],
    )
    src = write_jsonl(tmp_path / "in.jsonl", corpus(4))
    cfg = config(tmp_path, model=tiny_model_dir, dtype="float32", few_shot=str(shots), shots=2)
    summary = label_corpus(src, tmp_path / "out.jsonl", cfg)
    assert summary.signature == label_signature(src, cfg)
    assert label_signature(src, config(tmp_path, model=tiny_model_dir, dtype="float32", few_shot=str(shots),
                                       shots=2, seed=1)) != summary.signature  # fmt: skip


def test_a_larger_limit_never_appends_rows_calibrated_on_fewer_rows(tmp_path, backend):
    """`--calibrate prior` with `--limit` under `--prior-fit-rows` fits the prior on the first --limit rows;
    raising --limit would fit other biases, so the rows already written cannot be extended: refused. With the
    prior fitted on rows both runs share, the output extends with one calibration."""
    src = write_jsonl(tmp_path / "in.jsonl", corpus(30))
    out = tmp_path / "out.jsonl"
    label_corpus(src, out, config(tmp_path, calibrate="prior", limit=10), backend=backend)
    with pytest.raises(ConfigError, match="holds rows calibrated as prior") as err:
        label_corpus(src, out, config(tmp_path, calibrate="prior", limit=20), backend=backend)
    assert "--overwrite" in err.value.hint
    assert len(read_lines(out)) == 10  # nothing appended
    fixed = tmp_path / "fixed.jsonl"
    label_corpus(src, fixed, config(tmp_path, calibrate="prior", prior_fit_rows=8, limit=10), backend=backend)
    summary = label_corpus(
        src, fixed, config(tmp_path, calibrate="prior", prior_fit_rows=8, limit=20), backend=backend
    )
    rows = read_lines(fixed)
    assert summary.resumed_rows == 10 and len(rows) == 20
    assert len({json.dumps(r["calibration_bias"], sort_keys=True) for r in rows}) == 1


def test_knn_demonstrations_never_include_the_query_itself(tiny_model_dir):
    """A pool row with the query's text (case and spacing aside) is never its demonstration: it would show
    the query its own gold label (tune's folds, or a corpus that holds the gold rows)."""
    from llmst.label.fewshot import Example, FewShotSelector
    from llmst.label.task import load_task

    task = load_task("sentiment")
    texts = ["a gripping, moving film", "dull and far too long", "the best film of the year", "a total mess"]
    pool = [Example({"text": t}, t, ["positive", "negative"][i % 2]) for i, t in enumerate(texts)]
    selector = FewShotSelector(pool, task, shots=2, select="knn")
    for query in texts:
        block = selector.blocks(["  " + query.upper() + " "])[0]
        assert query not in block.lower() and block.count("Movie review") == 2
    other = selector.blocks(["an unrelated sentence"])[0]
    assert other.count("Movie review") == 2  # nothing excluded when no pool row is the query
