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


def test_majority_class_baseline(tmp_path):
    rows = [rec("positive", 0.9, "positive")] * 3 + [rec("positive", 0.6, "negative")]
    report = evaluate_file(write_jsonl(tmp_path / "l.jsonl", rows), gold_field="gold")
    assert report["majority_baseline"] == pytest.approx(0.75) and report["majority_class"] == "positive"
    rows = [rec("negative", 0.1, 0), rec("negative", 0.2, 0), rec("positive", 0.9, 1)] + [
        rec("positive", 0.7, 1) for _ in range(3)
    ]
    report = evaluate_file(write_jsonl(tmp_path / "m.jsonl", rows), gold_field="gold")
    assert report["majority_baseline"] == pytest.approx(4 / 6) and report["majority_class"] == "positive"
    assert report["accuracy"] == 1.0 and report["majority_baseline"] < 1.0


def test_records_without_label_or_probs_name_the_line_and_field(tmp_path):
    rows = [rec("positive", 0.9, 1), rec("negative", 0.2, 0), rec("positive", 0.8, 1)]
    del rows[1]["label"]
    with pytest.raises(ConfigError, match=r"l\.jsonl, line 2: the record has no 'label' field"):
        evaluate_file(write_jsonl(tmp_path / "l.jsonl", rows))
    rows[1] = {"text": "no probs", "label": "negative", "gold": 0}
    with pytest.raises(ConfigError, match=r"l\.jsonl, line 2: the record has no 'probs' field"):
        evaluate_file(write_jsonl(tmp_path / "l.jsonl", rows))


def test_missing_gold_field_names_the_row_and_field(tmp_path):
    rows = [rec("positive", 0.9, 1), rec("negative", 0.2, 0)]
    path = write_jsonl(tmp_path / "l.jsonl", rows)
    with pytest.raises(ConfigError, match=r"line 1 has no field 'g'") as err:
        evaluate_file(path, gold_field="g")
    assert "--gold-field" in err.value.hint
    bad = write_jsonl(tmp_path / "b.jsonl", [{**r, "gold": "maybe"} for r in rows])
    with pytest.raises(ConfigError, match=r"line 1 has no known label in field 'gold'"):
        evaluate_file(bad)


def test_evaluate_reads_a_json_array(tmp_path):
    import json

    rows = [rec("positive", 0.9, 1), rec("negative", 0.2, 1), rec("negative", 0.3, "negative")]
    (tmp_path / "l.json").write_text(json.dumps(rows))
    report = evaluate_file(tmp_path / "l.json")
    assert report["n"] == 3 and report["accuracy"] == pytest.approx(2 / 3)
    del rows[2]["label"]
    (tmp_path / "l.json").write_text(json.dumps(rows))
    with pytest.raises(ConfigError, match=r"l\.json, row 3: the record has no 'label' field"):
        evaluate_file(tmp_path / "l.json")
