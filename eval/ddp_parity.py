"""One process vs 2-rank DDP (`torchrun --nproc_per_node 2 -m llmst train`) on CPU: same data, same seed.

    python eval/ddp_parity.py [--rows 1500] [--seeds 0 1]

Data: the first --rows pseudo-labeled rows that eval/students_sst2.py kept (conformal filter); student:
MiniLM-L6, 1 epoch, the same global batch of 16 (1 process x 16, or 2 ranks x 8), so both take the same
number of optimiser steps; bf16 autocast. Both models relabel SST-2 test (`llmst predict`) and are scored (`llmst evaluate`). Run
eval/students_sst2.py first. Prints a markdown table and writes eval/results/ddp_parity.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data as evaldata  # noqa: E402

from llmst.evaluate import evaluate_file  # noqa: E402
from llmst.train import PredictConfig, predict_file  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
KEPT = Path("/tmp/llmst-eval/students/kept/conformal-p0.85.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/llmst-eval/ddp"))
    parser.add_argument("--out", type=Path, default=RESULTS / "ddp_parity.json")
    args = parser.parse_args()
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    data = work / "train.jsonl"
    data.write_text("".join(open(KEPT).readlines()[: args.rows]))
    test = evaldata.ensure("sst2-test")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = []
    for seed in args.seeds:
        for ranks in (1, 2):
            out = work / f"ranks{ranks}-s{seed}"
            launcher = [sys.executable, "-m", "llmst"]
            if ranks > 1:
                launcher = [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--nproc_per_node",
                    str(ranks),
                    "-m",
                    "llmst",
                ]
            command = launcher + [
                "train",
                str(data),
                "-o",
                str(out),
                "--student",
                "minilm-l6",
                "--epochs",
                "1",
            ]
            command += [
                "--batch-size",
                str(16 // ranks),  # the same global batch, so the same number of optimiser steps
                "--max-length",
                "64",
                "--bf16",
                "--seed",
                str(seed),
                "--quiet",
                "--overwrite",
            ]
            done = subprocess.run(command, capture_output=True, text=True, env=env if ranks > 1 else None)
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            summary = json.loads(done.stdout[done.stdout.index("{") :])
            predicted = work / f"ranks{ranks}-s{seed}.test.jsonl"
            predict_file(out, test, predicted, PredictConfig(overwrite=True, progress=False))
            accuracy = evaluate_file(predicted, gold_field="gold")["accuracy"]
            results.append(
                {
                    "ranks": ranks,
                    "seed": seed,
                    "steps": summary["steps"],
                    "seconds": summary["seconds"],
                    "test_accuracy": round(accuracy, 4),
                    "command": shlex.join(command[1:] if ranks == 1 else ["torchrun", *command[3:]]),
                }
            )
            print(f"ranks {ranks} seed {seed}: acc {accuracy:.4f}", file=sys.stderr, flush=True)
    lines = ["| ranks | seed | optimiser steps | seconds | SST-2 test acc |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['ranks']} | {r['seed']} | {r['steps']} | {r['seconds']:.0f} | {r['test_accuracy']:.4f} |"
        for r in results
    ]
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": shlex.join(["python", "eval/ddp_parity.py", *sys.argv[1:]]),
                "results": results,
                "table_markdown": table,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
