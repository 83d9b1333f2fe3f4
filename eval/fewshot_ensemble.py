"""Dev-only study: does averaging several few-shot prompts built from ONE 16-row file beat a single prompt?

    python eval/fewshot_ensemble.py [--file-seeds 0 1 2] [--orders 0 1] [--limit N]

SST-2 dev (872), default labeler, `--calibrate prior` for every member. For each 16-row few-shot file
(seeded, label-stratified sample of SST-2 train; the same files eval/search_prompts.py uses), each
template in TEMPLATES and each demonstration order (`llmst label --seed`, which shuffles the same 16 rows),
the file is labeled with `llmst.label.run.label_corpus`; members are fused with `llmst aggregate --method
mean` (`llmst.aggregate.stage.run_aggregate`) and scored with `llmst.evaluate.evaluate_file`. Ensembles are only
ever built from prompts of one file, so every setting uses at most 16 labeled rows. The zero-shot member
(shipped template, prior calibration) uses no labeled rows at all.

Prints a markdown table (mean / min / max accuracy over the file seeds) and writes
eval/results/fewshot_ensemble.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data as evaldata  # noqa: E402

from llmst.aggregate.config import AggregateConfig  # noqa: E402
from llmst.aggregate.stage import run_aggregate  # noqa: E402
from llmst.backends import BackendSpec, make_backend  # noqa: E402
from llmst.evaluate import evaluate_file  # noqa: E402
from llmst.label.config import LabelConfig  # noqa: E402
from llmst.label.run import label_corpus  # noqa: E402
from llmst.label.task import load_task  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_CACHE = "/tmp/llmst-eval/cache.sqlite"
SHOTS = 16
# The two best few-shot templates of the dev search (eval/results/search_sst2.json).
TEMPLATES = {
    "opinion": None,  # the shipped prompts/sentiment.yaml
    "sentiment": "Review: {{ text }}\nSentiment:",
}


def task_file(name: str, work: Path) -> str:
    """The shipped sentiment task, or a copy of it with another prompt template."""
    if TEMPLATES[name] is None:
        return "sentiment"
    shipped = load_task("sentiment")
    spec = {
        "task": f"sentiment-{name}",
        "text_field": "text",
        "labels": shipped.labels,
        "prompt": TEMPLATES[name],
        "content_free": ["N/A", "", "[MASK]"],
    }
    path = work / f"sentiment-{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def accuracy(path: Path) -> float:
    return round(evaluate_file(path, gold_field="gold")["accuracy"], 4)


def fuse(members: list[Path], out: Path) -> float:
    run_aggregate([str(m) for m in members], out, AggregateConfig(method="mean", plots=False))
    return accuracy(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--file-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--orders", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--cache-path", default=DEFAULT_CACHE)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/llmst-eval/ensemble"))
    parser.add_argument("--output", type=Path, default=RESULTS / "fewshot_ensemble.json")
    args = parser.parse_args()
    started = time.perf_counter()
    work = args.work_dir
    (work / "labeled").mkdir(parents=True, exist_ok=True)
    rows = evaldata.load("sst2-dev")[: args.limit]
    source = evaldata.write_jsonl(rows, work / f"sst2-dev-{len(rows)}.jsonl")
    backend = make_backend(BackendSpec())  # the default labeler, as `llmst label` builds it

    def label(out: Path, task: str, **options: Any) -> Path:
        config = LabelConfig(
            task=task,
            calibrate="prior",
            cache_path=args.cache_path,
            overwrite=True,
            progress=False,
            **options,
        )
        label_corpus(source, out, config, backend=backend)
        return out

    zero = label(work / "labeled" / "zero.jsonl", "sentiment")
    settings: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        settings.setdefault(name, []).append(value)
        print(f"  {name:42s} {value:.4f}", file=sys.stderr, flush=True)

    try:
        for file_seed in args.file_seeds:
            few = evaldata.few_shot_file("sst2", SHOTS, file_seed, work / "data")
            print(f"file seed {file_seed}", file=sys.stderr, flush=True)
            members: dict[tuple[str, int], Path] = {}
            for template, order in product(TEMPLATES, args.orders):
                out = work / "labeled" / f"f{file_seed}-{template}-o{order}.jsonl"
                members[(template, order)] = label(
                    out, task_file(template, work), few_shot=str(few), shots=SHOTS, seed=order
                )
            first = args.orders[0]
            for template in TEMPLATES:
                record(f"single: {template}, order {first}", accuracy(members[(template, first)]))
                record(
                    f"orders: {template} x{len(args.orders)}",
                    fuse(
                        [members[(template, o)] for o in args.orders], work / f"f{file_seed}-{template}.jsonl"
                    ),
                )
            record(
                f"templates x{len(TEMPLATES)} (order {first})",
                fuse([members[(t, first)] for t in TEMPLATES], work / f"f{file_seed}-templates.jsonl"),
            )
            record(
                f"all {len(members)} few-shot prompts",
                fuse(list(members.values()), work / f"f{file_seed}-all.jsonl"),
            )
            record(
                f"all {len(members)} + zero-shot",
                fuse([*members.values(), zero], work / f"f{file_seed}-all-zero.jsonl"),
            )
    finally:
        backend.close()

    table = ["| setting (SST-2 dev, prior-calibrated members) | mean acc | min | max |", "|---|---|---|---|"]
    table.append(f"| zero-shot (shipped template) | {accuracy(zero):.4f} | | |")
    summary = []
    for name, values in settings.items():
        summary.append({"setting": name, "mean": round(float(np.mean(values)), 4), "per_file_seed": values})
        table.append(f"| {name} | {np.mean(values):.4f} | {min(values):.4f} | {max(values):.4f} |")
    print("\n".join(table))
    report = {
        "command": shlex.join(["python", "eval/fewshot_ensemble.py", *sys.argv[1:]]),
        "dev_rows": len(rows),
        "shots": SHOTS,
        "templates": {k: v or load_task("sentiment").prompt for k, v in TEMPLATES.items()},
        "file_seeds": args.file_seeds,
        "orders": args.orders,
        "zero_shot_accuracy": accuracy(zero),
        "settings": summary,
        "table_markdown": "\n".join(table),
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
