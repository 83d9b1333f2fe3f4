"""Weak-to-strong datasets from ../shared/data as gold-labeled train/test JSONL (`llmst w2s` data).

| dataset  | train rows (gold)                       | test rows                      | text fields              |
|----------|-----------------------------------------|--------------------------------|--------------------------|
| sst2     | stsa.binary.train (6,918: 2 test texts out) | stsa.binary.test (1,821)       | text                     |
| boolq    | dev.jsonl minus the test rows (2,270)   | 1,000 of dev.jsonl, seed 0     | question, passage        |
| cosmosqa | valid.csv minus the test rows (1,985)   | 1,000 of valid.csv, seed 0     | context, question, answer|

BoolQ's train split is not in ../shared/data, so its dev set is split once with seed 0 (SOURCE.md suggests
this). CosmosQA becomes binary as Burns et al. (2023) did for SciQ: each question is paired, with probability
1/2 (seeded), with its correct answer (gold `yes`) or with one of its three wrong answers drawn at random
(gold `no`). Labels: sst2 negative/positive, boolq and cosmosqa no/yes.

    python eval/w2s_data.py [--out DIR]   # writes DIR/<dataset>-{train,test}.jsonl and prints the row counts
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data as evaldata  # noqa: E402

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
DEFAULT_OUT = Path("/tmp/llmst-eval/w2s/data")
TEST_ROWS = 1000
DATASETS: dict[str, dict] = {
    "sst2": {"text_fields": ["text"], "labels": ["negative", "positive"]},
    "boolq": {"text_fields": ["question", "passage"], "labels": ["no", "yes"]},
    "cosmosqa": {"text_fields": ["context", "question", "answer"], "labels": ["no", "yes"]},
}


def _sst2() -> tuple[list[dict], list[dict]]:
    def rows(split: str) -> list[dict]:
        return [{"id": r["id"], "text": r["text"], "gold": r["gold"]} for r in evaldata.load(f"sst2-{split}")]

    return rows("train"), rows("test")


def _split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    test = {i for i in order[:TEST_ROWS]}
    return [r for i, r in enumerate(rows) if i not in test], [r for i, r in enumerate(rows) if i in test]


def _boolq() -> tuple[list[dict], list[dict]]:
    rows = []
    with open(SHARED / "boolq" / "dev.jsonl", encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            record = json.loads(line)
            gold = "yes" if record["answer"] is True else "no"
            question = record["question"].strip()
            rows.append(
                {
                    "id": f"boolq-{index}",
                    "question": question + "?",
                    "passage": record["passage"].strip(),
                    "gold": gold,
                }
            )
    return _split(rows)


def _cosmosqa() -> tuple[list[dict], list[dict]]:
    rng = random.Random(0)
    rows = []
    with open(SHARED / "cosmosqa" / "valid.csv", encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle):
            correct = int(record["label"])
            if rng.random() < 0.5:
                answer, gold = correct, "yes"
            else:
                answer, gold = rng.choice([k for k in range(4) if k != correct]), "no"
            rows.append(
                {
                    "id": f"cosmosqa-{record['id']}",
                    "context": record["context"].strip(),
                    "question": record["question"].strip(),
                    "answer": record[f"answer{answer}"].strip(),
                    "gold": gold,
                }
            )
    return _split(rows)


LOADERS = {"sst2": _sst2, "boolq": _boolq, "cosmosqa": _cosmosqa}


def disjoint(name: str, train: list[dict], test: list[dict]) -> list[dict]:
    """The train rows whose text is not also a test row's (`llmst w2s` refuses such a leak); says how many
    were dropped."""
    fields = DATASETS[name]["text_fields"]
    seen = {tuple(row[f] for f in fields) for row in test}
    kept = [row for row in train if tuple(row[f] for f in fields) not in seen]
    if len(kept) < len(train):
        print(f"{name}: dropped {len(train) - len(kept)} train rows whose text is also a test row's")
    return kept


def ensure(name: str, out: Path = DEFAULT_OUT) -> tuple[Path, Path]:
    """Paths of the dataset's train and test JSONL, written if missing."""
    train, test = out / f"{name}-train.jsonl", out / f"{name}-test.jsonl"
    if not (train.exists() and test.exists()):
        train_rows, test_rows = LOADERS[name]()
        evaldata.write_jsonl(disjoint(name, train_rows, test_rows), train)
        evaldata.write_jsonl(test_rows, test)
    return train, test


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    print("| dataset | split | rows | gold counts |\n|---|---|---|---|")
    for name in DATASETS:
        for split, path in zip(("train", "test"), ensure(name, args.out), strict=True):
            rows = [json.loads(line) for line in open(path, encoding="utf-8")]
            counts = Counter(r["gold"] for r in rows)
            print(f"| {name} | {split} | {len(rows)} | {dict(sorted(counts.items()))} |")


if __name__ == "__main__":
    main()
