"""Peak memory of `llmst label` as the corpus grows: does the pipeline stream, or hold the corpus?

    python eval/label_memory.py [--rows 10000 100000] [--model tiny|NAME] [--out eval/results/label_memory.json]

Each size is one `llmst label` subprocess (zero-shot, shipped `sentiment` task, default `--calibrate prior`,
no answer cache) on SST-2 train sentences repeated to the row count, each row with its own id. Its peak
resident set size comes from `getrusage(RUSAGE_CHILDREN)` in a fresh wrapper process per size, so one size's
peak never leaks into another's. Issue 12's goal: peak RSS at 100k rows within 10% of 10k rows.

`--model tiny` (the default) is a 2-layer random-init Llama with SmolLM2's tokenizer, built in a temporary
folder: the labels are meaningless, but every row goes through the real reader, prompt rendering, tokenizer,
hf backend, calibration and writer, and the model's own memory (a constant) is small, so growth in the
pipeline is not hidden under the weights. The default labeler (`--model smollm2-135m-instruct`) labels ~25
docs/s here, so 100k rows would take over an hour. Prints a markdown table and writes JSON.
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

# Runs the command given as its arguments, then prints the peak RSS (KiB on Linux) of its children.
MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def tiny_model(folder: Path) -> str:
    """A 2-layer random-init Llama with the default labeler's tokenizer (the one tests/conftest.py uses)."""
    from llmst.models import resolve_model
    from llmst.testing import save_tiny_llama

    return save_tiny_llama(folder, resolve_model("smollm2-135m-instruct").path, max_positions=512)


def write_corpus(path: Path, rows: int) -> None:
    texts = [r["text"] for r in read_jsonl(ensure("sst2-train"))]
    with path.open("w") as handle:
        for index in range(rows):
            handle.write(json.dumps({"id": f"r{index}", "text": texts[index % len(texts)]}) + "\n")


def measure(corpus: Path, out: Path, model: str) -> dict:
    command = [sys.executable, "-m", "llmst", "label", str(corpus), "-o", str(out), "--task", "sentiment",
               "--model", model, "--no-cache", "--quiet", "--overwrite"]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    code, peak_kib = (int(x) for x in result.stdout.split())
    if code:
        raise SystemExit(f"llmst label failed ({code}): {' '.join(command)}\n{result.stderr[-2000:]}")
    lines = sum(1 for _ in out.open())
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(peak_kib / 1024, 1), "labeled": lines}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--model", default="tiny", help="tiny (random-init, 2 layers) or a model name/path")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "label_memory.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="llmst-memory-"))
    model = tiny_model(work / "tiny") if args.model == "tiny" else args.model
    results = []
    for rows in args.rows:
        corpus = work / f"corpus-{rows}.jsonl"
        write_corpus(corpus, rows)
        result = {"rows": rows, "corpus_mib": round(corpus.stat().st_size / 2**20, 1)}
        result |= measure(corpus, work / f"labeled-{rows}.jsonl", model)
        if result["labeled"] != rows:
            raise SystemExit(f"{rows} rows in, {result['labeled']} labeled: rows were lost")
        results.append(result)
    base = results[0]["peak_rss_mib"]
    print(f"`llmst label`, model {args.model}, {os.cpu_count()} CPUs")
    print("| rows | corpus MiB | seconds | peak RSS MiB | vs first |")
    print("|---|---|---|---|---|")
    for r in results:
        r["vs_first"] = round(r["peak_rss_mib"] / base, 3)
        print(
            f"| {r['rows']} | {r['corpus_mib']} | {r['seconds']} | {r['peak_rss_mib']} | {r['vs_first']:.3f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": args.model, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
               "results": results}  # fmt: skip
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
