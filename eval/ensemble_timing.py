"""Wall time of the dev-chosen SST-2 prompt ensemble: one `llmst label` run vs its five members run apart.

    python eval/ensemble_timing.py [--rows 100] [--out eval/results/ensemble_timing.json]

Both ways label the first `--rows` SST-2 test rows cold (`--no-cache`) with the same five prompts (the
shipped `sentiment` template and `Review: {{ text }}\\nSentiment:`, each 16-shot from one 16-row SST-2 train
file in two seeded orders, plus the zero-shot `sentiment` prompt), each prompt prior-calibrated:
- one command: `llmst label ... --template short.yaml --few-shot F --shots 16 --orders 2 --zero-shot-member`;
- apart: five `llmst label` commands (one per member) and `llmst aggregate --method mean`.
Each is a fresh CLI process, as a user runs it. Prints a table (seconds, accuracy of both fused outputs,
which must agree) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data as evaldata  # noqa: E402
from fewshot_ensemble import task_file  # noqa: E402

from llmst.evaluate import evaluate_file  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def llmst(*args: str) -> None:
    quiet = ["-q"] if args[0] == "label" else []
    subprocess.run([sys.executable, "-m", "llmst.cli", *args, *quiet], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS / "ensemble_timing.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmst-ens-timing-"))
    source = evaldata.write_jsonl(evaldata.load("sst2-test")[: args.rows], work / "test.jsonl")
    shots = evaldata.few_shot_file("sst2", 16, 0, work)
    short = task_file("sentiment", work)
    common = ["--no-cache", "--overwrite"]

    started = time.perf_counter()
    one = work / "one.jsonl"
    llmst("label", str(source), "-o", str(one), "--task", "sentiment", "--template", short, "--few-shot", str(shots),
          "--shots", "16", "--orders", "2", "--zero-shot-member", *common)  # fmt: skip
    one_seconds = time.perf_counter() - started

    started = time.perf_counter()
    members = []
    for task in ("sentiment", short):
        for order in (0, 1):
            out = work / f"apart-{Path(task).stem}-{order}.jsonl"
            llmst("label", str(source), "-o", str(out), "--task", task, "--few-shot", str(shots), "--shots", "16",
                  "--seed", str(order), *common)  # fmt: skip
            members.append(str(out))
    zero = work / "apart-zero.jsonl"
    llmst("label", str(source), "-o", str(zero), "--task", "sentiment", *common)
    members.append(str(zero))
    apart = work / "apart.jsonl"
    llmst("aggregate", *members, "-o", str(apart), "--method", "mean", "--no-plots")
    apart_seconds = time.perf_counter() - started

    accuracy = {
        name: round(evaluate_file(path)["accuracy"], 4) for name, path in (("one", one), ("apart", apart))
    }
    result = {
        "command": "python " + " ".join(sys.argv),
        "rows": args.rows,
        "one_command_seconds": round(one_seconds, 1),
        "five_runs_seconds": round(apart_seconds, 1),
        "accuracy": accuracy,
    }
    print("| way | seconds | accuracy |\n|---|---|---|")
    print(f"| one `llmst label` (5 prompts) | {one_seconds:.1f} | {accuracy['one']:.4f} |")
    print(f"| 5 `llmst label` + `llmst aggregate` | {apart_seconds:.1f} | {accuracy['apart']:.4f} |")
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
