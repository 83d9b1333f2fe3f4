"""Labeling accuracy of the default model on the TEST sets, with the settings chosen on dev data.

    python eval/label_accuracy.py [--datasets sst2 ag_news trec] [--cache-path /tmp/llmst-eval/cache.sqlite] [--limit N]

Test sets: SST-2 test (1,821), AG News test rows 1-2,000, TREC test (500). For each: zero-shot and
few-shot, each raw (`--calibrate none`) and calibrated (`contextual` and `prior`; the one chosen on dev is
marked). Templates and verbalizers are the shipped task YAMLs (prompts/*.yaml), chosen by
eval/search_prompts.py on dev rows only; the few-shot settings below come from the same search (see
eval/results/search_<dataset>.json). Few-shot files hold 16 seeded, label-stratified rows of the
training pool (SST-2 train; AG News rows 2,601+; TREC train minus its dev slice), written by eval/data.py.

Every run goes through `llmst.label.run.label_corpus` and `llmst.evaluate.evaluate_file`, and the exact
equivalent `llmst label` / `llmst evaluate` command lines are stored in eval/results/label_accuracy.json.
Scores are cached in --cache-path, so the raw and calibrated runs of a setting score each prompt once.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data as evaldata  # noqa: E402

from llmst.backends import BackendSpec, make_backend  # noqa: E402
from llmst.evaluate import evaluate_file  # noqa: E402
from llmst.label.config import LabelConfig  # noqa: E402
from llmst.label.run import label_corpus  # noqa: E402
from llmst.label.task import load_task  # noqa: E402
from llmst.models import DEFAULT_LABELER  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_CACHE = "/tmp/llmst-eval/cache.sqlite"
FEW_SHOT_FILE_ROWS = 16

# Final settings, all chosen on dev data (eval/results/search_<dataset>.json): the few-shot K, selection and
# file seed, and which calibration is "the calibrated setting" for zero-shot and few-shot.
FINAL: dict[str, dict[str, Any]] = {
    "sst2": {
        "task": "sentiment",
        "test": "sst2-test",
        "few_shot": {"shots": 16, "select": "random", "seed": 0},
        "calibration": {"zero": "prior", "few": "prior"},
        # chosen on dev by eval/fewshot_ensemble.py: mean of prior-calibrated members, all from one 16-row file
        "ensemble": {"templates": ["opinion", "sentiment"], "orders": [0, 1], "with_zero_shot": True},
    },
    "ag_news": {
        "task": "ag_news",
        "test": "ag_news-test",
        "few_shot": {"shots": 8, "select": "random", "seed": 0},
        "calibration": {"zero": "prior", "few": "prior"},
    },
    "trec": {
        "task": "trec",
        "test": "trec-test",
        "few_shot": {"shots": 12, "select": "random", "seed": 0},
        "calibration": {"zero": "prior", "few": "prior"},
        "prior_from_train": True,  # --calibrate prior targets TREC train's label frequencies, not uniform
    },
}
CALIBRATIONS = ("none", "contextual", "prior")


def train_prior(dataset: str, names: list[str]) -> list[float] | None:
    """Target prior for --calibrate prior: TREC test is far from uniform, so use TREC train's frequencies."""
    if not FINAL[dataset].get("prior_from_train"):
        return None
    counts = {name: 0 for name in names}
    for row in evaldata.load("trec-train"):
        counts[row["gold"]] += 1
    total = sum(counts.values())
    return [round(counts[name] / total, 6) for name in names]


def cli_command(source: Path, output: Path, config: LabelConfig) -> str:
    parts = ["llmst", "label", str(source), "-o", str(output), "--task", str(config.task)]
    if config.model != DEFAULT_LABELER:
        parts += ["--model", config.model]
    if config.few_shot:
        parts += ["--few-shot", config.few_shot, "--shots", str(config.shots), "--select", config.select]
        parts += ["--seed", str(config.seed)]
    parts += ["--calibrate", config.calibrate]
    if config.prior:
        parts += ["--prior", ",".join(str(p) for p in config.prior)]
    if config.cache_path:
        parts += ["--cache-path", config.cache_path]
    parts += ["--overwrite", "--quiet"]
    return shlex.join(parts)


def run_ensemble(dataset, final, source, few_file, out_dir, cache_path, backend) -> dict[str, Any]:
    """The dev-chosen prompt ensemble: every member prior-calibrated, fused by `llmst aggregate --method mean`."""
    from fewshot_ensemble import task_file

    from llmst.aggregate.config import AggregateConfig
    from llmst.aggregate.stage import run_aggregate

    spec = final["ensemble"]
    members, commands = [], []
    started = time.perf_counter()
    for template in spec["templates"]:
        for order in spec["orders"]:
            config = LabelConfig(
                task=task_file(template, out_dir),
                calibrate="prior",
                few_shot=str(few_file),
                shots=final["few_shot"]["shots"],
                select=final["few_shot"]["select"],
                seed=order,
                cache_path=cache_path,
                overwrite=True,
                progress=False,
            )
            output = out_dir / "labeled" / f"{dataset}-ens-{template}-o{order}.jsonl"
            label_corpus(source, output, config, backend=backend)
            members.append(output)
            commands.append(cli_command(source, output, config))
    if spec["with_zero_shot"]:
        members.append(out_dir / "labeled" / f"{dataset}-zero-prior.jsonl")
    fused = out_dir / "labeled" / f"{dataset}-ensemble.jsonl"
    run_aggregate([str(m) for m in members], fused, AggregateConfig(method="mean", plots=False))
    commands.append(
        shlex.join(["llmst", "aggregate", *map(str, members), "-o", str(fused), "--method", "mean"])
    )
    metrics = evaluate_file(fused)
    entry = {
        "dataset": dataset,
        "split": final["test"],
        "rows": metrics["n"],
        "setting": "ensemble",
        "calibration": "prior",
        "chosen_on_dev": True,
        "accuracy": round(metrics["accuracy"], 4),
        "macro_f1": round(metrics["macro_f1"], 4),
        "ece": round(metrics["ece"], 4),
        "members": [str(m) for m in members],
        "ensemble": spec,
        "seconds": round(time.perf_counter() - started, 1),
        "commands": commands,
    }
    print(
        f"{dataset:8s} ensemble prior acc {entry['accuracy']:.4f} F1 {entry['macro_f1']:.4f}", file=sys.stderr
    )
    return entry


def run(args: argparse.Namespace) -> dict[str, Any]:
    random.seed(args.seed)
    np.random.seed(args.seed)
    import torch

    torch.manual_seed(args.seed)
    out_dir = args.work_dir
    backend = make_backend(BackendSpec())  # the default labeler, as `llmst label` builds it
    report: dict[str, Any] = {
        "model": backend.model_id,
        "backend": backend.name,
        "dtype": getattr(backend, "dtype", None),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "cache_path": args.cache_path,
        "results": [],
    }
    try:
        for dataset, final in FINAL.items():
            if dataset not in args.datasets:
                continue
            rows = evaldata.load(final["test"])[: args.limit]
            source = evaldata.write_jsonl(rows, out_dir / "data" / f"{final['test']}-{len(rows)}.jsonl")
            task = load_task(final["task"])
            few_file = evaldata.few_shot_file(
                dataset, FEW_SHOT_FILE_ROWS, final["few_shot"]["seed"], out_dir / "data"
            )
            for shot in ("zero", "few"):
                for calibration in CALIBRATIONS:
                    config = LabelConfig(
                        task=final["task"],
                        calibrate=calibration,
                        prior=train_prior(dataset, task.label_names) if calibration == "prior" else None,
                        cache_path=args.cache_path,
                        overwrite=True,
                        progress=False,
                        seed=final["few_shot"]["seed"] if shot == "few" else 0,
                    )
                    if shot == "few":
                        config.few_shot = str(few_file)
                        config.shots = final["few_shot"]["shots"]
                        config.select = final["few_shot"]["select"]
                    output = out_dir / "labeled" / f"{dataset}-{shot}-{calibration}.jsonl"
                    output.parent.mkdir(parents=True, exist_ok=True)
                    started = time.perf_counter()
                    summary = label_corpus(source, output, config, backend=backend)
                    metrics = evaluate_file(output)
                    entry = {
                        "dataset": dataset,
                        "split": final["test"],
                        "rows": metrics["n"],
                        "setting": shot,
                        "calibration": calibration,
                        "chosen_on_dev": calibration == "none" or calibration == final["calibration"][shot],
                        "accuracy": round(metrics["accuracy"], 4),
                        "macro_f1": round(metrics["macro_f1"], 4),
                        "ece": round(metrics["ece"], 4),
                        "predicted": {k: v["predicted"] for k, v in metrics["per_class"].items()},
                        "calibration_bias": summary.calibration_bias,
                        "prompt_hash": summary.prompt_hash,
                        "seconds": round(time.perf_counter() - started, 1),
                        "computed": summary.computed,
                        "from_cache": summary.from_cache,
                        "reused_from_prior_fit": summary.reused_from_prior_fit,
                        "command": cli_command(source, output, config),
                        "evaluate_command": shlex.join(["llmst", "evaluate", str(output)]),
                        "config": {
                            "task": final["task"],
                            "task_prompt": task.prompt,
                            "task_labels": task.labels,
                            "few_shot": config.few_shot,
                            "shots": config.shots if config.few_shot else 0,
                            "select": config.select if config.few_shot else None,
                            "seed": config.seed,
                            "calibrate": calibration,
                            "prior": config.prior,
                        },
                    }
                    report["results"].append(entry)
                    print(
                        f"{dataset:8s} {shot:4s} {calibration:10s} acc {entry['accuracy']:.4f} "
                        f"F1 {entry['macro_f1']:.4f}  ({entry['seconds']:.0f}s, {summary.computed} computed)",
                        file=sys.stderr,
                        flush=True,
                    )
            if "ensemble" in final:
                report["results"].append(
                    run_ensemble(dataset, final, source, few_file, out_dir, args.cache_path, backend)
                )
            report.setdefault("few_shot_files", {})[dataset] = {
                "path": str(few_file),
                "rows": [json.loads(line) for line in few_file.read_text().splitlines()],
            }
    finally:
        backend.close()
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| dataset | setting | raw acc | raw F1 | contextual acc | contextual F1 | prior acc | prior F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r["dataset"], r["setting"], r["calibration"]): r for r in report["results"]}
    for dataset, final in FINAL.items():
        for shot in ("zero", "few"):
            if (dataset, shot, "none") not in by_key:
                continue
            label = (
                "zero-shot"
                if shot == "zero"
                else (
                    f"{final['few_shot']['shots']}-shot {final['few_shot']['select']} (seed {final['few_shot']['seed']})"
                )
            )
            cells = []
            for calibration in CALIBRATIONS:
                r = by_key[(dataset, shot, calibration)]
                mark = "*" if calibration != "none" and calibration == final["calibration"][shot] else ""
                cells += [f"{r['accuracy']:.4f}{mark}", f"{r['macro_f1']:.4f}{mark}"]
            rows = by_key[(dataset, shot, "none")]["rows"]
            lines.append(f"| {dataset} ({rows}) | {label} | " + " | ".join(cells) + " |")
    for r in report["results"]:
        if r["setting"] == "ensemble":
            spec = r["ensemble"]
            label = (
                f"ensemble: {len(spec['templates']) * len(spec['orders'])} 16-shot prompts (templates "
                f"{'+'.join(spec['templates'])}, orders {spec['orders']}, one 16-row file)"
                + (" + zero-shot" if spec["with_zero_shot"] else "")
            )
            lines.append(
                f"| {r['dataset']} ({r['rows']}) | {label} | | | | | {r['accuracy']:.4f}* | {r['macro_f1']:.4f}* |"
            )
    lines.append("")
    lines.append("`*` = the calibration chosen on dev for that setting. F1 = macro-F1.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache-path", default=DEFAULT_CACHE)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/llmst-eval/final"))
    parser.add_argument("--limit", type=int, default=None, help="Only the first N test rows (smoke runs).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", nargs="+", choices=list(FINAL), default=list(FINAL))
    parser.add_argument("--output", type=Path, default=RESULTS / "label_accuracy.json")
    args = parser.parse_args()
    started = time.perf_counter()
    report = run(args)
    if set(args.datasets) != set(FINAL) and args.output.exists():
        # a partial rerun replaces only its datasets' rows; the others keep their earlier run (and say so)
        earlier = json.loads(args.output.read_text())
        kept = [
            {**r, "from_earlier_run": r.get("from_earlier_run", earlier.get("command"))}
            for r in earlier.get("results", [])
            if r["dataset"] not in args.datasets
        ]
        report["results"] = kept + report["results"]
    report["final_settings"] = FINAL
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["command"] = shlex.join(["python", "eval/label_accuracy.py", *sys.argv[1:]])
    table = markdown(report)
    report["table_markdown"] = table
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print(table)
    print(f"\nwrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
