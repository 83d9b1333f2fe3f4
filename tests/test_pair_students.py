"""`llmst train --kind cross-encoder | bi-encoder` on tiny random-init BERTs: what is saved, what it learned,
bad pair files, resume after a kill, and two-rank torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from conftest import write_jsonl

from llmst.errors import ConfigError
from llmst.pairs.evaluate import evaluate_pairs
from llmst.stage import read_marker
from llmst.train import TrainConfig, train, train_signature

WORDS = ["red", "blue", "green", "black"]


def _pairs(n: int, start: int = 0) -> list[dict]:
    """Pairs whose score is 1 when both texts name the same colour, else 0: learnable from one word."""
    rng = np.random.default_rng(start)
    rows = []
    for i in range(n):
        a, b = rng.choice(len(WORDS), 2)
        if i % 2 == 0:
            b = a
        rows.append(
            {
                "id": f"p{start + i}",
                "text_a": f"a {WORDS[a]} car number {start + i}",
                "text_b": f"the {WORDS[b]} house {start + 2 * i}",
                "score": float(a == b),
            }
        )
    return rows


def _keyword_pairs(n: int, start: int = 0) -> list[dict]:
    """Pairs whose score is 1 when the second text says "excellent": what a tiny cross-encoder learns fast."""
    return [
        {
            "id": f"k{start + i}",
            "text_a": f"review of film number {start + i}",
            "text_b": f"{'excellent' if i % 2 else 'terrible'} acting, scene {start + 3 * i}",
            "score": float(i % 2),
        }
        for i in range(n)
    ]


def _config(tiny_bert_dir: str, kind: str, **extra) -> TrainConfig:
    options = dict(
        student=tiny_bert_dir, kind=kind, epochs=6, batch_size=8, learning_rate=3e-3, progress=False
    )
    return TrainConfig(**{**options, **extra})


@pytest.mark.parametrize(
    "kind, loss", [("bi-encoder", "cosent"), ("bi-encoder", "mse"), ("cross-encoder", "bce")]
)
def test_pair_students_learn_save_plain_sentence_transformers_folders_and_score_eval(
    tiny_bert_dir, tmp_path, kind, loss
):
    # a bi-encoder learns which colour a text names; a cross-encoder (from a random head) a keyword of text_b
    make = _pairs if kind == "bi-encoder" else _keyword_pairs
    data = write_jsonl(tmp_path / "pairs.jsonl", make(96))
    held = write_jsonl(tmp_path / "held.jsonl", [{**r, "label": r.pop("score")} for r in make(40, 500)])
    out = tmp_path / "model"
    config = _config(tiny_bert_dir, kind, loss=loss, eval=str(held), eval_gold_field="label")
    summary = train(data, out, config)
    assert summary.metrics["spearman"] >= 0.6, summary.metrics  # random init: about 0
    card = json.loads((out / "llmst_student.json").read_text())
    assert card["kind"] == kind and card["score_field"] == "score" and card["metrics"]["n"] == 40
    assert read_marker(out) == train_signature(data, config)
    assert "sentence-transformers" in (out / "README.md").read_text()
    # plain sentence-transformers folders, and evaluate_pairs reads them back to the same figure
    if kind == "bi-encoder":
        from sentence_transformers import SentenceTransformer

        assert SentenceTransformer(str(out)).encode(["a red car"]).shape == (1, 32)
    else:
        from sentence_transformers.cross_encoder import CrossEncoder

        scores = CrossEncoder(str(out)).predict([("a red car", "the red house"), ("a red car", "a blue car")])
        assert all(0.0 < s < 1.0 for s in scores)
    again = evaluate_pairs(out, held, score_field="label")
    assert again["spearman"] == pytest.approx(summary.metrics["spearman"], abs=1e-3)
    with pytest.raises(ConfigError, match="already holds a trained model of this data"):
        train(data, out, config)


def test_bad_pair_files_and_options_are_one_clear_error(tiny_bert_dir, tmp_path):
    rows = _pairs(6)
    cases = {
        "no text_b": ([*rows[:2], {"text_a": "x", "score": 1.0}], "line 3: no text"),
        "word score": ([*rows[:3], {**rows[3], "score": "high"}], "line 4: score 'high' is not a number"),
        "bool score": ([{**rows[0], "score": True}], "line 1: score True is not a number"),
    }
    for name, (bad, message) in cases.items():
        path = write_jsonl(tmp_path / f"{name}.jsonl", bad)
        with pytest.raises(ConfigError, match=message):
            train(path, tmp_path / name, _config(tiny_bert_dir, "bi-encoder"))
        assert not (tmp_path / name).exists(), "a bad input must not claim the output folder"
    wide = write_jsonl(tmp_path / "sts.jsonl", [{**r, "score": 5.0 * r["score"]} for r in rows])
    with pytest.raises(ConfigError, match=r"needs targets in \[0, 1\]"):
        train(wide, tmp_path / "w", _config(tiny_bert_dir, "cross-encoder"))
    train(wide, tmp_path / "cosent", _config(tiny_bert_dir, "bi-encoder", epochs=1))  # CoSENT: any scale
    with pytest.raises(ConfigError, match="does not train with --loss ce"):
        _config(tiny_bert_dir, "bi-encoder", loss="ce")
    with pytest.raises(ConfigError, match="--labels, --lora do not apply"):
        _config(tiny_bert_dir, "cross-encoder", labels="a,b", lora=True)
    with pytest.raises(ConfigError, match="reads two text fields"):
        _config(tiny_bert_dir, "bi-encoder", text_fields="text")


def test_a_killed_pair_run_resumes_from_its_checkpoint(tiny_bert_dir, tmp_path):
    import transformers

    data = write_jsonl(tmp_path / "pairs.jsonl", _pairs(48))
    out = tmp_path / "model"
    config = _config(tiny_bert_dir, "cross-encoder", epochs=2, save_steps=4)
    real_step, steps = transformers.Trainer.training_step, []

    def killed_in_step_6(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == 6:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    with mock.patch.object(transformers.Trainer, "training_step", killed_in_step_6):
        with pytest.raises(KeyboardInterrupt):
            train(data, out, config)
    assert (out / "checkpoints" / "checkpoint-4").is_dir() and not (out / "llmst_signature.json").exists()
    summary = train(data, out, config)
    assert summary.resumed_from.endswith("checkpoint-4") and summary.steps == 12
    assert read_marker(out) == train_signature(data, config)


def _launched_summary(launcher: list[str], args: list[str]) -> dict:
    """Run `llmst ARGS` under `launcher` (one torch thread per process); its JSON summary."""
    result = subprocess.run(
        [sys.executable, "-m", *launcher, "-m", "llmst", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout[result.stdout.index("{") :])


TORCHRUN_2 = ["torch.distributed.run", "--nproc_per_node", "2"]


def test_two_rank_torchrun_trains_a_bi_encoder(tiny_bert_dir, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", _pairs(96))
    held = write_jsonl(tmp_path / "held.jsonl", [{**r, "label": r.pop("score")} for r in _pairs(40, 500)])
    args = ["train", str(data), "--kind", "bi-encoder", "--student", tiny_bert_dir]
    args += ["--epochs", "8", "--batch-size", "8", "--learning-rate", "3e-3", "--quiet"]
    args += ["--eval", str(held), "--eval-gold-field", "label", "-o", str(tmp_path / "two")]
    summary = _launched_summary(TORCHRUN_2, args)
    assert summary["steps"] == 48  # 96 pairs x 8 epochs / (8 per batch x 2 ranks)
    assert summary["metrics"]["spearman"] >= 0.6
    assert (tmp_path / "two" / "modules.json").exists() and (
        tmp_path / "two" / "llmst_signature.json"
    ).exists()


def test_two_rank_torchrun_trains_a_cross_encoder(tiny_bert_dir, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", _keyword_pairs(96))
    held_rows = [{**r, "label": r.pop("score")} for r in _keyword_pairs(40, 500)]
    held = write_jsonl(tmp_path / "held.jsonl", held_rows)
    args = ["train", str(data), "--kind", "cross-encoder", "--student", tiny_bert_dir, "--epochs", "6"]
    args += ["--batch-size", "4", "--learning-rate", "3e-3", "--quiet", "--eval", str(held)]
    args += ["--eval-gold-field", "label", "-o", str(tmp_path / "two")]
    summary = _launched_summary(TORCHRUN_2, args)
    assert summary["steps"] == 72  # 96 pairs x 6 epochs / (4 per batch x 2 ranks): the 1-process test's steps
    assert summary["metrics"]["spearman"] >= 0.6
    assert (tmp_path / "two" / "llmst_signature.json").exists()
    from sentence_transformers.cross_encoder import CrossEncoder

    scores = CrossEncoder(str(tmp_path / "two")).predict([("a red car", "the red house")])
    assert scores.shape == (1,)


def test_the_shipped_accelerate_config_launches_pair_training(tiny_bert_dir, tmp_path):
    """`accelerate launch --config_file scripts/accelerate/ddp.yaml` with `--cpu` (on a machine without GPUs
    accelerate runs one process; its multi-GPU launcher is torchrun, tested above)."""
    data = write_jsonl(tmp_path / "pairs.jsonl", _pairs(48))
    config = Path(__file__).resolve().parents[1] / "scripts" / "accelerate" / "ddp.yaml"
    launcher = [
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "--cpu",
        "--mixed_precision",
        "no",
    ]
    args = ["train", str(data), "--kind", "bi-encoder", "--student", tiny_bert_dir, "--epochs", "2"]
    summary = _launched_summary(launcher, [*args, "--batch-size", "8", "--quiet", "-o", str(tmp_path / "bi")])
    assert summary["steps"] == 12  # 48 pairs x 2 epochs / 8 per batch, one process
    assert (tmp_path / "bi" / "modules.json").exists()


def test_evaluate_pairs_cli_matches_scipy_and_writes_a_scatter(tiny_bert_dir, tmp_path):
    from scipy.stats import spearmanr

    from llmst.pairs.evaluate import predicted_scores

    data = write_jsonl(tmp_path / "pairs.jsonl", _pairs(48))
    held_rows = [{**r, "label": r.pop("score")} for r in _pairs(30, 500)]
    held = write_jsonl(tmp_path / "held.jsonl", held_rows)
    train(data, tmp_path / "bi", _config(tiny_bert_dir, "bi-encoder", epochs=2))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmst",
            "evaluate-pairs",
            str(tmp_path / "bi"),
            str(held),
            "--report-dir",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    cosines = predicted_scores(
        tmp_path / "bi", [r["text_a"] for r in held_rows], [r["text_b"] for r in held_rows], "bi-encoder", 16
    )
    expected = spearmanr([r["label"] for r in held_rows], cosines).statistic
    assert report["kind"] == "bi-encoder" and report["spearman"] == pytest.approx(expected, abs=1e-3)
    assert (tmp_path / "r" / "scatter.png").stat().st_size > 1000
    assert json.loads((tmp_path / "r" / "report.json").read_text())["n"] == 30
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmst",
            "evaluate-pairs",
            str(tmp_path / "bi"),
            str(data),
            "--gold-field",
            "nope",
        ],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "nope None is not a number" in missing.stderr
