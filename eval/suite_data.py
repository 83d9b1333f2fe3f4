"""Development-suite data: twelve classification sets under ../shared/data as dev/test/pool JSONL.

Every row is {"id", <text fields>, "gold"}; gold is a label name of the task (SUITE[name].labels).
Slices are seeded random samples (seed 0): test (TEST_ROWS) is drawn first, then dev (DEV_ROWS) from
rows whose text is not in test, then the pool is every remaining row of the pool source whose text is
in neither. Texts are compared whitespace-collapsed and case-folded (pairs as a whole), so a task's
three slices never share a text; repeated texts are dropped and counted, as are rows with an empty
text field or an unknown label.

| task                 | test slice from      | dev slice from       | pool              | dev/test/pool  |
|----------------------|----------------------|----------------------|-------------------|----------------|
| sst2                 | stsa.binary.test     | stsa.binary.dev      | stsa.binary.train | 200/500/6,910  |
| mr                   | rt-polarity.pos+.neg | (one shuffle)        | (the rest)        | 200/500/9,962  |
| ag_news              | test.csv 1-2,000     | test.csv 2,001-2,600 | test.csv 2,601+   | 200/500/5,000  |
| trec                 | TREC.test (all)      | data.py trec-dev     | rest of train     | 200/500/4,874  |
| sick                 | SICK.txt TEST        | SICK.txt TRIAL       | SICK.txt TRAIN    | 200/500/4,439  |
| boolq                | dev.jsonl            | (one shuffle)        | (the rest)        | 200/500/2,570  |
| wikiqa               | WikiQA-test.txt      | WikiQA-train.txt     | rest of train     | 200/500/20,158 |
| sms_spam             | SMSSpamCollection    | (one shuffle)        | (the rest)        | 200/500/4,459  |
| emotion              | test.txt             | val.txt              | train.txt         | 200/500/15,965 |
| cola                 | in_domain_dev.tsv    | in_domain_train.tsv  | rest of train     | 200/500/8,324  |
| financial_phrasebank | Sentences_AllAgree   | (one shuffle)        | (the rest)        | 200/500/1,559  |
| rte                  | dev.tsv (all)        | train.tsv            | rest of train     | 200/277/2,288  |

"One shuffle": the source has no usable splits (BoolQ: only its dev split is here), so test, then
dev, come from one seeded shuffle of it and the pool is the rest. SICK splits by its SemEval_set
column. The CoLA and GLUE RTE test sets are unlabeled, so their dev sets are the test slices (RTE's
has only 277 rows). Rows dropped as repeated texts (none are empty or unlabeled): sst2 10, trec 79
(TREC.train repeats questions), wikiqa 2, sms_spam 415 (403 exact duplicates), emotion 35, cola 27,
financial_phrasebank 5, rte 2 (`python eval/suite_data.py` prints them by slice).

Encodings: MR is cp1252 (the Windows superset of latin-1: its bytes 0x85/0x91/0x96/0x97 are the
ellipsis, quote and dashes it means; latin-1 would turn them into C1 control characters), TREC.train
latin-1 (via data.py), Sentences_AllAgree.txt UTF-8 (this copy was re-encoded from the latin-1
original; SOURCE.md), the rest UTF-8. Texts are kept as distributed apart from stripping; SST-2 and
AG News use data.py's conversions. CoLA's third column (the author's star mark) gives the label away
and is dropped. BoolQ keeps the passage without its title.

    python eval/suite_data.py [--out DIR]   # writes DIR/<task>-<split>.jsonl, prints a markdown table
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data as evaldata  # noqa: E402

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
DEFAULT_OUT = Path("/tmp/llmst-eval/suite")
DEV_ROWS = 200
TEST_ROWS = 500
SEED = 0
SPLITS = ("dev", "test", "pool")


@dataclass(frozen=True)
class SuiteTask:
    """One suite task: gold label names (as for `--labels`), its row fields, and llmst's shipped task."""

    name: str
    labels: tuple[str, ...]
    text_fields: tuple[str, ...]
    description: str
    shipped_task: str | None


_TASKS = [
    SuiteTask("sst2", ("negative", "positive"), ("text",),
              "SST-2 binary sentence sentiment; test from its test split, dev from its dev split.",
              "sentiment"),
    SuiteTask("mr", ("negative", "positive"), ("text",),
              "MR movie-review snippet polarity (Pang & Lee); no splits, all slices from one seeded shuffle.",
              "sentiment"),
    SuiteTask("ag_news", tuple(evaldata.AG_LABELS.values()), ("text",),
              "AG News topic; test from test.csv rows 1-2,000, dev from rows 2,001-2,600 (data.py).",
              "ag_news"),
    SuiteTask("trec", tuple(evaldata.TREC_LABELS.values()), ("text",),
              "TREC question type (6 coarse classes); test = all 500 of TREC.test, dev from data.py's "
              "500-row trec-dev.", "trec"),
    SuiteTask("sick", ("entailment", "neutral", "contradiction"), ("premise", "hypothesis"),
              "SICK sentence-pair entailment; test from SemEval TEST, dev from TRIAL, pool from TRAIN.",
              None),
    SuiteTask("boolq", ("no", "yes"), ("question", "passage"),
              "BoolQ yes/no questions over a Wikipedia passage; only its dev split is here, all slices "
              "from one seeded shuffle.", None),
    SuiteTask("wikiqa", ("irrelevant", "relevant"), ("question", "answer"),
              "WikiQA: does the candidate sentence answer the question; test from the filtered test "
              "split, dev from train.", None),
    SuiteTask("sms_spam", ("ham", "spam"), ("text",),
              "SMS Spam Collection ham/spam; no splits, deduplicated, all slices from one seeded shuffle.",
              None),
    SuiteTask("emotion", ("sadness", "joy", "love", "anger", "fear", "surprise"), ("text",),
              "dair-ai Emotion, 6 emotions of tweets (distant labels); test from test, dev from val.", None),
    SuiteTask("cola", ("unacceptable", "acceptable"), ("text",),
              "CoLA grammatical acceptability; test from in-domain dev (test is private), dev from train.",
              None),
    SuiteTask("financial_phrasebank", ("negative", "neutral", "positive"), ("text",),
              "Financial PhraseBank sentiment (all annotators agree); no splits, one seeded shuffle.", None),
    SuiteTask("rte", ("entailment", "not_entailment"), ("premise", "hypothesis"),
              "GLUE RTE entailment; test = all 277 rows of dev (test is unlabeled), dev from train.", None),
]  # fmt: skip
SUITE: dict[str, SuiteTask] = {task.name: task for task in _TASKS}

# One plain sentence per task, as a user bringing the task would write it for `--instruction` (written once in
# session 14 before any run with them, never edited after seeing a score; they name the domain and the
# decision, not label synonyms).
USER_INSTRUCTIONS: dict[str, str] = {
    "sst2": "Classify the sentiment of the movie review.",
    "mr": "Classify the sentiment of the movie review.",
    "ag_news": "Classify the topic of the news article.",
    "trec": "Classify the question by the type of answer it asks for.",
    "sick": "Decide whether the premise entails the hypothesis, contradicts it, or neither (neutral).",
    "boolq": "Answer the yes/no question about the passage.",
    "wikiqa": "Decide whether the answer sentence answers the question.",
    "sms_spam": "Classify the SMS message as spam or not spam (ham).",
    "emotion": "Classify the emotion expressed in the tweet.",
    "cola": "Decide whether the sentence is grammatically acceptable English.",
    "financial_phrasebank": "Classify the sentiment of the financial news sentence.",
    "rte": "Decide whether the premise entails the hypothesis.",
}


def _add(rows: list[dict], stats: Counter, src: str, gold: str, task: str, **fields: str) -> None:
    """Append a source row (stripped) or count why it is dropped."""
    fields = {key: (value or "").strip() for key, value in fields.items()}
    if not all(fields.values()):
        stats["empty text"] += 1
    elif gold not in SUITE[task].labels:
        stats["unknown label"] += 1
    else:
        rows.append({"src": src, **fields, "gold": gold})


def _from_data(task: str, split: str, stats: Counter) -> list[dict]:
    """A data.py split (SST-2, AG News, TREC) as source rows; src = data.py's id without its prefix."""
    rows: list[dict] = []
    for row in evaldata.load(f"{task}-{split}"):
        _add(rows, stats, row["id"].split("-", 1)[1], row["gold"], task, text=row["text"])
    return rows


_TSV = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}


def _tsv(path: Path, encoding: str = "utf-8") -> list[list[str]]:
    """Tab-separated lines without quoting (quotes in these files are literal)."""
    with open(path, encoding=encoding, newline="") as handle:
        return [[cell.rstrip("\r") for cell in line] for line in csv.reader(handle, **_TSV) if line]


def _lines(path: Path, encoding: str = "utf-8") -> list[tuple[int, str]]:
    """(1-based line number, line) of the non-blank lines."""
    with open(path, encoding=encoding) as handle:
        return [(i, line.rstrip("\r\n")) for i, line in enumerate(handle, start=1) if line.strip()]


def _sst2(stats):
    return tuple(_from_data("sst2", split, stats) for split in ("test", "dev", "train"))


def _ag_news(stats):
    return tuple(_from_data("ag_news", split, stats) for split in ("test", "dev", "pool"))


def _trec(stats):
    return tuple(_from_data("trec", split, stats) for split in ("test", "dev", "train"))


def _mr(stats):
    rows: list[dict] = []
    for side, gold in (("pos", "positive"), ("neg", "negative")):
        for i, line in _lines(SHARED / "mr" / f"rt-polarity.{side}", encoding="cp1252"):
            _add(rows, stats, f"{side}-{i:04d}", gold, "mr", text=line)
    return rows, rows, rows


def _sick(stats):
    parts: dict[str, list[dict]] = {"TEST": [], "TRIAL": [], "TRAIN": []}
    header, *body = _tsv(SHARED / "sick" / "SICK.txt")
    for cells in body:
        if len(cells) != len(header):
            stats["malformed line"] += 1
            continue
        row = dict(zip(header, cells, strict=True))
        target = parts.get(row["SemEval_set"])
        if target is None:
            stats["unknown split"] += 1
            continue
        pair = {"premise": row["sentence_A"], "hypothesis": row["sentence_B"]}
        _add(target, stats, row["pair_ID"], row["entailment_label"].lower(), "sick", **pair)
    return parts["TEST"], parts["TRIAL"], parts["TRAIN"]


def _boolq(stats):
    rows: list[dict] = []
    for i, line in _lines(SHARED / "boolq" / "dev.jsonl"):
        record = json.loads(line)
        answer = record.get("answer")
        gold = ("yes" if answer else "no") if isinstance(answer, bool) else str(answer)
        fields = {"question": record.get("question"), "passage": record.get("passage")}
        _add(rows, stats, f"{i:04d}", gold, "boolq", **fields)
    return rows, rows, rows


def _wikiqa(stats):
    parts = []
    for split in ("test", "train"):
        rows: list[dict] = []
        for i, cells in enumerate(_tsv(SHARED / "wikiqa" / f"WikiQA-{split}.txt"), start=1):
            if len(cells) != 3:
                stats["malformed line"] += 1
                continue
            gold = {"1": "relevant", "0": "irrelevant"}.get(cells[2].strip(), cells[2])
            _add(rows, stats, f"{split}-{i:05d}", gold, "wikiqa", question=cells[0], answer=cells[1])
        parts.append(rows)
    return parts[0], parts[1], parts[1]


def _sms_spam(stats):
    rows: list[dict] = []
    for i, line in _lines(SHARED / "sms_spam" / "SMSSpamCollection"):
        gold, _, text = line.partition("\t")
        _add(rows, stats, f"{i:04d}", gold, "sms_spam", text=text)
    return rows, rows, rows


def _emotion(stats):
    parts = []
    for split in ("test", "val", "train"):
        rows: list[dict] = []
        for i, line in _lines(SHARED / "emotion" / f"{split}.txt"):  # val.txt starts with a blank line
            text, _, gold = line.rpartition(";")
            _add(rows, stats, f"{split}-{i:05d}", gold, "emotion", text=text)
        parts.append(rows)
    return tuple(parts)


def _cola(stats):
    parts = []
    for split in ("dev", "train"):
        rows: list[dict] = []
        for i, cells in enumerate(_tsv(SHARED / "cola" / f"in_domain_{split}.tsv"), start=1):
            if len(cells) != 4:
                stats["malformed line"] += 1
                continue
            gold = {"0": "unacceptable", "1": "acceptable"}.get(cells[1], cells[1])
            _add(rows, stats, f"{split}-{i:04d}", gold, "cola", text=cells[3])  # cells[2]: the star mark
        parts.append(rows)
    return parts[0], parts[1], parts[1]


def _financial_phrasebank(stats):
    rows: list[dict] = []
    for i, line in _lines(SHARED / "financial_phrasebank" / "Sentences_AllAgree.txt"):
        text, _, gold = line.rpartition("@")
        _add(rows, stats, f"{i:04d}", gold, "financial_phrasebank", text=text)
    return rows, rows, rows


def _rte(stats):
    parts = []
    for split in ("dev", "train"):
        rows: list[dict] = []
        header, *body = _tsv(SHARED / "rte" / f"{split}.tsv")
        for cells in body:
            if len(cells) != len(header):
                stats["malformed line"] += 1
                continue
            row = dict(zip(header, cells, strict=True))
            pair = {"premise": row["sentence1"], "hypothesis": row["sentence2"]}
            _add(rows, stats, f"{split}-{row['index']}", row["label"], "rte", **pair)
        parts.append(rows)
    return parts[0], parts[1], parts[1]


_SOURCES = {
    "sst2": _sst2,
    "mr": _mr,
    "ag_news": _ag_news,
    "trec": _trec,
    "sick": _sick,
    "boolq": _boolq,
    "wikiqa": _wikiqa,
    "sms_spam": _sms_spam,
    "emotion": _emotion,
    "cola": _cola,
    "financial_phrasebank": _financial_phrasebank,
    "rte": _rte,
}


def text_key(row: dict, fields: tuple[str, ...]) -> tuple[str, ...]:
    """What counts as "the same text": every text field, whitespace-collapsed and case-folded."""
    return tuple(" ".join(row[field].split()).casefold() for field in fields)


@cache
def _build(name: str) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """(rows per split, dropped-row counts by reason) of one task."""
    if name not in SUITE:
        raise ValueError(f"unknown suite task '{name}' (known: {', '.join(SUITE)})")
    task = SUITE[name]
    stats: Counter = Counter()
    sources = _SOURCES[name](stats)  # (test source, dev source, pool source); may be the same list
    shuffled: dict[int, list[dict]] = {}
    for source in sources:
        if id(source) not in shuffled:
            order = list(source)
            random.Random(SEED).shuffle(order)
            shuffled[id(source)] = order
    used_src: set[str] = set()
    used_text: set[tuple[str, ...]] = set()
    splits: dict[str, list[dict]] = {}
    for split, source, limit in zip(
        ("test", "dev", "pool"), sources, (TEST_ROWS, DEV_ROWS, None), strict=True
    ):
        taken: list[dict] = []
        for row in shuffled[id(source)]:
            if limit is not None and len(taken) >= limit:
                break
            if row["src"] in used_src:  # already in an earlier slice (shared source)
                continue
            used_src.add(row["src"])
            key = text_key(row, task.text_fields)
            if key in used_text:
                stats[f"repeated ({split})"] += 1
                continue
            used_text.add(key)
            fields = {field: row[field] for field in task.text_fields}
            taken.append({"id": f"{name}-{split}-{row['src']}", **fields, "gold": row["gold"]})
        splits[split] = taken
    return splits, dict(stats)


def load_split(name: str, split: Literal["dev", "test", "pool"]) -> list[dict]:
    """Rows of one slice of a suite task (see the module docstring); a fresh copy on every call."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}' (known: {', '.join(SPLITS)})")
    return [dict(row) for row in _build(name)[0][split]]


def dropped(name: str) -> dict[str, int]:
    """Source rows left out of a task's slices, by reason (empty text, unknown label, repeated text)."""
    return dict(_build(name)[1])


def write_split(name: str, split: str, out_dir: Path = DEFAULT_OUT) -> Path:
    """Write out_dir/<name>-<split>.jsonl (kept untouched when it already has exactly these rows)."""
    rows = load_split(name, split)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path = Path(out_dir) / f"{name}-{split}.jsonl"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def label_distribution(rows: list[dict]) -> dict[str, int]:
    """Gold label -> count, most frequent first (ties by name)."""
    counts = Counter(row["gold"] for row in rows)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def majority_baseline(rows: list[dict], labels: tuple[str, ...]) -> dict:
    """Always answer the most frequent gold label of rows (ties: first in labels): accuracy, macro-F1."""
    from sklearn.metrics import f1_score

    if not rows:
        raise ValueError("majority_baseline needs at least one row")
    gold = [row["gold"] for row in rows]
    counts = Counter(gold)
    unknown = sorted(set(counts) - set(labels))
    if unknown:
        raise ValueError(f"gold labels not in labels: {unknown}")
    label = max(labels, key=lambda name: (counts[name], -labels.index(name)))
    macro = f1_score(gold, [label] * len(gold), labels=list(labels), average="macro", zero_division=0)
    return {"label": label, "accuracy": counts[label] / len(gold), "macro_f1": float(macro)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    head = "task | labels | text fields | dev | test | pool | dropped | majority (test) | acc | macro-F1"
    print(f"| {head} | test labels |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, task in SUITE.items():
        rows = {split: load_split(name, split) for split in SPLITS}
        for split in SPLITS:
            write_split(name, split, args.out)
        base = majority_baseline(rows["test"], task.labels)
        dist = label_distribution(rows["test"])
        lost = ", ".join(f"{n} {why}" for why, n in sorted(dropped(name).items())) or "0"
        print(
            f"| {name} | {','.join(task.labels)} | {','.join(task.text_fields)} | {len(rows['dev'])} "
            f"| {len(rows['test'])} | {len(rows['pool'])} | {lost} | {base['label']} "
            f"| {base['accuracy']:.3f} | {base['macro_f1']:.3f} "
            f"| {' '.join(f'{label}={dist.get(label, 0)}' for label in task.labels)} |"
        )
    print(f"\nwrote {len(SUITE) * len(SPLITS)} files to {args.out}")


if __name__ == "__main__":
    main()
