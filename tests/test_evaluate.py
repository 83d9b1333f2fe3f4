"""`llmst evaluate`: metrics against hand-computed values, plots written."""

from __future__ import annotations

import pytest
from conftest import write_jsonl

from llmst.errors import ConfigError
from llmst.evaluate import evaluate_file


def rec(label, pos, gold):
    return {
        "label": label,
        "probs": {"negative": 1 - pos, "positive": pos},
        "confidence": max(pos, 1 - pos),
        "gold": gold,
    }


def test_metrics_and_plots(tmp_path):
    rows = [
        rec("positive", 0.9, 1),
        rec("positive", 0.8, 0),
        rec("negative", 0.3, "negative"),
        rec("negative", 0.4, 1),
    ]
    path = write_jsonl(
        tmp_path / "l.jsonl", rows + [{"label": "positive", "probs": {"negative": 0.5, "positive": 0.5}}]
    )
    report = evaluate_file(path, gold_field="gold", report_dir=tmp_path / "rep")
    assert report["n"] == 4 and report["skipped_missing_gold"] == 1
    assert report["accuracy"] == pytest.approx(0.5)
    assert report["per_class"]["positive"]["precision"] == pytest.approx(0.5)
    assert report["per_class"]["positive"]["recall"] == pytest.approx(0.5)
    assert report["macro_f1"] == pytest.approx(0.5)
    for name in ("reliability.png", "accuracy_coverage.png", "report.json"):
        assert (tmp_path / "rep" / name).stat().st_size > 1000 or name == "report.json"


def test_no_gold_is_a_clear_error(tmp_path):
    path = write_jsonl(tmp_path / "l.jsonl", [rec("positive", 0.9, 1)])
    with pytest.raises(ConfigError, match="no record has a usable gold label"):
        evaluate_file(path, gold_field="label_gold")
