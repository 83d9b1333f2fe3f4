"""Trans-Encoder with zero gold labels (Liu et al. 2022): STS-b train + SICK train pairs without their scores,
starting from MiniLM-L6 (all-MiniLM-L6-v2); bi- and cross-encoder Spearman on STS-b dev and test per cycle.

    python eval/transencoder.py [--cycles 3] [--first-teacher llm:qwen2.5-coder-1.5b-instruct]
                                [--epochs 1] [--init alternate|continue|fresh] [--data-dir DIR]
                                [--out-dir /tmp/llmst-eval/transencoder]
                                [--json eval/results/transencoder.json]
                                [--limit N]     # smoke run: the first N pairs of each file

A thin driver of `llmst transencoder` (llmst/experiments/transencoder.py): it writes OUT_DIR/transencoder.yaml and
runs it; every stage is signature-cached under OUT_DIR. Without --first-teacher the start bi-encoder labels the
first cycle (self-distillation); with it an LLM judge does (P(Yes) of the shipped pair-similarity task). Prints
the per-cycle table and writes the report as JSON (the full report is OUT_DIR/report.json).
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

from llmst.experiments.pair_report import transencoder_markdown  # noqa: E402
from llmst.experiments.transencoder import INITS, load_transencoder_config, run_transencoder  # noqa: E402

START = "minilm-l6"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--first-teacher", default=None, help="e.g. llm:qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--judge-task", default="pair-similarity")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--bi-loss", default="mse", choices=["mse", "cosent"])
    parser.add_argument(
        "--init",
        default="alternate",
        choices=INITS,
        help="where each model starts (`llmst transencoder`'s `init`; alternate: the paper's)",
    )
    parser.add_argument("--data-dir", type=Path, default=pairs_data.DEFAULT_OUT)
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/llmst-eval/transencoder"))
    parser.add_argument("--json", type=Path, default=Path("eval/results/transencoder.json"))
    parser.add_argument("--limit", type=int, default=None, help="smoke run: the first N pairs of each file")
    args = parser.parse_args()
    started = time.perf_counter()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    names = ("stsb-train", "sick-train", "stsb-dev", "stsb-test")
    files = {name: pairs_data.ensure(name, args.data_dir) for name in names}
    if args.limit:
        files = {
            n: pairs_data.first_lines(p, args.out_dir / "limited" / p.name, args.limit)
            for n, p in files.items()
        }
    common = {"epochs": args.epochs, "batch_size": 32, "max_length": 128}
    config = {
        "out_dir": str(args.out_dir.resolve()),
        "pairs": [str(files["stsb-train"].resolve()), str(files["sick-train"].resolve())],
        "dev": str(files["stsb-dev"].resolve()),
        "test": str(files["stsb-test"].resolve()),
        "start": START,
        "cycles": args.cycles,
        "init": args.init,
        "cross": common,
        "bi": {**common, "loss": args.bi_loss, "learning_rate": 2e-5},
        "score": {"batch_size": 64, "max_length": 128, "judge_task": args.judge_task},
    }
    if args.first_teacher:
        config["first_teacher"] = args.first_teacher
    path = args.out_dir / "transencoder.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    report = run_transencoder(load_transencoder_config(path))
    print(transencoder_markdown(report))
    payload = {
        "command": "python eval/transencoder.py " + " ".join(sys.argv[1:]),
        "machine": platform.processor() or platform.machine(),
        "settings": {k: v for k, v in config.items() if k not in ("out_dir",)} | {"limit": args.limit},
        "pairs": report["pairs"],
        "start": report["start"][report["chains"][0]],
        "cycles": [
            {
                "cycle": entry["cycle"],
                "teacher": entry["teacher"],
                "bi": entry["bi"][report["chains"][0]],
                "cross": entry["cross"][report["chains"][0]],
            }
            for entry in report["cycles"]
        ],
        "report": str(args.out_dir / "report.json"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
