"""eval/suite_data.py: the development suite's dev/test/pool slices (reads ../shared/data only)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "eval"))
import suite_data  # noqa: E402

NAMES = [
    "sst2",
    "mr",
    "ag_news",
    "trec",
    "sick",
    "boolq",
    "wikiqa",
    "sms_spam",
    "emotion",
    "cola",
    "financial_phrasebank",
    "rte",
]
# (dev, test, pool) rows, as documented in the module docstring.
SIZES = {
    "sst2": (200, 500, 6910),
    "mr": (200, 500, 9962),
    "ag_news": (200, 500, 5000),
    "trec": (200, 500, 4874),
    "sick": (200, 500, 4439),
    "boolq": (200, 500, 2570),
    "wikiqa": (200, 500, 20158),
    "sms_spam": (200, 500, 4459),
    "emotion": (200, 500, 15965),
    "cola": (200, 500, 8324),
    "financial_phrasebank": (200, 500, 1559),
    "rte": (200, 277, 2288),
}
# The source-row part of the ids of each (dev, test, pool) slice: which file each slice comes from.
SOURCE_TAG = {
    "sst2": (r"dev-\d{5}", r"test-\d{5}", r"train-\d{5}"),
    "mr": (r"(pos|neg)-\d{4}",) * 3,
    "ag_news": (r"test-\d{4}",) * 3,
    "trec": (r"train-\d{4}", r"test-\d{4}", r"train-\d{4}"),
    "sick": (r"\d+",) * 3,
    "boolq": (r"\d{4}",) * 3,
    "wikiqa": (r"train-\d{5}", r"test-\d{5}", r"train-\d{5}"),
    "sms_spam": (r"\d{4}",) * 3,
    "emotion": (r"val-\d{5}", r"test-\d{5}", r"train-\d{5}"),
    "cola": (r"train-\d{4}", r"dev-\d{4}", r"train-\d{4}"),
    "financial_phrasebank": (r"\d{4}",) * 3,
    "rte": (r"train-\d+", r"dev-\d+", r"train-\d+"),
}
# Tasks carved from one source: every source line ends up in a slice or in the dropped counts.
SOURCE_LINES = {"mr": 10662, "boolq": 3270, "sms_spam": 5574, "financial_phrasebank": 2264}


@pytest.fixture(scope="module")
def slices() -> dict[str, dict[str, list[dict]]]:
    return {
        name: {split: suite_data.load_split(name, split) for split in suite_data.SPLITS} for name in NAMES
    }


def _norm(row: dict, fields: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(" ".join(row[field].split()).casefold() for field in fields)


def test_suite_tasks_in_order_with_user_facing_labels():
    assert list(suite_data.SUITE) == NAMES
    assert (suite_data.DEV_ROWS, suite_data.TEST_ROWS) == (200, 500)
    shipped = {name: task.shipped_task for name, task in suite_data.SUITE.items() if task.shipped_task}
    assert shipped == {"sst2": "sentiment", "mr": "sentiment", "ag_news": "ag_news", "trec": "trec"}
    for name, task in suite_data.SUITE.items():
        assert task.name == name
        assert len(set(task.labels)) == len(task.labels) >= 2
        assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", label) for label in task.labels), task.labels
        assert task.text_fields == ("text",) or len(task.text_fields) == 2
        assert "id" not in task.text_fields and "gold" not in task.text_fields
        assert task.description and "\n" not in task.description
    assert suite_data.SUITE["sick"].labels == ("entailment", "neutral", "contradiction")
    assert suite_data.SUITE["boolq"].labels == ("no", "yes")
    assert suite_data.SUITE["rte"].text_fields == ("premise", "hypothesis")


@pytest.mark.parametrize("name", ["sst2", "mr", "ag_news", "trec"])
def test_shipped_task_has_the_same_labels(name):
    task = suite_data.SUITE[name]
    spec = yaml.safe_load((REPO / "prompts" / f"{task.shipped_task}.yaml").read_text(encoding="utf-8"))
    assert set(spec["labels"]) == set(task.labels)


@pytest.mark.parametrize("name", NAMES)
def test_slices_are_clean_disjoint_and_sized(name, slices):
    task = suite_data.SUITE[name]
    parts = slices[name]
    assert tuple(len(parts[split]) for split in ("dev", "test", "pool")) == SIZES[name]
    seen_ids: set[str] = set()
    seen_exact: set[tuple[str, ...]] = set()
    seen_norm: set[tuple[str, ...]] = set()
    for split, tag in zip(("dev", "test", "pool"), SOURCE_TAG[name], strict=True):
        rows = parts[split]
        assert len({row["gold"] for row in rows}) >= 2, f"{name}-{split} has a single label"
        for row in rows:
            assert set(row) == {"id", "gold", *task.text_fields}
            assert re.fullmatch(rf"{name}-{split}-{tag}", row["id"]), row["id"]
            assert row["gold"] in task.labels
            for field in task.text_fields:
                value = row[field]
                assert isinstance(value, str) and value and value == value.strip()
            exact = tuple(row[field] for field in task.text_fields)
            assert row["id"] not in seen_ids, row["id"]
            assert exact not in seen_exact, exact
            assert _norm(row, task.text_fields) not in seen_norm, exact
            seen_ids.add(row["id"])
            seen_exact.add(exact)
            seen_norm.add(_norm(row, task.text_fields))


@pytest.mark.parametrize("name", NAMES)
def test_slices_are_seeded_samples_not_leading_rows(name, slices):
    for split in ("dev", "test"):
        numbers = [int(re.findall(r"\d+", row["id"])[-1]) for row in slices[name][split]]
        assert numbers != sorted(numbers), f"{name}-{split} is in source order"


@pytest.mark.parametrize("name", NAMES)
def test_loading_again_gives_identical_rows(name, slices):
    suite_data._build.cache_clear()
    again = {split: suite_data.load_split(name, split) for split in suite_data.SPLITS}
    assert again == slices[name]
    again["test"][0]["gold"] = "mutated"  # callers get copies
    assert suite_data.load_split(name, "test")[0] == slices[name]["test"][0]


@pytest.mark.parametrize("name", sorted(SOURCE_LINES))
def test_single_source_rows_all_accounted_for(name, slices):
    kept = sum(len(rows) for rows in slices[name].values())
    assert kept + sum(suite_data.dropped(name).values()) == SOURCE_LINES[name]


def test_slices_come_from_the_documented_source_splits(slices):
    ag = {
        split: [int(row["id"].rsplit("-", 1)[1]) for row in slices["ag_news"][split]]
        for split in suite_data.SPLITS
    }
    assert max(ag["test"]) <= 2000 < min(ag["dev"]) <= max(ag["dev"]) <= 2600 < min(ag["pool"])
    trec_dev = {row["id"].split("-", 1)[1] for row in suite_data.evaldata.load("trec-dev")}
    assert {row["id"].split("-", 2)[2] for row in slices["trec"]["dev"]} <= trec_dev
    semeval = {}
    with open(suite_data.SHARED / "sick" / "SICK.txt", encoding="utf-8") as handle:
        header = next(handle).rstrip("\n").split("\t")
        for line in handle:
            row = dict(zip(header, line.rstrip("\n").split("\t"), strict=True))
            semeval[row["pair_ID"]] = row["SemEval_set"]
    for split, expected in (("test", "TEST"), ("dev", "TRIAL"), ("pool", "TRAIN")):
        assert {semeval[row["id"].rsplit("-", 1)[1]] for row in slices["sick"][split]} == {expected}


def test_encodings_give_real_characters(slices):
    mr = [row["text"] for rows in slices["mr"].values() for row in rows]
    assert not any(re.search("[\x80-\x9f]", text) for text in mr)  # cp1252 punctuation, not C1 controls
    assert any("\u2026" in text or "\u2014" in text for text in mr)
    fpb = [row["text"] for rows in slices["financial_phrasebank"].values() for row in rows]
    assert not any("\u00c3" in text for text in fpb)  # UTF-8 read as latin-1 would give "Ã" pairs
    assert any("\u00e4" in text for text in fpb)


def test_unknown_task_or_split_is_refused():
    with pytest.raises(ValueError, match="unknown suite task"):
        suite_data.load_split("nope", "test")
    with pytest.raises(ValueError, match="unknown split"):
        suite_data.load_split("mr", "train")


def _rows(*golds: str) -> list[dict]:
    return [{"id": str(i), "text": f"t{i}", "gold": gold} for i, gold in enumerate(golds)]


def test_majority_baseline_hand_computed():
    # always "a": acc 3/5; F1(a) = 2 * 0.6 * 1 / 1.6 = 0.75, F1(b) = F1(c) = 0 -> macro 0.25
    assert suite_data.majority_baseline(_rows("a", "a", "a", "b", "c"), ("a", "b", "c")) == {
        "label": "a",
        "accuracy": pytest.approx(0.6),
        "macro_f1": pytest.approx(0.25),
    }
    # always "b": acc 2/3; F1(b) = 2 * (2/3) * 1 / (5/3) = 0.8; labels absent from rows count as 0 -> 0.8 / 4
    base = suite_data.majority_baseline(_rows("b", "a", "b"), ("a", "b", "c", "d"))
    assert base == {"label": "b", "accuracy": pytest.approx(2 / 3), "macro_f1": pytest.approx(0.2)}
    # a tie goes to the label listed first: always "b" -> F1(b) = 2/3, F1(a) = 0 -> macro 1/3
    base = suite_data.majority_baseline(_rows("a", "b"), ("b", "a"))
    assert base == {"label": "b", "accuracy": pytest.approx(0.5), "macro_f1": pytest.approx(1 / 3)}
    with pytest.raises(ValueError):
        suite_data.majority_baseline([], ("a", "b"))
    with pytest.raises(ValueError, match="not in labels"):
        suite_data.majority_baseline(_rows("a", "z"), ("a", "b"))


def test_label_distribution_counts_most_frequent_first():
    dist = suite_data.label_distribution(_rows("a", "c", "b", "c", "b"))
    assert list(dist.items()) == [("b", 2), ("c", 2), ("a", 1)]
    assert suite_data.label_distribution([]) == {}


def test_write_split_writes_jsonl_and_reuses_an_identical_file(tmp_path):
    path = suite_data.write_split("rte", "test", tmp_path)
    assert path == tmp_path / "rte-test.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows == suite_data.load_split("rte", "test")
    os.utime(path, ns=(10**18, 10**18))
    assert suite_data.write_split("rte", "test", tmp_path) == path
    assert path.stat().st_mtime_ns == 10**18  # identical content: not rewritten
    path.write_text('{"id": "stale"}\n', encoding="utf-8")
    suite_data.write_split("rte", "test", tmp_path)
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == rows
