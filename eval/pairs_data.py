"""Pair datasets from ../shared/data as pair records (`llmst pairs` / `llmst train --kind ...` data).

| name        | source                          | rows   | label                         |
|-------------|---------------------------------|--------|-------------------------------|
| stsb-train  | stsb/sts-train.csv              | 5,749  | similarity 0-5, divided by 5  |
| stsb-dev    | stsb/sts-dev.csv                | 1,500  | same                          |
| stsb-test   | stsb/sts-test.csv               | 1,379  | same                          |
| sick-train  | sick/SICK_train.txt             | 4,500  | relatedness 1-5, (x - 1) / 4  |

Each record: `id, text_a, text_b, label`. STS-b's CSVs are tab-separated with the score in column 5 and the two
sentences in columns 6 and 7 (some lines carry extra source columns after them, which are ignored).

    python eval/pairs_data.py [--out DIR]      # writes DIR/<name>.jsonl (default /tmp/llmst-eval/pairs/data)
"""

from __future__ import annotations

import argparse
import json
from itertools import islice
from pathlib import Path

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
DEFAULT_OUT = Path("/tmp/llmst-eval/pairs/data")


def _stsb(split: str) -> list[dict]:
    rows = []
    with open(SHARED / "stsb" / f"sts-{split}.csv", encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            parts = line.rstrip("\n").split("\t")
            rows.append(
                {
                    "id": f"stsb-{split}-{index}",
                    "text_a": parts[5],
                    "text_b": parts[6],
                    "label": float(parts[4]) / 5,
                }
            )
    return rows


def _sick_train() -> list[dict]:
    """SICK's train pairs (tab-separated with a header: pair_ID, sentence_A, sentence_B, relatedness_score, ...)."""
    rows = []
    with open(SHARED / "sick" / "SICK_train.txt", encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            parts = line.rstrip("\n").split("\t")
            rows.append(
                {
                    "id": f"sick-train-{parts[0]}",
                    "text_a": parts[1],
                    "text_b": parts[2],
                    "label": (float(parts[3]) - 1) / 4,
                }
            )
    return rows


LOADERS = {f"stsb-{split}": (lambda s=split: _stsb(s)) for split in ("train", "dev", "test")}
LOADERS["sick-train"] = _sick_train


def ensure(name: str, out: Path = DEFAULT_OUT) -> Path:
    """The path of dataset `name` as JSONL, written if missing."""
    path = out / f"{name}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in LOADERS[name]():
                handle.write(json.dumps(row) + "\n")
        tmp.replace(path)
    return path


def first_lines(source: Path, out: Path, n: int) -> Path:
    """The first `n` lines of `source` as `out` (a smoke run's data), rewritten only when they differ."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(source, encoding="utf-8") as handle:
        text = "".join(islice(handle, n))
    if not out.exists() or out.read_text(encoding="utf-8") != text:
        out.write_text(text, encoding="utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    for name in LOADERS:
        path = ensure(name, args.out)
        print(f"{name}: {sum(1 for _ in open(path, encoding='utf-8'))} rows -> {path}")


if __name__ == "__main__":
    main()
