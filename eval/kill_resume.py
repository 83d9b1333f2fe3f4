"""kill -9 in the middle of a 2,000-document `llmst label` run, then rerun the same command.

    python eval/kill_resume.py [--docs 2000] [--kill-at 1000] [--out eval/results/kill_resume.json]

Corpus: the first 2,000 SST-2 train sentences (ids train-0..), default model, hf backend, a fresh answer
cache. The default `--calibrate prior` first scores `--prior-fit-rows` rows (here 500, so that the main pass
still computes rows, streaming, when the kill lands) and keeps them in memory for the main pass. Checks: exactly 2,000 output rows, no duplicate ids, input order kept, and the completed output's
signature marker (`OUT.signature.json`) written by the rerun only; reports how many rows the rerun found
already written, took from the cache, and computed.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import load, write_jsonl  # noqa: E402

from llmst.stage import read_marker  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--kill-at", type=int, default=1000, help="kill once this many rows are confirmed")
    parser.add_argument("--prior-fit-rows", type=int, default=500, help="rows the prior fit scores first")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "kill_resume.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="llmst-kill-"))
    rows = load("sst2-train")[: args.docs]
    source = write_jsonl(rows, work / "corpus.jsonl")
    out = work / "labeled.jsonl"
    command = [
        sys.executable, "-m", "llmst.cli", "label", str(source), "-o", str(out), "--task", "sentiment",
        "--cache-path", str(work / "cache.sqlite"), "--prior-fit-rows", str(args.prior_fit_rows), "-q",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoint = out.with_name(out.name + ".progress.json")
    while process.poll() is None:
        if checkpoint.exists() and json.loads(checkpoint.read_text())["rows_consumed"] >= args.kill_at:
            break
        time.sleep(0.02)
    if process.poll() is not None:
        raise SystemExit(f"the run ended before the kill: {process.stderr.read().decode()[-2000:]}")
    time.sleep(0.5)  # land inside the next chunk, with scores cached but not yet confirmed
    process.send_signal(signal.SIGKILL)
    process.wait()
    lines_after_kill = len(out.read_bytes().splitlines())
    marker_after_kill = read_marker(out)  # None: an interrupted output is never marked complete

    rerun = subprocess.run(command, capture_output=True, text=True, check=True)
    summary = json.loads(rerun.stdout)
    labeled = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["id"] for r in labeled]
    duplicates = sum(c - 1 for c in Counter(ids).values() if c > 1)
    result = {
        "command": " ".join(command[2:]),
        "docs": args.docs,
        "lines_in_output_after_kill": lines_after_kill,
        "rows_after_rerun": len(labeled),
        "duplicate_ids": duplicates,
        "order_kept": ids == [r["id"] for r in rows],
        "rerun_resumed_rows": summary["resumed_rows"],
        "rerun_from_cache": summary["from_cache"],
        "rerun_computed": summary["computed"],
        "marker_after_kill": marker_after_kill,
        "marker_after_rerun_matches": read_marker(out) == summary["signature"],
    }
    ok = (
        len(labeled) == args.docs
        and duplicates == 0
        and result["order_kept"]
        and marker_after_kill is None
        and result["marker_after_rerun_matches"]
    )
    result["pass"] = ok
    for key, value in result.items():
        print(f"{key:28s} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
