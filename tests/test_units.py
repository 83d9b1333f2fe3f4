"""Small pure pieces: readers, tasks (sandbox), calibration, metrics, cache keys."""

from __future__ import annotations

import numpy as np
import pytest

from llmst.cache import AnswerCache, cache_key
from llmst.errors import ConfigError
from llmst.label.calibrate import contextual_bias, prior_bias, softmax
from llmst.label.task import adhoc_task, available_tasks, load_task, task_from_dict
from llmst.metrics import accuracy_coverage, expected_calibration_error
from llmst.records import Reject, Row, read_records, record_id


def test_jsonl_reader_yields_rows_and_rejects(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"text": "a"}\n\n{bad\n"just a string"\n{"text": "\xc3\x28"}\n{"text": "b"}\n')
    items = list(read_records(path))
    assert [type(i) for i in items] == [Row, Reject, Reject, Reject, Row]
    assert [i.line for i in items] == [1, 3, 4, 5, 6]


def test_csv_tsv_parquet_readers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.csv").write_text('text,y\n"multi\nline",1\nplain,0\n', encoding="utf-8")
    rows = [i.record for i in read_records(tmp_path / "a.csv")]
    assert rows == [{"text": "multi\nline", "y": "1"}, {"text": "plain", "y": "0"}]
    (tmp_path / "a.tsv").write_text("text\ty\nhello\t1\n", encoding="utf-8")
    assert next(iter(read_records(tmp_path / "a.tsv"))).record == {"text": "hello", "y": "1"}
    pq.write_table(pa.table({"text": ["p", "q"], "n": [1, 2]}), tmp_path / "a.parquet")
    assert [i.record["n"] for i in read_records(tmp_path / "a.parquet")] == [1, 2]
    (tmp_path / "bad.csv").write_bytes(b"text\nok\n\xff\xfe\n")
    kinds = [type(i) for i in read_records(tmp_path / "bad.csv")]
    assert kinds == [Row, Reject]


def test_unknown_input_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_records(tmp_path / "missing.jsonl")
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(ConfigError, match="unsupported input format"):
        read_records(tmp_path / "x.xlsx")


def test_record_id_prefers_the_id_field():
    assert record_id({"id": 7}, "t") == "7"
    assert record_id({}, "same text") == record_id({"id": ""}, "same text") != record_id({}, "other")


def test_shipped_tasks_load():
    assert {"sentiment", "ag_news", "trec"} <= set(available_tasks())
    for name in available_tasks():
        task = load_task(name)
        assert len(task.labels) >= 2 and task.render({"text": "hello"}, "hello")


def test_unknown_task_lists_available():
    with pytest.raises(ConfigError) as err:
        load_task("no-such-task")
    assert "sentiment" in err.value.hint


def test_template_is_sandboxed_and_strict():
    evil = task_from_dict(
        {"labels": ["a", "b"], "prompt": "{{ text.__class__.__mro__[1].__subclasses__() }}"}, "x"
    )
    with pytest.raises(ConfigError, match="template failed"):
        evil.render({}, "hi")
    strict = task_from_dict({"labels": ["a", "b"], "prompt": "{{ missing_field }}"}, "x")
    with pytest.raises(ConfigError, match="template failed"):
        strict.render({"text": "x"}, "x")


def test_adhoc_task_and_bad_tasks():
    task = adhoc_task(["sports", "politics"])
    assert task.labels == {"sports": [" sports"], "politics": [" politics"]}
    with pytest.raises(ConfigError):
        adhoc_task(["a", "a"])
    with pytest.raises(ConfigError, match="at least two"):
        task_from_dict({"labels": ["only"], "prompt": "x"}, "x")


def test_prior_bias_matches_the_target_marginal():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 3)) + np.array([2.0, 0.0, -1.0])  # skewed toward label 0
    for prior in (None, np.array([0.2, 0.3, 0.5])):
        bias = prior_bias(logits, prior)
        marginal = softmax(logits + bias).mean(axis=0)
        expected = np.full(3, 1 / 3) if prior is None else prior
        assert marginal == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError):
        prior_bias(logits, np.array([0.5, 0.5]))


def test_contextual_bias_divides_out_the_content_free_distribution():
    cf = np.log(np.array([[0.8, 0.2], [0.6, 0.4]]))
    bias = contextual_bias(cf)
    assert softmax(np.log(np.array([[0.7, 0.3]])) + bias)[0] == pytest.approx([0.5, 0.5])


def test_ece_and_coverage_by_hand():
    conf = np.array([0.9, 0.9, 0.6, 0.6])
    correct = np.array([1, 0, 1, 1])
    # bin of 0.9: acc 0.5, conf 0.9 -> 0.4 * 0.5; bin of 0.6: acc 1.0, conf 0.6 -> 0.4 * 0.5
    assert expected_calibration_error(conf, correct, bins=10) == pytest.approx(0.4)
    curve = accuracy_coverage(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 1, 0, 0]), points=4)
    assert [c["accuracy"] for c in curve] == [1.0, 1.0, pytest.approx(2 / 3), 0.5]


def test_cache_roundtrip_and_key_sensitivity(tmp_path):
    cache = AnswerCache(tmp_path / "c.sqlite")
    key = cache_key(model="m", prompt="p")
    assert key != cache_key(model="m", prompt="p2") and key == cache_key(prompt="p", model="m")
    cache.put_many({key: [-0.1, -2.3]})
    assert cache.get_many([key, "other"]) == {key: [-0.1, -2.3]}
    cache.close()
    assert AnswerCache(tmp_path / "c.sqlite").get_many([key]) == {key: [-0.1, -2.3]}
