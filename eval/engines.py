"""The local engine against `--engine ray` and `--shard` + `llmst merge`, all in one run: docs/s of each and
whether their records equal the local engine's.

    python eval/engines.py [--limit 800] [--dtype float32] [--out eval/results/engines.json]

SST-2 test (the first `--limit` rows), zero-shot, shipped `sentiment` task, default model, `--calibrate
prior`, no answer cache, on this machine's cores:
- local: one process, `torch` with every core (2 threads here);
- ray: a local Ray instance with `--num-workers 2`, one CPU and one thread each (`OMP_NUM_THREADS=1`), parts
  of `--part-rows`; the calibration is fitted once on the driver;
- shards: `--shard 0/2` and `--shard 1/2` as two processes at once (one thread each), then `llmst merge`.
Each run is a `llmst` subprocess, timed from start to finish (model load and prior fit included, as a user
waits for them). Agreement with the local records: same ids in the same order, share of equal labels, largest
probability difference (bf16 moves probabilities with the rows that share a batch; float32, the default
here, does not). Prints a markdown table and writes JSON. Record `lscpu` flags with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import ensure  # noqa: E402

from llmst.readers import read_jsonl  # noqa: E402

LLMST = [sys.executable, "-m", "llmst"]


def _run(commands: list[list[str]], threads: int) -> float:
    """Run the commands at once (each with `threads` torch threads); their wall time in seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "RAY_USAGE_STATS_ENABLED": "0"}
    started = time.perf_counter()
    processes = [
        subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands
    ]
    for command, process in zip(commands, processes, strict=True):
        _, err = process.communicate()
        if process.returncode:
            raise SystemExit(f"failed: {' '.join(command)}\n{err.decode()[-2000:]}")
    return time.perf_counter() - started


def _agreement(reference: list[dict], other: list[dict]) -> dict:
    same_order = [r["id"] for r in reference] == [r["id"] for r in other]
    labels = sum(a["label"] == b["label"] for a, b in zip(reference, other, strict=False)) / len(reference)
    gap = max(
        abs(a["probs"][k] - b["probs"][k]) for a, b in zip(reference, other, strict=False) for k in a["probs"]
    )
    return {"same_ids_and_order": same_order, "equal_labels": round(labels, 4), "max_prob_diff": float(gap)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=800, help="SST-2 test rows")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads of the local run")
    parser.add_argument("--part-rows", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "engines.json")
    args = parser.parse_args()
    rows = read_jsonl(ensure("sst2-test"))[: args.limit]
    work = Path(tempfile.mkdtemp(prefix="llmst-engines-"))
    source = work / "sst2-test.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = [str(source), "--task", "sentiment", "--no-cache", "--dtype", args.dtype, "--quiet"]
    runs = {}
    runs["local"] = (
        _run([[*LLMST, "label", *common, "-o", str(work / "local.jsonl")]], args.threads),
        "local.jsonl",
    )
    ray = [*LLMST, "label", *common, "-o", str(work / "ray.jsonl"), "--engine", "ray", "--num-workers", "2"]
    runs["ray (2 workers x 1 thread)"] = (_run([[*ray, "--part-rows", str(args.part_rows)]], 1), "ray.jsonl")
    shards = [
        [*LLMST, "label", *common, "-o", str(work / f"s{i}.jsonl"), "--shard", f"{i}/2"] for i in (0, 1)
    ]
    seconds = _run(shards, 1)
    seconds += _run(
        [[*LLMST, "merge", str(work / "s0.jsonl"), str(work / "s1.jsonl"), "-o", str(work / "merged.jsonl")]],
        1,
    )
    runs["--shard 0/2, 1/2 at once + merge"] = (seconds, "merged.jsonl")
    reference = read_jsonl(work / "local.jsonl")
    results = []
    for name, (secs, file) in runs.items():
        records = read_jsonl(work / file)
        results.append(
            {"engine": name, "docs": len(records), "seconds": round(secs, 1),
             "docs_per_second": round(len(records) / secs, 2), **_agreement(reference, records)}
        )  # fmt: skip
    lines = ["| engine | docs | seconds | docs/s | same ids, order | equal labels | max prob diff |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        lines.append(
            f"| {r['engine']} | {r['docs']} | {r['seconds']} | {r['docs_per_second']} | {r['same_ids_and_order']} | "
            f"{r['equal_labels']} | {r['max_prob_diff']:.2e} |"
        )
    print("\n".join(lines))
    flags = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    wanted = ("avx512_bf16", "amx_bf16", "avx512f", "avx2")
    payload = {
        "command": "python eval/engines.py " + " ".join(sys.argv[1:]),
        "machine": platform.processor() or platform.machine(),
        "cpu_flags": [f for f in wanted if f in flags],
        "cores": os.cpu_count(),
        "dtype": args.dtype,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
