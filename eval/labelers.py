"""The labelers side by side: macro-F1 on the suite's dev slices (from `eval/suite.py` outputs) and docs/s
measured in one run, on one machine, with nothing cached.

    python eval/labelers.py [--config adhoc-classify] [--rows 50] [--speed-rows 32] [--threads 2]
                            [--models smollm2-135m-instruct gemma3-270m ...]

Quality: each model's labeled dev files of `--config` (run `python eval/suite.py --config C --model M
--limit N` first, N >= `--rows`), scored on the first `--rows` rows of every task. Speed: each model labels
the first `--speed-rows` SST-2 dev rows of the suite with the same ad-hoc prompt, `--no-cache`, after one
warm-up row, in this process with `--threads` torch threads (docs/s as `llmst label` reports it, which
includes the prior-fit pass). Prints a table and writes eval/results/labelers.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402
import suite_data  # noqa: E402

from llmst.backends import make_backend  # noqa: E402
from llmst.label.config import LabelConfig  # noqa: E402
from llmst.label.run import label_corpus  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = [
    "smollm2-135m-instruct",
    "gemma3-270m",
    "qwen2.5-coder-0.5b-instruct",
    "qwen2.5-coder-1.5b-instruct",
]


def quality(model: str, args: argparse.Namespace) -> dict[str, float]:
    """Macro-F1 per task on the first `--rows` dev rows, from the suite's labeled files."""
    scores = {}
    for name, task in suite_data.SUITE.items():
        path = suite.WORK / "labeled" / model / args.config / f"{name}.dev.jsonl"
        ids = [r["id"] for r in suite_data.load_split(name, "dev")[: args.rows]]
        records = {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}
        missing = [i for i in ids if i not in records]
        if missing:
            raise SystemExit(f"{path} lacks {len(missing)} of the first {args.rows} rows: run eval/suite.py --limit {args.rows}")  # fmt: skip
        gold = [records[i]["gold"] for i in ids]
        pred = [records[i]["label"] for i in ids]
        scores[name] = float(f1_score(gold, pred, labels=list(task.labels), average="macro", zero_division=0))
    return scores


def speed(model: str, args: argparse.Namespace) -> float:
    task = suite_data.SUITE["sst2"]
    options = suite.CONFIGS[args.config](task)
    rows = suite_data.load_split("sst2", "dev")[: args.speed_rows]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        config = LabelConfig(model=model, cache=False, progress=False, overwrite=True, **options)
        backend = make_backend(config.backend_spec())
        try:
            warm = Path(tmp) / "warm.jsonl"
            warm.write_text(json.dumps(rows[0]) + "\n")
            label_corpus(warm, Path(tmp) / "w.jsonl", config, backend=backend)
            summary = label_corpus(source, Path(tmp) / "out.jsonl", config, backend=backend)
        finally:
            backend.close()
    return float(summary.docs_per_second)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="adhoc-classify", choices=sorted(suite.CONFIGS))
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--speed-rows", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=MODELS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    results = []
    for model in args.models:
        scores = quality(model, args)
        docs = speed(model, args)
        print(
            f"[labelers] {model}: mean macro-F1 {np.mean(list(scores.values())):.4f}, {docs} docs/s",
            file=sys.stderr,
        )
        results.append({"model": model, "macro_f1": scores, "docs_per_second": docs})
    names = list(suite_data.SUITE)
    lines = [f"Labelers, `{args.config}`, first {args.rows} dev rows per task (macro-F1); SST-2 docs/s, no cache, "
             f"{args.threads} threads, {platform.machine()}", "",
             "| model | " + " | ".join(names) + " | mean | above majority | docs/s |",
             "|---|" + "---|" * (len(names) + 3)]  # fmt: skip
    majority = {
        n: suite_data.majority_baseline(suite_data.load_split(n, "dev")[: args.rows], suite_data.SUITE[n].labels)["macro_f1"]
        for n in names
    }  # fmt: skip
    for r in results:
        above = sum(r["macro_f1"][n] > majority[n] for n in names)
        lines.append(f"| {r['model']} | " + " | ".join(f"{r['macro_f1'][n]:.3f}" for n in names)
                     + f" | {np.mean(list(r['macro_f1'].values())):.3f} | {above} | {r['docs_per_second']} |")  # fmt: skip
    table = "\n".join(lines)
    print(table)
    (RESULTS / "labelers.json").write_text(
        json.dumps({"command": "python " + " ".join(sys.argv), "results": results, "table": table}, indent=1)
        + "\n"
    )


if __name__ == "__main__":
    main()
