"""Augmented SBERT on STS-b (Thakur et al. 2021): gold-only fine-tuning vs gold + silver pairs scored by a
cross-encoder teacher, with random sampling as the control; MiniLM-L6 (all-MiniLM-L6-v2) students.

    python eval/augsbert.py [--seeds 0 1 2 3 4] [--silver 6000] [--epochs 1] [--teacher-epochs 3]
                            [--data-dir DIR] [--out-dir /tmp/llmst-eval/augsbert] [--json eval/results/augsbert.json]
                            [--limit N]     # smoke run: the first N train, dev and test pairs only

A thin driver of `llmst augsbert` (llmst/experiments/augsbert.py, the one implementation): it writes
OUT_DIR/augsbert.yaml for STS-b and runs it. The experiment's stages, each signature-cached under OUT_DIR (a rerun
reuses what is current):
1. teacher: `llmst train --kind cross-encoder` on STS-b train gold (MiniLM-L6 weights, new head, scores / 5),
   less the train pairs that are also dev or test pairs (counted in the report, OUT_DIR/data/train.rejects.jsonl);
2. silver pairs: `llmst pairs sample` over the train sentences by bm25, semantic (MiniLM-L6) and random, top-3,
   with STS-b dev and test pairs excluded (the leak guard); AugSBERT's `--silver` pairs take bm25 and semantic
   pairs in turn (each pair once); the random control is cut to exactly as many pairs;
3. `llmst pairs score` with the teacher (its sigmoid score is the target);
4. per seed, bi-encoders (`llmst train --kind bi-encoder --loss cosent`) on gold only, gold + bm25/semantic
   silver (AugSBERT) and gold + random silver; Spearman x 100 on STS-b dev and test (`llmst.pairs.evaluate`).
The seeds vary the bi-encoder students only (the teacher and the silver pairs are shared by every seed).
Prints the experiment's table (mean over seeds, 95% t-interval; AugSBERT minus gold-only paired by seed) and
writes JSON in the format of eval/results/augsbert_seed*.json (the full report is OUT_DIR/report.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pairs_data  # noqa: E402

from llmst.experiments.augsbert import load_augsbert_config, run_augsbert  # noqa: E402
from llmst.experiments.pair_report import augsbert_markdown  # noqa: E402

STUDENT = "minilm-l6"


def experiment_config(args, files: dict[str, Path]) -> dict:
    """The `llmst augsbert` config of this benchmark."""
    common = {"student": STUDENT, "batch_size": 16, "max_length": 128}
    return {
        "out_dir": str(args.out_dir.resolve()),
        "data": {split: str(path.resolve()) for split, path in files.items()} | {"gold_field": "label"},
        "teacher": {**common, "epochs": args.teacher_epochs},
        "sample": {"methods": ["bm25", "semantic"], "top_k": 3, "encoder": STUDENT},
        "silver": args.silver,
        "control": True,
        "score": {"max_length": 128, "batch_size": 64},
        "student": {**common, "loss": "cosent", "epochs": args.epochs, "learning_rate": 2e-5},
        "seeds": args.seeds,
    }


def results_json(report: dict, args) -> dict:
    """The experiment's report in the format of eval/results/augsbert_seed*.json."""
    results = {"off-the-shelf": {"per_seed": {s: [v] for s, v in report["start"].items()}}}
    results["off-the-shelf"] |= {"mean": dict(report["start"]), "test_ci": None}
    for name, summary in report["variants"].items():
        results[name] = {
            "per_seed": summary["per_seed"],
            "mean": summary["mean"],
            "test_ci": summary["ci"]["test"],
        }
    return {
        "command": "python eval/augsbert.py " + " ".join(sys.argv[1:]),
        "machine": platform.processor() or platform.machine(),
        "settings": {
            "silver": args.silver,
            "epochs": args.epochs,
            "teacher_epochs": args.teacher_epochs,
            "seeds": args.seeds,
            "student": STUDENT,
            "loss": "cosent",
            "learning_rate": 2e-5,
            "limit": args.limit,
        },
        "teacher": report["teacher"],
        "gold_pairs": report["gold"],
        "results": results,
        "versus_gold": {name: diff["test"] for name, diff in report["versus_gold"].items()},
        "silver_pairs": {name: silver["pairs"] for name, silver in report["silver"].items()},
        "report": str(args.out_dir / "report.json"),
        "seconds": report["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--silver", type=int, default=6000, help="silver pairs per variant")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--teacher-epochs", type=float, default=3.0)
    parser.add_argument("--data-dir", type=Path, default=pairs_data.DEFAULT_OUT)
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/llmst-eval/augsbert"))
    parser.add_argument("--json", type=Path, default=Path("eval/results/augsbert.json"))
    parser.add_argument("--limit", type=int, default=None, help="smoke run: the first N pairs of each split")
    args = parser.parse_args()
    started = time.perf_counter()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    files = {s: pairs_data.ensure(f"stsb-{s}", args.data_dir) for s in ("train", "dev", "test")}
    if args.limit:
        files = {
            s: pairs_data.first_lines(p, args.out_dir / "limited" / p.name, args.limit)
            for s, p in files.items()
        }
    config_path = args.out_dir / "augsbert.yaml"
    config_path.write_text(yaml.safe_dump(experiment_config(args, files), sort_keys=False))
    report = run_augsbert(load_augsbert_config(config_path))
    print(augsbert_markdown(report))
    payload = results_json(report, args)
    payload["seconds"] = round(time.perf_counter() - started, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
