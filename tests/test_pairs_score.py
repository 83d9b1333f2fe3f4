"""`llmst pairs score`: cross-encoder and LLM-judge teachers (tiny random-init models), calibration onto a gold
scale against sklearn, judge values, bad rows, reuse, and a real kill -9 then resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import read_lines, write_jsonl

from llmst.errors import ConfigError
from llmst.pairs.config import ScoreConfig
from llmst.pairs.score import score_pairs, score_signature
from llmst.pairs.teachers import judge_values
from llmst.stage import read_marker

LLMST = [sys.executable, "-m", "llmst"]


def _pairs(n: int) -> list[dict]:
    return [
        {"id": f"p{i}", "text_a": f"a man plays guitar number {i}", "text_b": f"someone cooks dinner {i % 7}"}
        for i in range(n)
    ]


def test_a_cross_encoder_teacher_scores_like_predict_and_calibrates_like_sklearn(
    tmp_path, tiny_cross_encoder
):
    from sentence_transformers.cross_encoder import CrossEncoder
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LinearRegression

    rows = _pairs(30)
    source = write_jsonl(tmp_path / "pairs.jsonl", [{**r, "sampler": "bm25"} for r in rows])
    config = ScoreConfig(
        teachers=f"cross-encoder:{tiny_cross_encoder}", progress=False, cache_path=str(tmp_path / "c")
    )
    report = score_pairs(source, tmp_path / "scored.jsonl", config)
    scored = read_lines(tmp_path / "scored.jsonl")
    expected = CrossEncoder(tiny_cross_encoder).predict([(r["text_a"], r["text_b"]) for r in rows])
    name = tiny_cross_encoder.rstrip("/").rsplit("/", 1)[-1]
    assert [r["id"] for r in scored] == [r["id"] for r in rows] and report["scored"] == 30
    assert [r["scores"][name] for r in scored] == pytest.approx(list(expected), abs=1e-5)
    assert all(r["score"] == r["scores"][name] and r["sampler"] == "bm25" for r in scored)  # input kept
    assert read_marker(tmp_path / "scored.jsonl") == score_signature(source, config)

    # onto a gold scale: the mapping sklearn fits on the teacher's scores of the gold pairs
    gold_rows = [{**r, "label": float(i % 5) / 4} for i, r in enumerate(_pairs(40)[10:])]
    gold = write_jsonl(tmp_path / "gold.jsonl", gold_rows)
    targets = np.array([r["label"] for r in gold_rows])
    for method in ("isotonic", "linear"):
        mapped = ScoreConfig(**{**config.__dict__, "calibrate_on": str(gold), "calibration": method})
        score_pairs(source, tmp_path / f"{method}.jsonl", mapped)
        out = read_lines(tmp_path / f"{method}.jsonl")
        # the teacher's stored scores of the gold pairs (as predicted, to 6 decimals) and of the pairs
        gold_raw = np.array(
            [r["score"] for r in read_lines(tmp_path / f"{method}.jsonl.teacher-{name}.gold.jsonl")]
        )
        assert gold_raw == pytest.approx(
            CrossEncoder(tiny_cross_encoder).predict([(r["text_a"], r["text_b"]) for r in gold_rows]),
            abs=1e-5,
        )
        raw = np.array([r["scores"][name] for r in out])
        if method == "isotonic":
            fitted = IsotonicRegression(out_of_bounds="clip").fit(gold_raw, targets).predict(raw)
        else:
            fitted = LinearRegression().fit(gold_raw.reshape(-1, 1), targets).predict(raw.reshape(-1, 1))
        assert [r["calibrated"][name] for r in out] == pytest.approx(list(fitted), abs=1e-4), method
        assert [r["score"] for r in out] == [r["calibrated"][name] for r in out]


def test_an_llm_judge_scores_p_yes_or_the_expected_grade(tmp_path, tiny_model_dir):
    source = write_jsonl(tmp_path / "pairs.jsonl", _pairs(6))
    cache = str(tmp_path / "c.sqlite")
    for task in ("pair-similarity", "pair-similarity-scale"):
        out = tmp_path / f"{task}.jsonl"
        config = ScoreConfig(
            teachers=f"llm:{tiny_model_dir}", judge_task=task, progress=False, cache_path=cache
        )
        score_pairs(source, out, config)
        name = tiny_model_dir.rstrip("/").rsplit("/", 1)[-1]
        labeled = read_lines(tmp_path / f"{task}.jsonl.teacher-{name}.labeled.jsonl")
        names = list(labeled[0]["probs"])
        values = judge_values(names)
        for row, judged in zip(read_lines(out), labeled, strict=True):
            expected = sum(judged["probs"][n] * v for n, v in zip(names, values, strict=True))
            assert row["scores"][name] == pytest.approx(expected, abs=1e-5)
            assert judged["calibration"] == "none"
    assert list(judge_values(["no", "yes"])) == [0.0, 1.0]
    assert list(judge_values(["0", "1", "2", "3", "4", "5"])) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    with pytest.raises(ConfigError, match="neither yes/no nor numbers"):
        judge_values(["similar", "different"])


def test_bad_rows_are_rejected_with_their_line_and_nothing_is_lost(tmp_path, tiny_cross_encoder):
    rows = [*_pairs(4), {"id": "x", "text_a": "only one side"}, {"id": "y", "text_a": "a", "text_b": 3}]
    source = write_jsonl(tmp_path / "pairs.jsonl", rows)
    (tmp_path / "pairs.jsonl").write_text((tmp_path / "pairs.jsonl").read_text() + "{broken\n")
    config = ScoreConfig(teachers=f"cross-encoder:{tiny_cross_encoder}", progress=False, cache=False)
    report = score_pairs(source, tmp_path / "scored.jsonl", config)
    rejects = read_lines(tmp_path / "scored.jsonl.rejects.jsonl")
    assert report["scored"] == 4 and report["rejected"] == 3
    assert sorted(r["line"] for r in rejects) == [5, 6, 7]
    with pytest.raises(ConfigError, match="expected cross-encoder:PATH"):
        ScoreConfig(teachers="bert:foo")
    with pytest.raises(ConfigError, match="needs --teacher"):
        ScoreConfig()
    with pytest.raises(ConfigError, match="share the name"):
        ScoreConfig(teachers=f"cross-encoder:{tiny_cross_encoder},cross-encoder:{tiny_cross_encoder}/")


def test_a_rerun_reuses_every_teachers_scores(tmp_path, tiny_cross_encoder):
    source = write_jsonl(tmp_path / "pairs.jsonl", _pairs(10))
    config = ScoreConfig(teachers=f"cross-encoder:{tiny_cross_encoder}", progress=False, cache=False)
    score_pairs(source, tmp_path / "scored.jsonl", config)
    teacher_file = (
        tmp_path / f"scored.jsonl.teacher-{tiny_cross_encoder.rstrip('/').rsplit('/', 1)[-1]}.jsonl"
    )
    assert len(read_lines(teacher_file)) == 10
    before = teacher_file.stat().st_mtime_ns
    score_pairs(source, tmp_path / "scored.jsonl", config)
    assert teacher_file.stat().st_mtime_ns == before
    write_jsonl(tmp_path / "pairs.jsonl", _pairs(11))  # other input: refused (as llmst label), never mixed
    with pytest.raises(ConfigError, match="other input content"):
        score_pairs(source, tmp_path / "scored.jsonl", config)
    score_pairs(source, tmp_path / "scored.jsonl", ScoreConfig(**{**config.__dict__, "overwrite": True}))
    assert len(read_lines(teacher_file)) == 11 and len(read_lines(tmp_path / "scored.jsonl")) == 11


def test_teacher_scores_land_in_a_new_cache_and_serve_another_output(tmp_path, tiny_cross_encoder):
    """The first run fills an empty answer cache (an empty cache once read as false and was never written);
    a run into another output then asks the model nothing."""
    from unittest import mock

    from sentence_transformers.cross_encoder import CrossEncoder

    from llmst.cache import AnswerCache

    assert AnswerCache(None)  # empty, yet a cache
    source = write_jsonl(tmp_path / "pairs.jsonl", _pairs(6))
    config = ScoreConfig(
        teachers=f"cross-encoder:{tiny_cross_encoder}", cache_path=str(tmp_path / "new.sqlite")
    )
    first = score_pairs(source, tmp_path / "first.jsonl", config)
    assert len(AnswerCache(tmp_path / "new.sqlite")) == 6
    with mock.patch.object(CrossEncoder, "predict", side_effect=AssertionError("asked the model")):
        second = score_pairs(source, tmp_path / "second.jsonl", config)
    assert first["scored"] == second["scored"] == 6
    assert read_lines(tmp_path / "first.jsonl") == read_lines(tmp_path / "second.jsonl")


def test_kill_9_during_scoring_then_resume(tmp_path, tiny_cross_encoder):
    rows = _pairs(3000)
    source = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "scored.jsonl"
    args = ["pairs", "score", str(source), "-o", str(out), "--teacher", f"cross-encoder:{tiny_cross_encoder}"]
    args += ["--batch-size", "1", "-q", "--cache-path", str(tmp_path / "c.sqlite")]
    process = subprocess.Popen(LLMST + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    name = tiny_cross_encoder.rstrip("/").rsplit("/", 1)[-1]
    checkpoint = tmp_path / f"scored.jsonl.teacher-{name}.jsonl.progress.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if checkpoint.exists() and json.loads(checkpoint.read_text())["rows_consumed"] >= 128:
            break
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = json.loads(checkpoint.read_text())["rows_consumed"]
    assert 0 < done < 3000, "the kill should land mid-run"
    assert not out.exists()
    result = subprocess.run(LLMST + args, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["scored"] == 3000
    teacher_rows = read_lines(tmp_path / f"scored.jsonl.teacher-{name}.jsonl")
    assert [r["id"] for r in teacher_rows] == [r["id"] for r in rows]  # none lost, none twice
    assert [r["id"] for r in read_lines(out)] == [r["id"] for r in rows]


@pytest.fixture(scope="module")
def servable_cross_encoder(tmp_path_factory) -> str:
    """A random-init one-label BERT cross-encoder small enough for a test, with a head size (64) that vLLM's
    CPU attention supports (the 16 of tiny_bert_dir is refused)."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from llmst.models import resolve_model

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l6").path)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=1,
        intermediate_size=128,
        max_position_embeddings=128,
        num_labels=1,
    )
    base = tmp_path_factory.mktemp("servable-bert")
    BertForSequenceClassification(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    folder = tmp_path_factory.mktemp("servable-ce")
    CrossEncoder(str(base), num_labels=1).save_pretrained(str(folder))
    return str(folder)


@pytest.mark.vllm
def test_a_cross_encoder_served_by_vllm_scores_like_the_local_one(tmp_path, servable_cross_encoder):
    """`--teacher cross-encoder:NAME --backend openai --base-url URL` scores through a real vLLM server's score
    API: the same scores as sentence-transformers' CrossEncoder on the same folder, cached under the served
    name (a rerun asks the server nothing)."""
    from unittest import mock

    from llmst.backends.openai import OpenAIBackend
    from llmst.backends.vllm_server import start_vllm_server

    source = write_jsonl(tmp_path / "pairs.jsonl", [*_pairs(12), {"id": "bad", "text_a": "", "text_b": "x"}])
    local = score_pairs(
        source,
        tmp_path / "local.jsonl",
        ScoreConfig(
            teachers=f"cross-encoder:{servable_cross_encoder}", cache_path=str(tmp_path / "c.sqlite")
        ),
    )
    assert local["scored"] == 12 and local["rejected"] == 1
    # float32 like the local run (the last --dtype wins), no compile warm-up, and no prefix caching, which
    # vLLM refuses for an encoder-only model ("requires at least one cacheable group")
    float32 = ["--dtype", "float32", "--enforce-eager", "--no-enable-prefix-caching"]
    with start_vllm_server(
        servable_cross_encoder, served_name="tiny-ce", max_model_len=128, extra_args=float32
    ) as url:
        config = ScoreConfig(
            teachers="cross-encoder:tiny-ce",
            backend="openai",
            base_url=url,
            cache_path=str(tmp_path / "c.sqlite"),
        )
        served = score_pairs(source, tmp_path / "served.jsonl", config)
        assert served["scored"] == 12 and served["rejected"] == 1
        expected = {r["id"]: r["score"] for r in read_lines(tmp_path / "local.jsonl")}
        got = {r["id"]: r["scores"]["tiny-ce"] for r in read_lines(tmp_path / "served.jsonl")}
        assert got.keys() == expected.keys()
        assert max(abs(got[k] - expected[k]) for k in got) < 1e-4
        assert len(set(got.values())) > 1  # a real model: the scores differ from pair to pair
        with mock.patch.object(OpenAIBackend, "score_pairs", side_effect=AssertionError("asked the server")):
            again = score_pairs(source, tmp_path / "again.jsonl", config)
        assert again["scored"] == 12


def test_a_cross_encoder_runs_in_process_or_on_a_server_not_in_vllm():
    with pytest.raises(ConfigError, match="--backend vllm runs llm teachers only"):
        ScoreConfig(teachers="cross-encoder:some-ce", backend="vllm")
