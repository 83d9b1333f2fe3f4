"""Dawid-Skene vs majority vote (and weighted vote, mean of probs) vs each single labeler, on test sets.

    python eval/aggregation.py [--datasets sst2 ag_news] [--gemma-limit 0 1000]

Labelers (all prior-calibrated, settings fixed before looking at test, see eval/label_accuracy.py):
  - SmolLM2-135M zero-shot, shipped template          (written by eval/label_accuracy.py)
  - SmolLM2-135M few-shot, shipped template           (written by eval/label_accuracy.py)
  - SmolLM2-135M few-shot, second template (SST-2: "Review: ...\\nSentiment:", from the ensemble run;
    AG News: none)
  - Gemma-3-270M zero-shot, shipped template          (labeled here; ~5 docs/s on 2 cores)
Run eval/label_accuracy.py first. Fuses with `llmst.aggregate.stage.run_aggregate` (the `llmst aggregate`
code path), scores with `llmst.evaluate.evaluate_file`. "Best single" is picked with the test gold labels
(an oracle a user does not have), so it is an upper bound for choosing one labeler.
Prints a markdown table and writes eval/results/aggregation.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data as evaldata  # noqa: E402

from llmst.aggregate.config import AggregateConfig  # noqa: E402
from llmst.aggregate.stage import run_aggregate  # noqa: E402
from llmst.evaluate import evaluate_file  # noqa: E402
from llmst.label.config import LabelConfig  # noqa: E402
from llmst.label.run import label_corpus  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FINAL = Path("/tmp/llmst-eval/final")
DATASETS = {
    "sst2": {"task": "sentiment", "test": "sst2-test", "extra": ["sst2-ens-sentiment-o0.jsonl"]},
    "ag_news": {"task": "ag_news", "test": "ag_news-test", "extra": []},
}
METHODS = ("vote", "weighted", "mean", "dawid-skene")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument(
        "--gemma-limit",
        type=int,
        nargs="+",
        default=[0, 1000],
        help="per dataset (in --datasets order): Gemma labels only the first N rows (0 = all); every labeler is "
        "then compared on those rows. Default: all of SST-2, the first 1,000 AG News rows (Gemma runs at ~2-5 "
        "docs/s on 2 cores)",
    )
    parser.add_argument("--no-gemma", action="store_true")
    parser.add_argument("--cache-path", default="/tmp/llmst-eval/cache.sqlite")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/llmst-eval/aggregation"))
    parser.add_argument("--out", type=Path, default=RESULTS / "aggregation.json")
    args = parser.parse_args()
    started = time.perf_counter()
    results: dict[str, Any] = {}
    lines = ["| dataset | rows | labeler / method | accuracy | macro-F1 |", "|---|---|---|---|---|"]
    for position, dataset in enumerate(args.datasets):
        spec = DATASETS[dataset]
        limit = args.gemma_limit[position] if position < len(args.gemma_limit) else 0
        sources = {
            "smollm2-zero": FINAL / "labeled" / f"{dataset}-zero-prior.jsonl",
            "smollm2-few": FINAL / "labeled" / f"{dataset}-few-prior.jsonl",
        }
        for extra in spec["extra"]:
            sources["smollm2-few-template2"] = FINAL / "labeled" / extra
        missing = [str(p) for p in sources.values() if not p.exists()]
        if missing:
            raise SystemExit(f"missing {missing}: run eval/label_accuracy.py first")
        n_rows = sum(1 for _ in open(sources["smollm2-zero"]))
        if not args.no_gemma:
            gemma = args.work_dir / f"{dataset}-gemma-zero-prior.jsonl"
            source = evaldata.ensure(spec["test"])
            config = LabelConfig(
                task=spec["task"],
                model="gemma3-270m",
                calibrate="prior",
                cache_path=args.cache_path,
                limit=limit or None,
                progress=True,
            )
            print(f"[aggregation] labeling {dataset} with gemma3-270m", file=sys.stderr, flush=True)
            summary = label_corpus(source, gemma, config)
            sources["gemma3-zero"] = gemma
            results.setdefault("gemma_speed", {})[dataset] = summary.docs_per_second
        n = min(sum(1 for _ in open(p)) for p in sources.values())
        if n < n_rows:  # a limited Gemma run: compare every source on the same first n rows
            trimmed = {}
            for name, path in sources.items():
                out = args.work_dir / f"{dataset}-{name}-first{n}.jsonl"
                out.write_text("".join(open(path).readlines()[:n]))
                trimmed[name] = out
            sources = trimmed
        entry: dict[str, Any] = {
            "rows": n,
            "sources": {k: str(v) for k, v in sources.items()},
            "single": {},
            "fused": {},
        }
        for name, path in sources.items():
            metrics = evaluate_file(path)
            entry["single"][name] = {
                "accuracy": round(metrics["accuracy"], 4),
                "macro_f1": round(metrics["macro_f1"], 4),
            }
        for method in METHODS:
            out = args.work_dir / f"{dataset}-{method}.jsonl"
            out.unlink(missing_ok=True)
            report = run_aggregate(
                [str(p) for p in sources.values()],
                out,
                AggregateConfig(method=method, names=list(sources), plots=False),
            )
            metrics = evaluate_file(out)
            entry["fused"][method] = {
                "accuracy": round(metrics["accuracy"], 4),
                "macro_f1": round(metrics["macro_f1"], 4),
                "estimated_source_accuracy": {
                    k: round(v["estimated_accuracy"], 4) for k, v in report["sources"].items()
                },
                "command": shlex.join(
                    [
                        "llmst",
                        "aggregate",
                        *map(str, sources.values()),
                        "-o",
                        str(out),
                        "--method",
                        method,
                        "--names",
                        ",".join(sources),
                    ]
                ),
            }
        best = max(entry["single"], key=lambda k: entry["single"][k]["accuracy"])
        entry["best_single"] = best
        results[dataset] = entry
        for name, m in entry["single"].items():
            mark = " (best single, chosen with test gold)" if name == best else ""
            lines.append(f"| {dataset} | {n} | {name}{mark} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} |")
        for method, m in entry["fused"].items():
            lines.append(
                f"| {dataset} | {n} | **{method}** over {len(sources)} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} |"
            )
        ds = entry["fused"]["dawid-skene"]["estimated_source_accuracy"]
        true = {k: v["accuracy"] for k, v in entry["single"].items()}
        lines.append(
            f"| {dataset} | | Dawid-Skene's estimated accuracy per source (true in brackets): "
            + ", ".join(f"{k} {ds[k]:.3f} ({true[k]:.3f})" for k in ds)
            + " | | |"
        )
    table = "\n".join(lines)
    print(table)
    results["table_markdown"] = table
    results["command"] = shlex.join(["python", "eval/aggregation.py", *sys.argv[1:]])
    results["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
