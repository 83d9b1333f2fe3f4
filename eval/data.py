"""Evaluation data: convert the public datasets under ../shared/data into JSONL with fields id, text, gold.

Splits (gold is always a label name of the matching shipped task):

| name           | source                                   | rows  | task      |
|----------------|------------------------------------------|-------|-----------|
| sst2-train     | sst2/stsa.binary.train                   | 6,920 | sentiment |
| sst2-dev       | sst2/stsa.binary.dev                     |   872 | sentiment |
| sst2-test      | sst2/stsa.binary.test                    | 1,821 | sentiment |
| ag_news-test   | ag_news/test.csv rows 1-2,000            | 2,000 | ag_news   |
| ag_news-dev    | ag_news/test.csv rows 2,001-2,600        |   600 | ag_news   |
| ag_news-pool   | ag_news/test.csv rows 2,601-7,600        | 5,000 | ag_news   |
| trec-train     | trec/TREC.train minus trec-dev           | 4,952 | trec      |
| trec-dev       | trec/TREC.train, 500 rows (seed 0)       |   500 | trec      |
| trec-test      | trec/TREC.test                           |   500 | trec      |

AG News ships only a test split, so its "dev" (for template choice) is test rows 2,001-2,600 and its
few-shot pool is rows 2,601+; the reported AG News numbers are on the first 2,000 rows, disjoint from both.
TREC has no dev split: a seeded 500-row slice of TREC.train is held out as dev; the rest is the few-shot pool.

Text handling: SST-2 is kept exactly as distributed (lowercased, PTB-tokenized). AG News text is
`title + ". " + description` (no extra period when the title already ends in punctuation), with the
corpus' HTML-entity leftovers (` #39;`, ` quot;`, ...) decoded, HTML tags (`<A HREF=...>`) removed and its backslash line breaks turned into
spaces. TREC keeps the question as distributed (TREC.train is latin-1) and the coarse class only.

    python eval/data.py [--out DIR]     # writes DIR/<name>.jsonl (default /tmp/llmst-eval/data)
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import random
import re
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data").resolve()
DEFAULT_OUT = Path("/tmp/llmst-eval/data")

SST2_LABELS = {"0": "negative", "1": "positive"}
AG_LABELS = {"1": "world", "2": "sports", "3": "business", "4": "technology"}
TREC_LABELS = {
    "ABBR": "abbreviation",
    "DESC": "description",
    "ENTY": "entity",
    "HUM": "human",
    "LOC": "location",
    "NUM": "number",
}
AG_TEST_ROWS = 2000  # evaluation: rows 1..2000
AG_DEV_ROWS = 600  # template choice: rows 2001..2600
TREC_DEV_ROWS = 500
TREC_DEV_SEED = 0

TASK_OF = {"sst2": "sentiment", "ag_news": "ag_news", "trec": "trec"}


def _sst2(split: str) -> list[dict]:
    rows = []
    path = SHARED / "sst2" / f"stsa.binary.{split}"
    with open(path, encoding="utf-8") as handle:
        for index, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if not line:
                continue
            label, text = line.split(" ", 1)
            rows.append({"id": f"sst2-{split}-{index:05d}", "text": text, "gold": SST2_LABELS[label]})
    return rows


_PTB = [
    (
        re.compile(r"\b(wo|ca|do|does|did|is|are|was|were|have|has|had|could|would|should|ai|need) n't\b"),
        r"\1n't",
    ),
    (re.compile(r" (n't|'s|'re|'ve|'ll|'d|'m)\b"), r"\1"),
    (re.compile(r"-lrb- ?"), "("),
    (re.compile(r" ?-rrb-"), ")"),
    (re.compile(r"`` ?"), '"'),
    (re.compile(r" ?''"), '"'),
    (re.compile(r" ([.,!?:;%])"), r"\1"),
    (re.compile(r"\$ (\d)"), r"$\1"),
]


def detok_sst(text: str) -> str:
    """Undo SST's PTB tokenization (`wo n't` -> `won't`, `-lrb-` -> `(`); the text stays lowercased.

    Not used by default (the reported SST-2 numbers are on the text as distributed); search_prompts.py
    --sst2-detok measures it on dev.
    """
    for pattern, repl in _PTB:
        text = pattern.sub(repl, text)
    return text


_AG_ENTITY = re.compile(r" ?#(\d+);")
_AG_NAMED = re.compile(r" ?(quot|amp|lt|gt|hellip);")
_TAG = re.compile(r"<[^<>]*>")


def clean_ag(text: str) -> str:
    """Undo the AG corpus' mangled HTML entities (`&` became a space) and backslash line breaks."""
    text = html.unescape(text)  # a few rows keep real entities (`&lt;A HREF=...&gt;`)
    text = _AG_ENTITY.sub(lambda m: html.unescape(f"&#{m.group(1)};"), text)
    text = _AG_NAMED.sub(lambda m: html.unescape(f"&{m.group(1)};"), text)
    text = _TAG.sub(" ", text)
    text = text.replace("\\", " ")
    return re.sub(r"\s+", " ", text).strip()


def _ag_all() -> list[dict]:
    rows = []
    with open(SHARED / "ag_news" / "test.csv", encoding="utf-8", newline="") as handle:
        for index, (label, title, description) in enumerate(csv.reader(handle), start=1):
            title, description = clean_ag(title), clean_ag(description)
            joiner = " " if title.endswith((".", "!", "?")) else ". "
            rows.append(
                {"id": f"ag-test-{index:04d}", "text": title + joiner + description, "gold": AG_LABELS[label]}
            )
    return rows


def _trec_file(name: str) -> list[dict]:
    rows = []
    with open(SHARED / "trec" / f"TREC.{name}", encoding="latin-1") as handle:
        for index, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            label, text = line.split(" ", 1)
            rows.append(
                {"id": f"trec-{name}-{index:04d}", "text": text, "gold": TREC_LABELS[label.split(":")[0]]}
            )
    return rows


def _trec_train_split() -> tuple[list[dict], list[dict]]:
    rows = _trec_file("train")
    order = list(range(len(rows)))
    random.Random(TREC_DEV_SEED).shuffle(order)
    dev_index = set(order[:TREC_DEV_ROWS])
    dev = [r for i, r in enumerate(rows) if i in dev_index]
    train = [r for i, r in enumerate(rows) if i not in dev_index]
    return train, dev


def load(name: str) -> list[dict]:
    """Rows of one split (see the module table)."""
    if name.startswith("sst2-"):
        return _sst2(name.split("-", 1)[1])
    if name.startswith("ag_news-"):
        rows = _ag_all()
        part = name.split("-", 1)[1]
        if part == "test":
            return rows[:AG_TEST_ROWS]
        if part == "dev":
            return rows[AG_TEST_ROWS : AG_TEST_ROWS + AG_DEV_ROWS]
        if part == "pool":
            return rows[AG_TEST_ROWS + AG_DEV_ROWS :]
    if name == "trec-test":
        return _trec_file("test")
    if name in ("trec-train", "trec-dev"):
        train, dev = _trec_train_split()
        return train if name == "trec-train" else dev
    raise ValueError(f"unknown split '{name}'")


SPLITS = [
    "sst2-train",
    "sst2-dev",
    "sst2-test",
    "ag_news-test",
    "ag_news-dev",
    "ag_news-pool",
    "trec-train",
    "trec-dev",
    "trec-test",
]


def write_jsonl(rows: Iterable[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def ensure(name: str, out: Path = DEFAULT_OUT) -> Path:
    """Path of the split's JSONL, written if missing."""
    path = out / f"{name}.jsonl"
    if not path.exists():
        write_jsonl(load(name), path)
    return path


def stratified_rows(rows: list[dict], n: int, seed: int) -> list[dict]:
    """n rows, labels as balanced as possible, seeded; order shuffled (used for few-shot files)."""
    rng = random.Random(seed)
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row["gold"], []).append(row)
    pools = [by_label[k][:] for k in sorted(by_label)]
    for pool in pools:
        rng.shuffle(pool)
    chosen: list[dict] = []
    while len(chosen) < n and any(pools):
        for pool in pools:
            if pool and len(chosen) < n:
                chosen.append(pool.pop())
    rng.shuffle(chosen)
    return chosen


def few_shot_file(dataset: str, n: int, seed: int, out: Path = DEFAULT_OUT, detok: bool = False) -> Path:
    """A few-shot JSONL (fields text, label, id) of n seeded, label-stratified rows of the dataset's pool.

    Pools: SST-2 train, AG News rows 2,601+, TREC train minus the dev slice.
    """
    pool = {"sst2": "sst2-train", "ag_news": "ag_news-pool", "trec": "trec-train"}[dataset]
    path = out / "fewshot" / f"{dataset}-n{n}-seed{seed}{'-detok' if detok else ''}.jsonl"
    if not path.exists():
        rows = stratified_rows(load(pool), n, seed)
        fix = detok_sst if detok else (lambda text: text)
        write_jsonl(({"id": r["id"], "text": fix(r["text"]), "label": r["gold"]} for r in rows), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    for name in SPLITS:
        rows = load(name)
        path = write_jsonl(rows, args.out / f"{name}.jsonl")
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["gold"]] = counts.get(row["gold"], 0) + 1
        print(f"{name:14s} {len(rows):5d} rows  {dict(sorted(counts.items()))}  -> {path}")


if __name__ == "__main__":
    main()
