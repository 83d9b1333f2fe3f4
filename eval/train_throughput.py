"""Student training throughput on this machine (samples/s), through `llmst.train.train` itself.

    python eval/train_throughput.py [--rows 320] [--out eval/results/train_throughput.json]

SST-2 train sentences with gold labels as targets, batch 16, max 64 tokens, AdamW, one pass over `--rows`
rows (the first optimiser steps are included, so this slightly under-states steady-state speed). Students:
MiniLM-L6 full fine-tune, SmolLM2-135M full fine-tune, SmolLM2-135M + LoRA r=8 (all linear layers), the
last two also with bf16 autocast. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data as evaldata  # noqa: E402

from llmst.train import TrainConfig, train  # noqa: E402

SETTINGS = [
    ("MiniLM-L6 full fine-tune (fp32)", dict(student="minilm-l6")),
    ("MiniLM-L6 full fine-tune (bf16 autocast)", dict(student="minilm-l6", bf16=True)),
    ("SmolLM2-135M full fine-tune (fp32)", dict(student="smollm2-135m-instruct")),
    ("SmolLM2-135M LoRA r=8 all-linear (fp32)", dict(student="smollm2-135m-instruct", lora=True)),
    (
        "SmolLM2-135M LoRA r=8 all-linear (bf16 autocast)",
        dict(student="smollm2-135m-instruct", lora=True, bf16=True),
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "train_throughput.json"
    )
    args = parser.parse_args()
    rows = evaldata.load("sst2-train")[: args.rows]
    work = Path(tempfile.mkdtemp(prefix="llmst-throughput-"))
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps({"text": r["text"], "label": r["gold"]}) + "\n" for r in rows))
    results = []
    for index, (name, options) in enumerate(SETTINGS):
        config = TrainConfig(
            epochs=1,
            batch_size=16,
            max_length=64,
            labels=["negative", "positive"],
            save_steps=10_000,
            progress=False,
            **options,
        )
        summary = train(data, work / f"student{index}", config)
        results.append(
            {
                "setting": name,
                "rows": len(rows),
                "seconds": summary.seconds,
                "samples_per_second": summary.samples_per_second,
            }
        )
        print(f"{name}: {summary.samples_per_second:.1f} samples/s", file=sys.stderr, flush=True)
    print("| student | rows | seconds | samples/s |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['setting']} | {r['rows']} | {r['seconds']:.1f} | {r['samples_per_second']:.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": shlex.join(["python", "eval/train_throughput.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "batch_size": 16,
        "max_length": 64,
        "results": results,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
