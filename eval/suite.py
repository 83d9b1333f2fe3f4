"""The labeling development suite: one labeling configuration across every classification set of
eval/suite_data.py, scored against the majority-class baseline.

    python eval/suite.py --config adhoc [--split dev|test] [--tasks sst2 mr ...] [--model NAME] [--limit N]
                         [--cache-path /tmp/llmst-eval/cache.sqlite] [--out eval/results/suite_<config>_<split>.json]

Configurations (`CONFIGS`; each maps a suite task to the `LabelConfig` a user would write):
- `adhoc`: `llmst label --labels a,b,c --text-field ...` with every other option at its default (what a user
  with a new task gets today);
- `adhoc-instruction`: the same with `--instruction` set to the task's one sentence in
  `suite_data.USER_INSTRUCTIONS` (what a user would write, no gold rows);
- `adhoc-raw`: the same with `--calibrate none`; `adhoc-em`: with `--prior em` (the corpus prior estimated by
  EM); `adhoc-contextual`: with `--calibrate contextual`;
- `adhoc-question` (the ad-hoc default until session 5), `adhoc-classify`, `adhoc-statement`,
  `adhoc-question-cased`, `adhoc-classify-cased`, `adhoc-classify-contextual`: the ad-hoc task of another prompt family (`llmst.label.task.
  ADHOC_FAMILIES`), verbalizer style or calibration, written as a task YAML like `llmst tune` writes it;
- `shipped`: the shipped task YAML where the suite task has one (sst2, mr: `sentiment`; ag_news; trec),
  else the ad-hoc task.

Design decisions are made on `--split dev` (the default); `--split test` is for reporting only. Every row
goes through `llmst.label.run.label_corpus` and `llmst.evaluate.evaluate_file`; a labeled file is reused
while its signature matches (`label_signature`), answers come from the answer cache otherwise. Prints a
markdown table (accuracy and macro-F1 against the majority baseline, docs/s) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite_data  # noqa: E402

from llmst import stage  # noqa: E402
from llmst.evaluate import evaluate_file  # noqa: E402
from llmst.label.config import LabelConfig  # noqa: E402
from llmst.label.run import label_corpus, label_signature  # noqa: E402
from llmst.label.task import adhoc_task  # noqa: E402
from llmst.models import DEFAULT_LABELER  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path("/tmp/llmst-eval/suite")


def _adhoc(task: suite_data.SuiteTask, **options: Any) -> dict[str, Any]:
    return {"labels": list(task.labels), "text_fields": list(task.text_fields), **options}


def _shipped(task: suite_data.SuiteTask, **options: Any) -> dict[str, Any]:
    if task.shipped_task is None:
        return _adhoc(task, **options)
    return {"task": task.shipped_task, "text_fields": list(task.text_fields), **options}


def _family(task: suite_data.SuiteTask, family: str, style: str, **options: Any) -> dict[str, Any]:
    """The ad-hoc task of another prompt family / verbalizer style (what `llmst tune` chooses among),
    written as a task YAML."""
    adhoc = adhoc_task(list(task.labels), list(task.text_fields), family=family, verbalizers=style)
    path = WORK / "tasks" / f"{task.name}-{family}-{style}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(adhoc.to_dict(), sort_keys=False, allow_unicode=True))
    return {"task": str(path), "text_fields": list(task.text_fields), **options}


CONFIGS: dict[str, Callable[[suite_data.SuiteTask], dict[str, Any]]] = {
    "adhoc": lambda task: _adhoc(task),
    "adhoc-question": lambda task: _family(task, "question", "exact"),  # the ad-hoc default until session 5
    "adhoc-question-cased": lambda task: _family(task, "question", "cased"),
    "adhoc-classify": lambda task: _family(task, "classify", "exact"),
    "adhoc-classify-cased": lambda task: _family(task, "classify", "cased"),
    "adhoc-classify-contextual": lambda task: _family(task, "classify", "exact", calibrate="contextual"),
    "adhoc-statement": lambda task: _family(task, "statement", "exact"),
    "adhoc-instruction": lambda task: _adhoc(task, instruction=suite_data.USER_INSTRUCTIONS[task.name]),
    "adhoc-raw": lambda task: _adhoc(task, calibrate="none"),
    "adhoc-em": lambda task: _adhoc(task, prior="em"),
    "adhoc-contextual": lambda task: _adhoc(task, calibrate="contextual"),
    "shipped": lambda task: _shipped(task),
}


def label_config(name: str, task: suite_data.SuiteTask, args: argparse.Namespace) -> LabelConfig:
    options = CONFIGS[name](task)
    return LabelConfig(
        model=args.model,
        cache_path=args.cache_path,
        limit=args.limit,
        progress=False,
        overwrite=True,
        **options,
    )


def run_task(task: suite_data.SuiteTask, args: argparse.Namespace) -> dict[str, Any]:
    """Label one task's slice with the configuration (or reuse a current output) and score it."""
    source = suite_data.write_split(task.name, args.split, WORK / "data")
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    if args.limit is not None:
        rows = rows[: args.limit]
    config = label_config(args.config, task, args)
    out = WORK / "labeled" / args.model / args.config / f"{task.name}.{args.split}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary = None
    if not stage.is_current(out, label_signature(source, config)):
        summary = label_corpus(source, out, config)
    seconds = time.perf_counter() - started
    report = evaluate_file(out, gold_field="gold")
    baseline = suite_data.majority_baseline(rows, task.labels)
    return {
        "task": task.name,
        "rows": report["n"],
        "rejected": summary.rejected if summary else None,
        "accuracy": round(report["accuracy"], 4),
        "macro_f1": round(report["macro_f1"], 4),
        "majority": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in baseline.items()},
        "beats_majority_f1": report["macro_f1"] > baseline["macro_f1"],
        "predicted": {name: info["predicted"] for name, info in report["per_class"].items()},
        "gold": suite_data.label_distribution(rows),
        "docs_per_second": summary.docs_per_second if summary else None,
        "reused": summary is None,
        "seconds": round(seconds, 1),
        "options": CONFIGS[args.config](task),
    }


def markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"Suite, `{args.config}`, {args.split} slices, model {args.model}",
        "",
        "| task | rows | majority acc | majority F1 | acc | macro-F1 | F1 minus majority | docs/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r["majority"]
        speed = "cached" if r["reused"] else f"{r['docs_per_second']}"
        lines.append(
            f"| {r['task']} | {r['rows']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {r['accuracy']:.4f} | "
            f"{r['macro_f1']:.4f} | {r['macro_f1'] - m['macro_f1']:+.4f} | {speed} |"
        )
    accuracy = sum(r["accuracy"] for r in results) / len(results)
    macro_f1 = sum(r["macro_f1"] for r in results) / len(results)
    beats = sum(r["beats_majority_f1"] for r in results)
    lines += [
        "",
        f"mean accuracy {accuracy:.4f}, mean macro-F1 {macro_f1:.4f}; macro-F1 above the majority baseline "
        f"on {beats} of {len(results)} tasks",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", choices=sorted(CONFIGS), default="adhoc")
    parser.add_argument("--split", choices=["dev", "test"], default="dev")
    parser.add_argument("--tasks", nargs="+", choices=list(suite_data.SUITE), default=list(suite_data.SUITE))
    parser.add_argument("--model", default=DEFAULT_LABELER)
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows of each slice (smoke)")
    parser.add_argument("--cache-path", default="/tmp/llmst-eval/cache.sqlite")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    results = []
    for name in args.tasks:
        result = run_task(suite_data.SUITE[name], args)
        print(f"[suite] {name}: acc {result['accuracy']:.4f} F1 {result['macro_f1']:.4f} "
              f"(majority F1 {result['majority']['macro_f1']:.4f}, {result['seconds']} s)", file=sys.stderr)  # fmt: skip
        results.append(result)
    table = markdown(results, args)
    print(table)
    out = args.out or RESULTS / f"suite_{args.config}_{args.split}.json"
    out.write_text(
        json.dumps(
            {
                "command": "python " + " ".join(sys.argv),
                "config": args.config,
                "split": args.split,
                "model": args.model,
                "machine": f"{platform.machine()} {platform.processor()}",
                "seconds": round(time.perf_counter() - started, 1),
                "results": results,
                "table": table,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
