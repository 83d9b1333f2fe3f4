"""Write the demo corpus examples/sst2_demo/{pool,test}.jsonl from the SST-2 files (see its SOURCE.md).

    python scripts/make_demo_corpus.py [--sst2 ../shared/data/sst2] [--pool-rows 2000] [--test-rows 400]

pool.jsonl: --pool-rows rows drawn without replacement from stsa.binary.train with random.Random(0), in
file order; fields id, text and gold (the gold label is for reporting the precision of the kept labels only;
nothing in the demo trains on it). test.jsonl: --test-rows rows drawn the same way (random.Random(1)) from
stsa.binary.test, fields id, text, gold. The two splits are disjoint files, so the pool and the test slice
share no row. Text is kept exactly as distributed (lowercased, PTB-tokenized). Ids name the source line:
sst2-train-00042 is line 42 of stsa.binary.train.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LABELS = {"0": "negative", "1": "positive"}


def read_split(folder: Path, split: str) -> list[dict]:
    rows = []
    with open(folder / f"stsa.binary.{split}", encoding="utf-8") as handle:
        for index, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if line:
                label, text = line.split(" ", 1)
                rows.append({"id": f"sst2-{split}-{index:05d}", "text": text, "gold": LABELS[label]})
    return rows


def draw(rows: list[dict], n: int, seed: int) -> list[dict]:
    """n rows without replacement, seeded, kept in file order."""
    chosen = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in chosen]


def write(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["gold"]] = counts.get(row["gold"], 0) + 1
    print(f"{path}: {len(rows)} rows {dict(sorted(counts.items()))}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sst2", type=Path, default=(REPO / ".." / "shared" / "data" / "sst2").resolve())
    parser.add_argument("--pool-rows", type=int, default=2000)
    parser.add_argument("--test-rows", type=int, default=400)
    parser.add_argument("--out", type=Path, default=REPO / "examples" / "sst2_demo")
    args = parser.parse_args()
    write(draw(read_split(args.sst2, "train"), args.pool_rows, seed=0), args.out / "pool.jsonl")
    write(draw(read_split(args.sst2, "test"), args.test_rows, seed=1), args.out / "test.jsonl")


if __name__ == "__main__":
    main()
