"""Inputs of filter / aggregate / evaluate: `.json` files, `records.read_labeled` (one reader, clear errors
naming file, line and field), one definition of a correct pseudo-label, the selector registry, defaults that
select, signatures, atomic outputs and cheap config imports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import read_lines, write_jsonl
from test_filter_stage import NAMES, labeled_rows

from llmst import stage
from llmst.aggregate.config import AggregateConfig, aggregate_signature
from llmst.aggregate.stage import run_aggregate
from llmst.errors import ConfigError
from llmst.filter.balanced import select_balanced
from llmst.filter.config import FILTER_METHODS, FilterConfig, filter_signature
from llmst.filter.conformal import certify_precision, precision_threshold
from llmst.filter.curriculum import select_curriculum
from llmst.filter.per_class import select_per_class
from llmst.filter.registry import SELECTORS, get_selector
from llmst.filter.stage import run_filter
from llmst.filter.threshold import select_by_threshold
from llmst.readers import Reject, Row, read_records
from llmst.records import PendingOutputs, read_labeled

# ------------------------------------------------------------------ .json files


def test_json_array_and_data_object_are_read_as_rows(tmp_path):
    rows = [{"text": "a", "gold": "x"}, {"text": "b", "gold": "y"}, {"text": "c", "gold": "x"}]
    (tmp_path / "array.json").write_text(json.dumps(rows, indent=2))
    (tmp_path / "oneline.json").write_text(json.dumps(rows))
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": rows}, indent=2))
    (tmp_path / "wrapped1.json").write_text(json.dumps({"data": rows}))
    (tmp_path / "lines.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("array", "oneline", "wrapped", "wrapped1", "lines"):
        items = list(read_records(tmp_path / f"{name}.json"))
        assert [type(i) for i in items] == [Row] * 3, name
        assert [i.record for i in items] == rows and [i.line for i in items] == [1, 2, 3], name
    (tmp_path / "empty.json").write_text("  \n")
    assert list(read_records(tmp_path / "empty.json")) == []
    (tmp_path / "mixed.json").write_text(json.dumps([{"text": "a"}, "oops", 3]))
    assert [type(i) for i in read_records(tmp_path / "mixed.json")] == [Row, Reject, Reject]


@pytest.mark.parametrize(
    "content,message",
    [
        ('[{"text": "a"}, {"text": ', "is not valid JSON"),
        ('{"text": "a",\n "broken": }', "is not valid JSON"),
        ('{\n  "text": "one pretty-printed object"\n}', "one object without a 'data' list"),
        ('"just a string"', "holds a str, not a list of records"),
        ("not json at all", "is not valid JSON"),
    ],
)
def test_unreadable_json_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as err:
        list(read_records(path))
    assert str(path) in err.value.message and "JSON array" in err.value.hint


def test_filter_reads_a_json_array(tmp_path):
    rows = labeled_rows(60, seed=11)
    (tmp_path / "pool.json").write_text(json.dumps(rows))
    report = run_filter(
        tmp_path / "pool.json",
        tmp_path / "k.jsonl",
        FilterConfig(method="threshold", threshold=0.6, plots=False),
    )
    assert report["n_input"] == 60 and 0 < report["n_kept"] < 60
    assert [r["id"] for r in read_lines(tmp_path / "k.jsonl")] == [
        r["id"] for r in rows if r["confidence"] >= 0.6
    ]


# ------------------------------------------------------------------ read_labeled


def test_read_labeled_arrays(tmp_path):
    rows = labeled_rows(10, seed=12)
    rows[3]["gold"] = None
    rows[4]["gold"] = "unknown-label"
    del rows[5]["gold"]
    rows[6]["gold"] = 2  # an index works too
    path = write_jsonl(tmp_path / "l.jsonl", rows)
    data = read_labeled(path, gold_field="gold", fields=["text", "missing"])
    assert data.names == NAMES and data.probs.shape == (10, 3)
    np.testing.assert_allclose(data.probs.sum(axis=1), 1.0)
    assert [NAMES[i] for i in data.labels] == [r["label"] for r in rows]
    assert data.gold.tolist()[3:7] == [-1, -1, -1, 2]
    assert data.gold_given.tolist()[3:7] == [False, True, False, True]
    assert data.ids == [r["id"] for r in rows] and data.lines.tolist() == list(range(1, 11))
    assert data.columns["text"] == [r["text"] for r in rows] and data.columns["missing"] == [None] * 10
    assert data.records is None and len(read_labeled(path, limit=4)) == 4
    reordered = data.with_names(["positive", "negative", "neutral"])
    assert [reordered.names[i] for i in reordered.labels] == [r["label"] for r in rows]
    np.testing.assert_allclose(reordered.probs[:, 0], data.probs[:, 2])
    sub = data.subset(np.array([6, 0]))
    assert sub.ids == [rows[6]["id"], rows[0]["id"]] and sub.gold.tolist()[0] == 2


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda r: r.pop("probs"), "line 3: the record has no 'probs' field"),
        (
            lambda r: r.update(probs={"negative": "x", "neutral": 0.5, "positive": 0.5}),
            "line 3: 'probs' values",
        ),
        (lambda r: r.update(probs={"negative": -1, "neutral": 1, "positive": 1}), "line 3: 'probs' must be"),
        (lambda r: r.update(label="sarcastic"), "line 3: 'label' is 'sarcastic'"),
    ],
)
def test_read_labeled_errors_name_file_line_and_field(tmp_path, change, message):
    rows = labeled_rows(5, seed=13)
    change(rows[2])
    path = write_jsonl(tmp_path / "l.jsonl", rows)
    with pytest.raises(ConfigError, match=message) as err:
        read_labeled(path)
    assert str(path) in err.value.message


def test_rows_of_json_arrays_are_named_rows(tmp_path):
    rows = labeled_rows(4, seed=14)
    del rows[1]["label"]
    (tmp_path / "l.json").write_text(json.dumps(rows))
    assert len(read_labeled(tmp_path / "l.json")) == 4  # `label` is optional for filter / aggregate
    with pytest.raises(ConfigError, match=r"l\.json, row 2: the record has no 'label' field"):
        read_labeled(tmp_path / "l.json", require_label=True)
    with pytest.raises(ConfigError, match="holds no records"):
        read_labeled(write_jsonl(tmp_path / "e.jsonl", []))


def wrong_label(row):
    """The record says one label while its probs put the most mass on another."""
    others = [n for n in NAMES if n != row["label"]]
    return {**row, "label": others[0]}


def test_a_label_that_disagrees_with_probs_is_refused_everywhere(tmp_path):
    """The old filter stage counted a calibration row correct by its `label` field while
    `select_with_precision_guarantee` counted it by the argmax: a record where the two differ got a
    different guarantee depending on the code path. Now the pseudo-label is the argmax everywhere, and such
    a record is refused with its line, whatever reads it."""
    pool = write_jsonl(tmp_path / "pool.jsonl", labeled_rows(300, seed=15))
    rows = labeled_rows(200, seed=16, prefix="c")
    rows[7] = wrong_label(rows[7])
    cal = write_jsonl(tmp_path / "cal.jsonl", rows)
    config = FilterConfig(method="conformal", calibration=str(cal), target_precision=0.8)
    with pytest.raises(
        ConfigError, match=r"cal\.jsonl, line 8: 'label' is .* but 'probs' puts the most mass"
    ):
        run_filter(pool, tmp_path / "k.jsonl", config)
    with pytest.raises(ConfigError, match="line 8: 'label'"):
        run_aggregate([cal, pool], tmp_path / "f.jsonl", AggregateConfig())
    from llmst.evaluate import evaluate_file

    with pytest.raises(ConfigError, match="line 8: 'label'"):
        evaluate_file(cal)
    assert not list(tmp_path.glob("k.jsonl*")) and not list(tmp_path.glob("f.jsonl*"))


def test_the_stage_certifies_exactly_what_the_public_functions_certify(tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", labeled_rows(800, seed=17))
    cal_path = write_jsonl(tmp_path / "cal.jsonl", labeled_rows(300, seed=18, prefix="c"))
    config = FilterConfig(method="conformal", calibration=str(cal_path), target_precision=0.85, plots=False)
    report = run_filter(pool, tmp_path / "k.jsonl", config)
    cal = read_labeled(cal_path, gold_field="gold")
    expected = certify_precision(cal.probs, cal.gold, target_precision=0.85, delta=0.1)
    by_hand = precision_threshold(
        cal.probs.max(axis=1), cal.probs.argmax(axis=1) == cal.gold, target_precision=0.85, delta=0.1
    )
    certification = report["details"]["certification"]
    assert certification["threshold"] == expected.threshold == by_hand.threshold
    assert certification["n_correct"] == expected.n_correct == by_hand.n_correct
    pool_data = read_labeled(pool)
    assert report["n_kept"] == int((pool_data.probs.max(axis=1) >= expected.threshold).sum())


# ------------------------------------------------------------------ registry and defaults


def test_every_method_is_registered_and_calls_the_public_selector(tmp_path):
    get_selector("threshold")
    assert set(SELECTORS) == set(FILTER_METHODS)
    with pytest.raises(ConfigError, match="unknown filter method 'magic'"):
        get_selector("magic")
    pool = write_jsonl(tmp_path / "pool.jsonl", labeled_rows(500, seed=19))
    probs = read_labeled(pool).probs
    cases = [
        (FilterConfig(method="threshold", threshold=0.7), select_by_threshold(probs, threshold=0.7)),
        (FilterConfig(method="per-class"), select_per_class(probs)),
        (FilterConfig(method="balanced", fraction=0.3), select_balanced(probs, fraction=0.3)),
        (
            FilterConfig(method="balanced", size=90, prior="0.5,0.3,0.2"),
            select_balanced(probs, size=90, prior=[0.5, 0.3, 0.2]),
        ),
        (FilterConfig(method="curriculum", round=1), select_curriculum(probs, fraction=0.4)),
    ]
    ids = [r["id"] for r in read_lines(pool)]
    for config, mask in cases:
        run_filter(pool, tmp_path / "k.jsonl", FilterConfig(**{**config.__dict__, "plots": False}))
        assert [r["id"] for r in read_lines(tmp_path / "k.jsonl")] == [ids[i] for i in np.flatnonzero(mask)]


def test_balanced_defaults_select_instead_of_keeping_everything(tmp_path):
    # predicted classes already balanced, as after `llmst label --calibrate prior`
    rows = labeled_rows(900, seed=20, class_weights=(1 / 3, 1 / 3, 1 / 3))
    pool = write_jsonl(tmp_path / "pool.jsonl", rows)
    probs = read_labeled(pool).probs
    largest = select_balanced(probs, size=len(probs))  # the old default: the largest balanced subset
    assert largest.mean() > 0.85  # a near no-op on a balanced pool
    report = run_filter(pool, tmp_path / "k.jsonl", FilterConfig(method="balanced", plots=False))
    assert report["n_kept"] == 450 and report["details"]["fraction"] == 0.5
    assert "--fraction" in report["details"]["note"] and report["warnings"] == []
    kept = read_lines(tmp_path / "k.jsonl")
    assert np.mean([r["label"] == r["gold"] for r in kept]) > report["gold"]["accuracy_all"]


def test_a_selection_that_keeps_almost_everything_warns(tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", labeled_rows(200, seed=21))
    report = run_filter(
        pool, tmp_path / "k.jsonl", FilterConfig(method="threshold", threshold=0.0, plots=False)
    )
    assert report["n_kept"] == 200 and "barely selects" in report["warnings"][0]
    report = run_filter(
        pool, tmp_path / "k.jsonl", FilterConfig(method="threshold", threshold=1.0, plots=False)
    )
    assert report["n_kept"] == 0 and "kept no rows" in report["warnings"][0]


# ------------------------------------------------------------------ signatures and atomic outputs


def test_filter_and_aggregate_record_their_signature_last(tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", labeled_rows(100, seed=22))
    out = tmp_path / "k.jsonl"
    config = FilterConfig(method="threshold", threshold=0.7)
    run_filter(pool, out, config)
    assert stage.is_current(out, filter_signature(pool, config))
    assert filter_signature(
        pool, FilterConfig(method="threshold", threshold=0.7, plots=False)
    ) == filter_signature(pool, config)
    assert filter_signature(pool, FilterConfig(method="threshold", threshold=0.8)) != filter_signature(
        pool, config
    )
    write_jsonl(pool, labeled_rows(100, seed=23))  # the input changed: the output is no longer current
    assert not stage.is_current(out, filter_signature(pool, config))
    with pytest.raises(ConfigError):  # a failed rerun keeps the old output and forgets nothing else
        run_filter(
            pool,
            out,
            FilterConfig(method="conformal", calibration=str(tmp_path / "none.jsonl"), target_precision=0.9),
        )
    assert out.exists()

    other = write_jsonl(tmp_path / "other.jsonl", labeled_rows(100, seed=22))
    fused = tmp_path / "f.jsonl"
    run_aggregate([pool, other], fused, AggregateConfig(method="mean"))
    assert stage.is_current(fused, aggregate_signature([pool, other], AggregateConfig(method="mean")))
    assert aggregate_signature([other, pool], AggregateConfig(method="mean")) != aggregate_signature(
        [pool, other], AggregateConfig(method="mean")
    )
    assert aggregate_signature([pool, other], AggregateConfig(tol=1e-3)) != aggregate_signature(
        [pool, other], AggregateConfig()
    )


def test_pending_outputs_leave_nothing_behind_on_error(tmp_path):
    final = tmp_path / "out.jsonl"
    final.write_text("old\n")
    with pytest.raises(RuntimeError), PendingOutputs() as outputs:
        outputs.write_jsonl(final, iter([{"a": 1}]))
        outputs.write_json(tmp_path / "r.json", {"x": 1})
        raise RuntimeError("boom")
    assert final.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]
    with PendingOutputs() as outputs:
        assert outputs.write_jsonl(final, iter([{"a": 1}, {"a": 2}])) == 2
        outputs.commit()
    assert read_lines(final) == [{"a": 1}, {"a": 2}]


def test_configs_import_without_torch_or_numpy():
    code = (
        "import sys; import llmst.filter.config, llmst.aggregate.config; "
        "from llmst.filter import FilterConfig; from llmst.aggregate import AggregateConfig; "
        "print('torch' in sys.modules, 'numpy' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
    code = "import sys; import llmst.filter.stage, llmst.aggregate.stage; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False"]


def test_config_fields_have_help():
    import dataclasses

    for cls in (FilterConfig, AggregateConfig):
        for item in dataclasses.fields(cls):
            assert item.metadata.get("help"), (cls.__name__, item.name)
    assert {f.name for f in dataclasses.fields(AggregateConfig)} >= {"tol", "max_iter", "smoothing"}
    assert FilterConfig(text_fields="title, body").text_fields == ["title", "body"]
    assert (
        FilterConfig(prior=[0.3, 0.7]).prior_value == [0.3, 0.7] == FilterConfig(prior="0.3,0.7").prior_value
    )
    assert FilterConfig(schedule="0.1,0.3,0.9").schedule == [0.1, 0.3, 0.9]
    assert AggregateConfig(names="a, b", weights="2,1").weights == [2.0, 1.0]
    with pytest.raises(ConfigError, match="--weights: 'x' is not a number"):
        AggregateConfig(weights="1,x")
    with pytest.raises(ConfigError, match="--tol must be > 0"):
        AggregateConfig(tol=0)
