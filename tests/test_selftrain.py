"""Label-issue detection with out-of-fold students, and the self-training loop (run, report, resume)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import read_lines, sst2_rows, write_jsonl

from llmst.errors import ConfigError
from llmst.experiments.selftrain import load_selftrain_config, run_selftrain
from llmst.filter.config import FilterConfig
from llmst.filter.stage import run_filter
from llmst.train.oof import find_label_issues, stratified_folds


def test_stratified_folds_partition_every_label():
    labels = np.array([0] * 10 + [1] * 6)
    folds = stratified_folds(labels, 3, seed=0)
    assert set(folds) == {0, 1, 2}
    for fold in range(3):
        held = labels[folds == fold]
        assert 3 <= (held == 0).sum() <= 4 and (held == 1).sum() == 2
    with pytest.raises(ConfigError, match="at least 7 rows"):
        stratified_folds(labels, 7, seed=0)


def test_find_label_issues_flags_confidently_contradicted_labels():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 2, size=200)
    probs = np.where(true[:, None] == np.arange(2), 0.9, 0.1) + rng.uniform(-0.05, 0.05, size=(200, 2))
    probs /= probs.sum(axis=1, keepdims=True)
    noisy = true.copy()
    flipped = rng.choice(200, size=20, replace=False)
    noisy[flipped] = 1 - noisy[flipped]
    issues = find_label_issues(noisy, probs)
    assert set(np.flatnonzero(issues)) == set(flipped)


def test_student_oof_filter_runs_end_to_end(tiny_bert_dir, tmp_path):
    rows = []
    for row in sst2_rows("dev", 40):
        p = 0.85 if row["gold"] else 0.15
        rows.append(
            {
                **row,
                "label": "positive" if p > 0.5 else "negative",
                "probs": {"negative": 1 - p, "positive": p},
            }
        )
    labeled = write_jsonl(tmp_path / "labeled.jsonl", rows)
    config = FilterConfig(method="student-oof", student=tiny_bert_dir, folds=2, student_epochs=1)
    report = run_filter(labeled, tmp_path / "kept.jsonl", config)
    details = report["details"]
    assert details["folds"] == 2 and details["score"] == "out-of-fold self-confidence"
    assert report["n_kept"] == 40 - details["n_label_issues"]
    assert len(read_lines(tmp_path / "kept.jsonl")) == report["n_kept"]
    with pytest.raises(ConfigError, match="folds"):
        FilterConfig(method="student-oof", folds=1)


def _selftrain_yaml(tmp_path, tiny_model_dir, tiny_bert_dir, **extra) -> str:
    pool = [{"id": r["id"], "text": r["text"], "gold": r["gold"]} for r in sst2_rows("dev", 40)]
    write_jsonl(tmp_path / "pool.jsonl", pool)
    write_jsonl(
        tmp_path / "dev.jsonl", [{"text": r["text"], "gold": r["gold"]} for r in sst2_rows("test", 16)]
    )
    config = {
        "corpus": "pool.jsonl",
        "out_dir": "run",
        "rounds": 2,
        "dev": "dev.jsonl",
        "curriculum": [0.5],
        "label": {
            "task": "sentiment",
            "model": tiny_model_dir,
            "calibrate": "prior",
            "cache_path": str(tmp_path / "c.sqlite"),
        },
        "filter": {"method": "per-class"},
        "train": {"student": tiny_bert_dir, "epochs": 1, "batch_size": 8},
        **extra,
    }
    path = tmp_path / "selftrain.yaml"
    import yaml

    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_selftrain_two_rounds_report_and_resume(tmp_path, tiny_model_dir, tiny_bert_dir):
    config = load_selftrain_config(_selftrain_yaml(tmp_path, tiny_model_dir, tiny_bert_dir))
    report = run_selftrain(config)
    run = tmp_path / "run"
    assert [r["round"] for r in report["rounds"]] == [0, 1]
    assert report["rounds"][0]["filter"] == "per-class" and report["rounds"][1]["filter"] == "curriculum"
    assert report["rounds"][1]["coverage"] == pytest.approx(0.5, abs=0.05)  # curriculum keeps half per class
    assert "dev" in report["rounds"][0] and "accuracy" in report["labeler"]["dev"]
    for name in ("report.json", "report.md", "rounds.png", "config.yaml"):
        assert (run / name).exists()
    assert "| labeler |" in (run / "report.md").read_text()
    # round 1 trained on round 0's student relabels, each round from the initial weights
    kept1 = read_lines(run / "round1" / "kept.jsonl")
    assert kept1[0]["model"].startswith("student:")

    # resume: drop the last stage's output; only it is recomputed
    import shutil

    first_student = (run / "round0" / "student" / "model.safetensors").stat().st_mtime_ns
    shutil.rmtree(run / "round1" / "student")
    (run / "round1" / "pool.predicted.jsonl").unlink()
    (run / "round1" / "student.dev.jsonl").unlink()
    again = run_selftrain(config)
    assert (run / "round0" / "student" / "model.safetensors").stat().st_mtime_ns == first_student
    assert (run / "round1" / "student" / "config.json").exists()
    assert again["rounds"] == report["rounds"]  # seeded: the recomputed round gives the same numbers


def _stage_outputs(run) -> dict[str, int]:
    """mtime of every stage output under a selftrain folder (the reports are rewritten on every run)."""
    skip = {"report.json", "report.md", "rounds.png", "config.yaml"}
    return {
        str(path.relative_to(run)): path.stat().st_mtime_ns
        for path in run.rglob("*")
        if path.is_file() and path.name not in skip
    }


def test_selftrain_reruns_exactly_the_stages_whose_signature_changed(tmp_path, tiny_model_dir, tiny_bert_dir):
    import yaml

    path = _selftrain_yaml(tmp_path, tiny_model_dir, tiny_bert_dir, rounds=1, curriculum=[])
    run = tmp_path / "run"
    run_selftrain(load_selftrain_config(path))
    first = _stage_outputs(run)

    run_selftrain(load_selftrain_config(path))  # no change: nothing is recomputed
    assert _stage_outputs(run) == first

    data = yaml.safe_load(open(path))
    data["train"]["epochs"] = 2  # only the student and what follows it change
    open(path, "w").write(yaml.safe_dump(data))
    report = run_selftrain(load_selftrain_config(path))
    after = _stage_outputs(run)
    for kept_stage in ("round0/labeled.jsonl", "round0/labeler.dev.jsonl", "round0/kept.jsonl"):
        assert after[kept_stage] == first[kept_stage], kept_stage
    for changed in (
        "round0/student/model.safetensors",
        "round0/pool.predicted.jsonl",
        "round0/student.dev.jsonl",
    ):
        assert after[changed] != first[changed], changed
    card = (run / "round0" / "student" / "llmst_student.json").read_text()
    assert '"epochs": 2' in card.replace("2.0", "2")
    assert report["rounds"][0]["kept"] > 0

    data["filter"] = {"method": "threshold", "threshold": 0.5}  # a filter change reruns filter and train
    open(path, "w").write(yaml.safe_dump(data))
    run_selftrain(load_selftrain_config(path))
    final = _stage_outputs(run)
    assert final["round0/labeled.jsonl"] == first["round0/labeled.jsonl"]
    assert final["round0/kept.jsonl"] != after["round0/kept.jsonl"]
    assert final["round0/student/model.safetensors"] != after["round0/student/model.safetensors"]


def test_selftrain_interrupted_stage_resumes_under_the_same_signature(
    tmp_path, tiny_model_dir, tiny_bert_dir
):
    """A stage left without its marker (killed) under the same options resumes instead of starting over."""
    from unittest import mock

    path = _selftrain_yaml(tmp_path, tiny_model_dir, tiny_bert_dir, rounds=1, curriculum=[])
    run = tmp_path / "run"
    import llmst.train as train_module

    with mock.patch.object(train_module, "train", side_effect=KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            run_selftrain(load_selftrain_config(path))
    assert (run / "round0" / "student.stage-pending").exists()
    assert (run / "round0" / "labeled.jsonl.signature.json").exists()
    calls = []
    real = train_module.train

    def spy(labeled, out, config):
        calls.append(config.overwrite)
        return real(labeled, out, config)

    with mock.patch.object(train_module, "train", side_effect=spy):
        run_selftrain(load_selftrain_config(path))
    assert calls == [False]  # resumed, not overwritten
    assert not (run / "round0" / "student.stage-pending").exists()


def test_selftrain_config_errors(tmp_path, tiny_model_dir, tiny_bert_dir):
    with pytest.raises(ConfigError, match="unknown keys"):
        load_selftrain_config(_selftrain_yaml(tmp_path, tiny_model_dir, tiny_bert_dir, roundz=3))
    with pytest.raises(ConfigError, match="curriculum needs 2"):
        load_selftrain_config(_selftrain_yaml(tmp_path, tiny_model_dir, tiny_bert_dir, rounds=3))
    with pytest.raises(ConfigError, match="not found"):
        load_selftrain_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_selftrain_config(_selftrain_yaml(tmp_path, tiny_model_dir, tiny_bert_dir, source="x"))
    with pytest.raises(ConfigError, match="selftrain.yaml"):
        load_selftrain_config(_selftrain_yaml(tmp_path, tiny_model_dir, tiny_bert_dir, curriculum=0.5))
    bad = load_selftrain_config(
        _selftrain_yaml(tmp_path, tiny_model_dir, tiny_bert_dir, train={"student": tiny_bert_dir, "epoch": 1})
    )
    with pytest.raises(ConfigError, match="bad 'train' options"):
        run_selftrain(bad)
