"""Choose the hf backend's CPU batching on SST-2 *dev*: docs/s of each (rows per batch, per-call overhead in
tokens) variant, all in one process, alternating rounds so a VM's drift reaches every variant alike.

    python eval/batching.py [--variants 32/16,128/64,256/64] [--rounds 2] [--compile] [--dtype bfloat16]
                            [--out eval/results/batching_dev.json]

Scores the shipped `sentiment` prompt of every SST-2 dev row (872) with the default labeler through
`HFBackend.score` in chunks of 4 batches, as `llmst label` does, with one backend for all variants: each
sets its rows and overhead on it (what `llmst.backends.hf.batching` gives a new backend; the token cap stays
the CPU one). With `--compile` the decoder is compiled once and every variant warms up before the timed
rounds. Prints a table (docs/s per round and their median) and writes JSON with the CPU's flags.
`llmst.backends.hf.BF16_CPU_BATCH_SIZE` and `BF16_CPU_BATCH_OVERHEAD_TOKENS` were chosen with it; test data is never
read.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import ensure  # noqa: E402
from speed import _cpu_flags  # noqa: E402

import llmst.backends.hf as hf_module  # noqa: E402
from llmst.backends.base import ScoreRequest  # noqa: E402
from llmst.label.task import load_task  # noqa: E402
from llmst.models import DEFAULT_LABELER  # noqa: E402
from llmst.readers import read_jsonl  # noqa: E402


def dev_requests() -> list[ScoreRequest]:
    """The shipped `sentiment` prompt of every SST-2 dev row with its candidates, as `llmst label` scores it."""
    task = load_task("sentiment")
    candidates, _ = task.candidates()
    return [ScoreRequest(task.render(row, row["text"]), candidates) for row in read_jsonl(ensure("sst2-dev"))]


def score_in_chunks(backend, requests: list[ScoreRequest], step: int) -> float:
    """Score every request, `step` per `score` call as the label engine does; seconds."""
    started = time.perf_counter()
    for start in range(0, len(requests), step):
        backend.score(requests[start : start + step])
    return time.perf_counter() - started


def docs_per_second(backend, requests: list[ScoreRequest], rows: int, overhead: int) -> float:
    """Score every request under (rows, overhead) batching; docs/s."""
    backend.batch_size, backend._batch_overhead = rows, overhead
    return len(requests) / score_in_chunks(backend, requests, backend.chunk_size)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", default="32/16,64/64,128/16,128/64,128/128,256/64,256/128")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--out", type=Path, default=Path("eval/results/batching_dev.json"))
    args = parser.parse_args()
    variants = [tuple(int(x) for x in v.split("/")) for v in args.variants.split(",")]
    requests = dev_requests()
    backend = hf_module.HFBackend(DEFAULT_LABELER, dtype=args.dtype, quiet=True, compile=args.compile)
    for rows, overhead in variants:  # warm-up: compiling, first calls of each batch shape
        docs_per_second(backend, requests[:256], rows, overhead)
    runs: dict[str, list[float]] = {f"{r}/{o}": [] for r, o in variants}
    for _ in range(args.rounds):
        for rows, overhead in variants:
            runs[f"{rows}/{overhead}"].append(round(docs_per_second(backend, requests, rows, overhead), 1))
    print(f"SST-2 dev, {len(requests)} docs, {args.dtype}{', --compile' if args.compile else ''}")
    print(
        "| rows / overhead tokens | "
        + " | ".join(f"round {i + 1}" for i in range(args.rounds))
        + " | median |"
    )
    print("|---" * (args.rounds + 2) + "|")
    for name, values in runs.items():
        print(
            f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {statistics.median(values):.1f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": "python eval/batching.py " + " ".join(sys.argv[1:]),
        "docs": len(requests),
        "dtype": args.dtype,
        "compile": args.compile,
        "token_cap": hf_module.CPU_MAX_BATCH_TOKENS,
        "machine": {"platform": platform.platform(), "cpu_flags": _cpu_flags()},
        "docs_per_second": runs,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
