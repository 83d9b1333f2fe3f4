"""`llmst tune` on the suite: tune on 100 gold rows of each task, label rows it did not see, and compare with
the ad-hoc default and with the best candidate found in hindsight on those same rows.

    python eval/suite_tune.py [--report dev-rest|test] [--gold-rows 100] [--shots 0,4] [--model NAME]
                              [--instruction | --from-task]

`--report dev-rest` (the default, for design decisions) tunes on the first `--gold-rows` dev rows and scores
the rest of the dev slice; `--report test` tunes on the same rows and scores the test slice (reporting only).
For each task: the ad-hoc default (`--labels` alone), the tuned choice, and (unless `--no-oracle`) the oracle:
every tune candidate relabels the scored rows and the best one there is kept ("the best single prompt a
search finds"). `--instruction` gives tune and the ad-hoc default each task's one-sentence
`suite_data.USER_INSTRUCTIONS` (what a user would write); the table's "labels only" column stays the
`--labels`-only default. `--from-task` starts tune from the task's shipped prompt (`llmst tune --task
sentiment|ag_news|trec`, the prompts eval/search_prompts.py chose on SST-2, AG News and TREC dev), which then
competes with the ad-hoc candidates; tasks without one are skipped (needs `--no-oracle`). Answers come
from the answer cache. Prints a table and writes eval/results/suite_tune_<report>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite_data  # noqa: E402

from llmst.backends import make_backend  # noqa: E402
from llmst.evaluate import evaluate_file  # noqa: E402
from llmst.label.config import LabelConfig  # noqa: E402
from llmst.label.run import label_corpus  # noqa: E402
from llmst.models import DEFAULT_LABELER  # noqa: E402
from llmst.tune.config import TuneConfig  # noqa: E402
from llmst.tune.run import calibration_options, run_tune  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path("/tmp/llmst-eval/suite-tune")


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _score(source: Path, out: Path, options: dict, args: argparse.Namespace) -> float:
    config = LabelConfig(
        model=args.model, cache_path=args.cache_path, progress=False, overwrite=True, **options
    )
    if args.backend is None:  # one model load for the whole run
        args.backend = make_backend(config.backend_spec())
    label_corpus(source, out, config, backend=args.backend)
    return round(evaluate_file(out, gold_field="gold")["macro_f1"], 4)


def run_task(name: str, args: argparse.Namespace) -> dict:
    task = suite_data.SUITE[name]
    dev = suite_data.load_split(name, "dev")
    gold_rows = dev[: args.gold_rows]
    scored = dev[args.gold_rows :] if args.report == "dev-rest" else suite_data.load_split(name, "test")
    instruction = suite_data.USER_INSTRUCTIONS[name] if args.instruction else None
    start = task.shipped_task if args.from_task else None
    suffix = "-instr" if instruction else "-task" if start else ""
    work = WORK / args.model / f"{name}-{args.report}-{args.select}{suffix}"
    tune_in = _write(work / "gold.jsonl", gold_rows)
    scored_in = _write(work / "scored.jsonl", scored)
    report = run_tune(
        tune_in,
        work / "task.yaml",
        TuneConfig(task=start, labels=None if start else list(task.labels), text_fields=list(task.text_fields), shots=args.shots,
                   instruction=instruction, select=args.select, model=args.model, cache_path=args.cache_path, overwrite=True,
                   progress=False, draws=args.draws, label_words=args.label_words),
    )  # fmt: skip
    options = yaml.safe_load(Path(report["options"]).read_text())
    tuned = _score(scored_in, work / "tuned.jsonl", options, args)
    single = tuned  # what one blind demonstration draw (--draws 1, draw 0) gives on the same rows
    if report.get("draws") and report["chosen"].get("draw", 0) != 0:
        first = work / "task.yaml.work" / "draws" / "demos0.jsonl"
        single = _score(scored_in, work / "tuned-draw0.jsonl", {**options, "few_shot": str(first)}, args)
    adhoc = {"labels": list(task.labels), "text_fields": list(task.text_fields)}
    default = _score(scored_in, work / "default.jsonl", adhoc, args)
    labels_only = default
    if instruction:
        labels_only = _score(scored_in, work / "labels-only.jsonl", adhoc, args)
        default = _score(scored_in, work / "default.jsonl", {**adhoc, "instruction": instruction}, args)
    oracle = {"macro_f1": -1.0}
    if args.no_oracle:
        report["candidates"] = []  # the search in hindsight relabels the scored rows once per candidate
    seen = set()
    gold = np.array([task.labels.index(r["gold"]) for r in gold_rows])
    for candidate in report["candidates"]:  # the oracle: every candidate, scored on the held-out rows
        key = (candidate["task_file"], candidate["shots"], candidate["calibration"])
        if key in seen:
            continue
        seen.add(key)
        cand_options = {"task": candidate["task_file"], "text_fields": list(task.text_fields)}
        cand_options.update(calibration_options(candidate["calibration"], gold, len(task.labels)))
        if candidate["shots"]:
            cand_options.update(
                few_shot=options.get("few_shot") or str(work / "task.yaml.demos.jsonl"),
                shots=candidate["shots"],
                select=args.select,
            )
            if not Path(cand_options["few_shot"]).exists():
                continue
        f1 = _score(scored_in, work / "oracle.jsonl", cand_options, args)
        if f1 > oracle["macro_f1"]:
            oracle = {"macro_f1": f1, **{k: candidate[k] for k in ("prompt", "shots", "calibration")}}
    if oracle["macro_f1"] < 0:
        oracle = {"macro_f1": None}
    majority = suite_data.majority_baseline(scored, task.labels)["macro_f1"]
    return {"task": name, "scored_rows": len(scored), "majority_f1": round(majority, 4), "default_f1": default,
            "labels_only_f1": labels_only, "instruction": instruction, "from_task": start, "tuned_f1": tuned, "tuned_draw0_f1": single, "draws": report.get("draws", []),
            "chosen": report["chosen"], "warnings": report["warnings"], "oracle": oracle}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--report", choices=["dev-rest", "test"], default="dev-rest")
    parser.add_argument("--gold-rows", type=int, default=100)
    parser.add_argument("--shots", default="0,4")
    parser.add_argument(
        "--select",
        choices=["random", "knn"],
        default="random",
        help="tune --select (few-shot demonstrations)",
    )
    parser.add_argument("--draws", type=int, default=4, help="tune --draws (few-shot demonstration draws)")
    parser.add_argument(
        "--label-words", type=int, default=TuneConfig.label_words, help="tune --label-words (0: off)"
    )
    parser.add_argument(
        "--instruction", action="store_true", help="each task's USER_INSTRUCTIONS for tune and the default"
    )
    parser.add_argument(
        "--from-task", action="store_true", help="tune --task <the shipped task> (tasks that have one)"
    )
    parser.add_argument("--tasks", nargs="+", choices=list(suite_data.SUITE), default=list(suite_data.SUITE))
    parser.add_argument("--model", default=DEFAULT_LABELER)
    parser.add_argument("--cache-path", default="/tmp/llmst-eval/cache.sqlite")
    parser.add_argument(
        "--no-oracle", action="store_true", help="skip the best-candidate-in-hindsight search"
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="results file (default: by report and select)"
    )
    args = parser.parse_args()
    args.backend = None
    started = time.perf_counter()
    results = []
    if args.instruction and args.from_task:
        parser.error("--instruction is for ad-hoc tasks; --from-task starts from a shipped task")
    if args.from_task and not args.no_oracle:
        parser.error(
            "--from-task needs --no-oracle (the oracle scores candidates in the suite's label order)"
        )
    if args.from_task:
        args.tasks = [name for name in args.tasks if suite_data.SUITE[name].shipped_task]
    for name in args.tasks:
        r = run_task(name, args)
        print(f"[tune] {name}: default {r['default_f1']:.4f} tuned {r['tuned_f1']:.4f} oracle {r['oracle']['macro_f1']}", file=sys.stderr)  # fmt: skip
        results.append(r)
        _write_results(args, results, started, _table(args, results))
    print(_table(args, results))


def _table(args: argparse.Namespace, results: list[dict]) -> str:
    lines = [f"`llmst tune` on {args.gold_rows} gold dev rows per task, scored on `{args.report}`, {args.model}, shots {args.shots}, select {args.select}",
             "", "| task | rows | majority F1 | ad-hoc default F1 | tuned F1 | tuned minus default | tuned, draw 0 only | tuned choice | best candidate in hindsight |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        c, o = r["chosen"], r["oracle"]
        lines.append(f"| {r['task']} | {r['scored_rows']} | {r['majority_f1']:.4f} | {r['default_f1']:.4f} | {r['tuned_f1']:.4f} | "
                     f"{r['tuned_f1'] - r['default_f1']:+.4f} | {r.get('tuned_draw0_f1', r['tuned_f1']):.4f} | "
                     f"{c['prompt']}, {c['shots']}-shot, {c['calibration']}{', draw ' + str(c['draw']) if 'draw' in c else ''} | "
                     + ("not searched |" if o["macro_f1"] is None else f"{o['macro_f1']:.4f} ({o.get('prompt')}, {o.get('shots')}-shot, {o.get('calibration')}) |"))  # fmt: skip
    mean = {k: sum(r[k] for r in results) / len(results) for k in ("default_f1", "tuned_f1")}
    oracles = [r["oracle"]["macro_f1"] for r in results if r["oracle"]["macro_f1"] is not None]
    hindsight = (
        f", best candidate in hindsight {sum(oracles) / len(oracles):.4f}"
        if len(oracles) == len(results)
        else ""
    )
    lines += ["", f"mean macro-F1 over {len(results)} tasks: default {mean['default_f1']:.4f}, tuned {mean['tuned_f1']:.4f} "
              f"({mean['tuned_f1'] - mean['default_f1']:+.4f}){hindsight}"]  # fmt: skip
    return "\n".join(lines)


def _write_results(args: argparse.Namespace, results: list[dict], started: float, table: str) -> None:
    out = args.json or RESULTS / f"suite_tune_{args.report}_{args.select}.json"
    out.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "model": args.model,
                               "seconds": round(time.perf_counter() - started, 1), "results": results, "table": table}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
