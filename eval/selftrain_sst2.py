"""A 2-round `llmst selftrain` run on SST-2 with zero gold training labels.

    python eval/selftrain_sst2.py [--filter conformal|balanced] [--curriculum 0.8] [--seed 0]

Pool: SST-2 train texts (6,920); the labeler: default model zero-shot, `--calibrate prior`; round 0 filter:
the one chosen on the 200 dev rows by eval/students_sst2.py (conformal precision >= 0.85 on those rows, or
balanced top 50% per class); student: MiniLM-L6 full fine-tune, 2 epochs; round 1: the round-0 student
relabels the pool, the curriculum keeps the top `--curriculum` of each class, a fresh MiniLM is trained
from the initial weights. dev = the 200 dev rows (gold), test = SST-2 test (reported, never used to choose).
Writes the YAML it runs, the run under --work-dir, and eval/results/selftrain_sst2.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data as evaldata  # noqa: E402

from llmst.experiments.selftrain import (  # noqa: E402
    load_selftrain_config,
    report_markdown,
    run_selftrain,
)
from llmst.label.config import LabelConfig  # noqa: E402
from llmst.label.run import label_corpus  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--filter",
        choices=["auto", "conformal", "balanced", "none"],
        default="auto",
        help="auto: the filter eval/students_sst2.py chose on the 200 dev rows (eval/results/students_sst2.json)",
    )
    parser.add_argument("--curriculum", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-path", default="/tmp/llmst-eval/cache.sqlite")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/llmst-eval/selftrain"))
    parser.add_argument("--out", type=Path, default=RESULTS / "selftrain_sst2.json")
    args = parser.parse_args()
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    pool = evaldata.write_jsonl(evaldata.load("sst2-train"), work / "pool.jsonl")
    dev200 = evaldata.write_jsonl(
        random.Random(0).sample(evaldata.load("sst2-dev"), 200), work / "dev200.jsonl"
    )
    test = evaldata.ensure("sst2-test")
    label = {"task": "sentiment", "calibrate": "prior", "cache_path": args.cache_path}
    calibration = work / "dev200.labeled.jsonl"
    label_corpus(dev200, calibration, LabelConfig(**label, progress=False))
    soft = False
    if args.filter == "auto":
        chosen = json.loads((RESULTS / "students_sst2.json").read_text())["chosen_filter"]
        args.filter = chosen.split("-")[0].split(" ")[0]
    if args.filter == "none":
        filter_options = {"method": "threshold", "threshold": 0.0, "plots": False}
        soft = True
    elif args.filter == "conformal":
        filter_options = {
            "method": "conformal",
            "calibration": str(calibration),
            "target_precision": 0.85,
            "delta": 0.1,
            "plots": False,
        }
    else:
        filter_options = {"method": "balanced", "fraction": 0.5, "plots": False}
    config = {
        "corpus": str(pool),
        "out_dir": str(work / "run"),
        "rounds": 2,
        "dev": str(dev200),
        "test": str(test),
        "curriculum": [args.curriculum],
        "label": label,
        "filter": filter_options,
        "train": {
            "student": "minilm-l6",
            "epochs": 2,
            "bf16": True,
            "batch_size": 16,
            "max_length": 64,
            "seed": args.seed,
            "soft_labels": soft,
        },
    }
    config_path = work / "selftrain.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    report = run_selftrain(load_selftrain_config(config_path))
    table = report_markdown(report)
    print(table)
    payload = {
        "command": shlex.join(["python", "eval/selftrain_sst2.py", *sys.argv[1:]]),
        "equivalent_cli": f"llmst selftrain {config_path}",
        "config": config,
        "report": report,
        "table_markdown": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
