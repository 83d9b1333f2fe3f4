"""Dev-only search over prompt templates, verbalizers, calibration and few-shot settings (default labeler).

Every number here comes from dev data, never from a test set:
  SST-2 dev (872), AG News test rows 2,001-2,600 (AG News has no dev split; the reported test rows are
  1-2,000), and a seeded 500-row slice of TREC train (see eval/data.py).

How it scores: prompts are built by llmst's own `Labeler` (same rendering, truncation, few-shot blocks and
prefix split as `llmst label`), and scored by the hf backend once per prompt against the union of all
candidate verbalizers of the dataset (all single tokens, so this costs one forward pass per prompt). Each
verbalizer set is then pooled per label by log-sum-exp and calibrated with llmst.label.calibrate exactly as
`label_corpus` does: none, contextual (content-free inputs of the task), prior (uniform target) and, for
TREC, prior with the label frequencies of TREC train as the target. Scores go through llmst's answer cache
(`--cache-path`), so reruns are cheap. `--verify` reruns the best settings through `label_corpus` +
`evaluate_file` and checks that the accuracies agree.

Phases:
  zero: every template x verbalizer set x calibration, zero-shot.
  few:  the best zero-shot templates (each with its best verbalizer set; SST-2: top 3, others: top 1) with
        K demonstrations from a --few-shot file of 16 rows (seeded, label-stratified sample of the
        training pool; the file seed is the run seed), --select random (K of the 16, seeded) for each, and
        knn (the K nearest of the 16 by MiniLM) for the best template only (it has no shared prefix to
        reuse, so it costs 5-25x more). Settings are ranked by mean dev accuracy over seeds.

    python eval/search_prompts.py                          # everything (about 30-40 min on 2 cores)
    python eval/search_prompts.py --datasets sst2 --phases zero --limit 200

Writes eval/results/search_<dataset>.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data as evaldata  # noqa: E402
from search_space import FEW_SHOT_SPACE, SEARCH  # noqa: E402

from llmst.backends import BackendSpec, make_backend  # noqa: E402
from llmst.cache import AnswerCache, score_key  # noqa: E402
from llmst.label.calibrate import contextual_bias, prior_bias  # noqa: E402
from llmst.label.config import LabelConfig  # noqa: E402
from llmst.label.fewshot import FewShotSelector, load_examples  # noqa: E402
from llmst.label.run import Labeler  # noqa: E402
from llmst.label.task import Task, load_task, task_from_dict  # noqa: E402
from llmst.readers import Row  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_CACHE = "/tmp/llmst-eval/cache.sqlite"
FEW_SHOT_FILE_ROWS = 16


def trec_train_prior(label_names: list[str]) -> list[float]:
    """Label frequencies of TREC train (the few-shot pool part), in task label order."""
    counts = {name: 0 for name in label_names}
    for row in evaldata.load("trec-train"):
        counts[row["gold"]] += 1
    total = sum(counts.values())
    return [round(counts[name] / total, 6) for name in label_names]


# --------------------------------------------------------------------------------------------- scoring
@dataclass
class Scored:
    """Candidate log-probs of one prompt setting: rows (N, C), content-free (M, C)."""

    candidates: tuple[str, ...]
    rows: np.ndarray
    content_free: np.ndarray
    seconds: float
    computed: int
    meta: dict[str, Any] = field(default_factory=dict)


def score_prompts(backend, cache: AnswerCache, prompts, prefix_chars, candidates, chunk: int = 256):
    """Candidate log-probs (N, C) through the answer cache (the key of llmst's own scorer: `score_key`)."""
    keys = [score_key(backend, p, c, candidates) for p, c in zip(prompts, prefix_chars, strict=True)]
    found = cache.get_many(list(dict.fromkeys(keys)))
    missing = list({k: i for i, k in enumerate(keys) if k not in found}.values())
    from llmst.backends.base import ScoreRequest

    for start in range(0, len(missing), chunk):
        part = missing[start : start + chunk]
        answers = backend.score([ScoreRequest(prompts[i], candidates, prefix_chars[i]) for i in part])
        fresh = {keys[i]: a for i, a in zip(part, answers, strict=True)}
        cache.put_many(fresh)
        found.update(fresh)
    return np.asarray([found[k] for k in keys], dtype=np.float64), len(missing)


def make_task(spec: dict[str, Any], template: str, verbalizers: dict[str, list[str]]) -> Task:
    base = load_task(spec["task"])
    entry = spec["templates"][template]
    entry = entry if isinstance(entry, dict) else {"prompt": entry}
    return task_from_dict(
        {
            "task": base.name,
            "labels": verbalizers,
            "prompt": entry["prompt"],
            "instruction": entry.get("instruction", ""),
            "content_free": base.content_free,
        },
        base.name,
    )


def all_candidates(spec: dict[str, Any]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for verbalizers in spec["verbalizers"].values():
        for words in verbalizers.values():
            for word in words:
                seen.setdefault(word)
    return tuple(seen)


def score_setting(
    backend,
    cache: AnswerCache,
    task: Task,
    rows: list[dict],
    candidates: tuple[str, ...],
    *,
    few_shot: str | None = None,
    shots: int = 4,
    select: str = "random",
    seed: int = 0,
) -> Scored:
    """Score dev rows (and the content-free inputs) for one task prompt and few-shot setting."""
    started = time.perf_counter()
    config = LabelConfig(
        task=None, labels=["a", "b"], few_shot=few_shot, shots=shots, select=select, seed=seed
    )
    fewshot = None
    if few_shot:
        examples = load_examples(few_shot, task)
        fewshot = FewShotSelector(examples, task, shots=shots, select=select, seed=seed)
    labeler = Labeler(config, task, backend, fewshot)
    prepared, rejects = labeler.prepare([Row(i + 1, r) for i, r in enumerate(rows)])
    assert not rejects and len(prepared) == len(rows)
    matrix, computed = score_prompts(
        backend, cache, [p.prompt for p in prepared], [p.prefix_chars for p in prepared], candidates
    )
    block = fewshot.blocks(["N/A"])[0] if fewshot else ""
    cf_prompts = [
        task.instruction + block + task.render({f: cf for f in task.text_fields}, cf)
        for cf in task.content_free
    ]
    cf_matrix, _ = score_prompts(backend, cache, cf_prompts, [0] * len(cf_prompts), candidates)
    seconds = time.perf_counter() - started
    return Scored(candidates, matrix, cf_matrix, seconds, computed)


def pool(matrix: np.ndarray, candidates: tuple[str, ...], verbalizers: dict[str, list[str]]) -> np.ndarray:
    index = {c: i for i, c in enumerate(candidates)}
    return np.stack(
        [np.logaddexp.reduce(matrix[:, [index[w] for w in words]], axis=1) for words in verbalizers.values()],
        axis=1,
    )


def evaluate_scores(
    scored: Scored,
    verbalizers: dict[str, list[str]],
    gold: list[str],
    priors: dict[str, list[float] | None],
) -> dict[str, dict[str, float]]:
    from sklearn.metrics import f1_score

    names = list(verbalizers)
    logp = pool(scored.rows, scored.candidates, verbalizers)
    biases = {
        "none": np.zeros(len(names)),
        "contextual": contextual_bias(pool(scored.content_free, scored.candidates, verbalizers)),
    }
    for prior_name, prior in priors.items():
        biases[prior_name] = prior_bias(logp[:5000], None if prior is None else np.asarray(prior))
    out = {}
    for calibration, bias in biases.items():
        pred = [names[i] for i in np.argmax(logp + bias, axis=1)]
        out[calibration] = {
            "accuracy": round(float(np.mean([p == g for p, g in zip(pred, gold, strict=True)])), 4),
            "macro_f1": round(float(f1_score(gold, pred, labels=names, average="macro", zero_division=0)), 4),
        }
    return out


# ------------------------------------------------------------------------------------------------ phases
def priors_for(dataset: str, names: list[str]) -> dict[str, list[float] | None]:
    priors: dict[str, list[float] | None] = {"prior": None}
    if dataset == "trec":
        priors["prior-train"] = trec_train_prior(names)
    return priors


def zero_phase(dataset, backend, cache, rows, gold, log) -> list[dict]:
    spec = SEARCH[dataset]
    candidates = all_candidates(spec)
    first = next(iter(spec["verbalizers"].values()))
    priors = priors_for(dataset, list(first))
    results = []
    for template in spec["templates"]:
        task = make_task(spec, template, first)
        scored = score_setting(backend, cache, task, rows, candidates)
        log(
            f"  [{dataset}] zero-shot {template}: {len(rows)} rows, {scored.computed} computed, {scored.seconds:.0f}s"
        )
        for vname, verbalizers in spec["verbalizers"].items():
            metrics = evaluate_scores(scored, verbalizers, gold, priors)
            results.append({"phase": "zero", "template": template, "verbalizers": vname, "metrics": metrics})
    return results


def best_of(results: list[dict], key: str = "accuracy") -> tuple[dict, str]:
    """The result and calibration with the highest dev score (ties: first)."""
    best, best_cal, best_value = results[0], "none", -1.0
    for result in results:
        for calibration, metrics in result["metrics"].items():
            if metrics[key] > best_value:
                best, best_cal, best_value = result, calibration, metrics[key]
    return best, best_cal


def ranked_templates(zero_results: list[dict]) -> list[tuple[str, str]]:
    """(template, verbalizers) per template, best verbalizer set first, templates by best dev accuracy."""
    best: dict[str, tuple[float, str]] = {}
    for r in zero_results:
        value = max(m["accuracy"] for m in r["metrics"].values())
        if r["template"] not in best or value > best[r["template"]][0]:
            best[r["template"]] = (value, r["verbalizers"])
    order = sorted(best, key=lambda t: -best[t][0])
    return [(t, best[t][1]) for t in order]


def few_phase(
    dataset, backend, cache, rows, gold, zero_results, log, space, out_dir, detok=False
) -> list[dict]:
    """Few-shot runs for the top `space['templates']` zero-shot templates (knn only for the best one)."""
    spec = SEARCH[dataset]
    candidates = all_candidates(spec)
    results = []
    for rank, (template, vname) in enumerate(ranked_templates(zero_results)[: space.get("templates", 1)]):
        chosen = spec["verbalizers"][vname]
        primary = {label: words[0] for label, words in chosen.items()}
        # every verbalizer set with the same demonstration words shares the prompts
        sets = {
            name: v
            for name, v in spec["verbalizers"].items()
            if {label: words[0] for label, words in v.items()} == primary
        }
        priors = priors_for(dataset, list(chosen))
        task = make_task(spec, template, chosen)
        for select in space["select"]:
            if select == "knn" and rank > 0:
                continue  # no shared prefix: 5-25x the cost of random, so only for the best template
            for shots in space["shots"]:
                seeds = space.get(f"{select}{shots}_seeds", space.get(f"{select}_seeds", space["seeds"]))
                for seed in seeds:
                    path = evaldata.few_shot_file(dataset, FEW_SHOT_FILE_ROWS, seed, out_dir, detok=detok)
                    scored = score_setting(
                        backend,
                        cache,
                        task,
                        rows,
                        candidates,
                        few_shot=str(path),
                        shots=shots,
                        select=select,
                        seed=seed,
                    )
                    log(
                        f"  [{dataset}] {select} K={shots} seed={seed} ({template}, {vname}): "
                        f"{scored.computed} computed, {scored.seconds:.0f}s"
                    )
                    for name, verbalizers in sets.items():
                        results.append(
                            {
                                "phase": "few",
                                "template": template,
                                "verbalizers": name,
                                "select": select,
                                "shots": shots,
                                "seed": seed,
                                "few_shot_file": str(path),
                                "metrics": evaluate_scores(scored, verbalizers, gold, priors),
                            }
                        )
    return results


GROUP = ("template", "verbalizers", "select", "shots")


def summarize_few(results: list[dict]) -> list[dict]:
    """Mean and spread over seeds per (template, verbalizers, select, shots, calibration)."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        for calibration, metrics in r["metrics"].items():
            key = (*[r[k] for k in GROUP], calibration)
            groups.setdefault(key, []).append({"seed": r["seed"], **metrics})
    out = []
    for key, items in groups.items():
        accs = [i["accuracy"] for i in items]
        out.append(
            {
                **dict(zip(GROUP, key[:-1], strict=True)),
                "calibration": key[-1],
                "seeds": len(items),
                "mean_accuracy": round(float(np.mean(accs)), 4),
                "min_accuracy": round(float(np.min(accs)), 4),
                "max_accuracy": round(float(np.max(accs)), 4),
                "mean_macro_f1": round(float(np.mean([i["macro_f1"] for i in items])), 4),
                "best_seed": max(items, key=lambda i: i["accuracy"])["seed"],
                "per_seed": {i["seed"]: i["accuracy"] for i in items},
            }
        )
    return sorted(out, key=lambda x: -x["mean_accuracy"])


def print_zero_table(dataset: str, results: list[dict]) -> None:
    calibrations = list(results[0]["metrics"])
    print(f"\n### {dataset}: zero-shot on dev (accuracy / macro-F1)\n")
    print("| template | verbalizers | " + " | ".join(calibrations) + " |")
    print("|---|---|" + "---|" * len(calibrations))
    for r in results:
        cells = [
            f"{r['metrics'][c]['accuracy']:.3f} / {r['metrics'][c]['macro_f1']:.3f}" for c in calibrations
        ]
        print(f"| {r['template']} | {r['verbalizers']} | " + " | ".join(cells) + " |")


def print_few_table(dataset: str, summary: list[dict], top: int = 25) -> None:
    print(f"\n### {dataset}: few-shot on dev, over seeds (sorted by mean accuracy)\n")
    print(
        "| template | verbalizers | select | K | calibration | mean acc | min | max | mean macro-F1 | per seed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s in summary[:top]:
        seeds = ", ".join(f"{k}:{v:.3f}" for k, v in s["per_seed"].items())
        print(
            f"| {s['template']} | {s['verbalizers']} | {s['select']} | {s['shots']} | {s['calibration']} "
            f"| {s['mean_accuracy']:.3f} "
            f"| {s['min_accuracy']:.3f} | {s['max_accuracy']:.3f} | {s['mean_macro_f1']:.3f} | {seeds} |"
        )


def verify(dataset, backend, cache_path, rows_path, best_zero, best_few, out_dir, log) -> list[dict]:
    """Rerun the best settings through label_corpus + evaluate_file; the accuracies must agree."""
    from llmst.evaluate import evaluate_file
    from llmst.label.run import label_corpus

    spec = SEARCH[dataset]
    checks = []
    for label, entry, calibration in best_zero + best_few:
        verbalizers = spec["verbalizers"][entry["verbalizers"]]
        task = make_task(spec, entry["template"], verbalizers)
        task_file = out_dir / "verify" / f"{dataset}-{label}.yaml"
        task_file.parent.mkdir(parents=True, exist_ok=True)
        import yaml

        task_file.write_text(
            yaml.safe_dump(
                {
                    "task": task.name,
                    "labels": task.labels,
                    "instruction": task.instruction,
                    "prompt": task.prompt,
                    "content_free": task.content_free,
                },
                allow_unicode=True,
                sort_keys=False,
            )
        )
        prior = None
        if calibration == "prior-train":
            prior, calibration = trec_train_prior(task.label_names), "prior"
        config = LabelConfig(
            task=str(task_file),
            few_shot=entry.get("few_shot_file"),
            shots=entry.get("shots", 4),
            select=entry.get("select", "random"),
            seed=entry.get("seed", 0),
            calibrate=calibration,
            prior=prior,
            cache_path=cache_path,
            overwrite=True,
            progress=False,
        )
        output = out_dir / "verify" / f"{dataset}-{label}.jsonl"
        label_corpus(rows_path, output, config, backend=backend)
        report = evaluate_file(output)
        expected = entry["metrics"][calibration if prior is None else "prior-train"]["accuracy"]
        checks.append(
            {
                "setting": label,
                "search_accuracy": expected,
                "label_corpus_accuracy": round(report["accuracy"], 4),
            }
        )
        log(f"  [{dataset}] verify {label}: search {expected:.4f} vs label_corpus {report['accuracy']:.4f}")
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default="sst2,ag_news,trec")
    parser.add_argument("--phases", default="zero,few")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N dev rows (smoke runs).")
    parser.add_argument("--cache-path", default=DEFAULT_CACHE)
    parser.add_argument("--data-dir", type=Path, default=evaldata.DEFAULT_OUT)
    parser.add_argument("--shots", default=None, help="Override K values, e.g. 4,8,16.")
    parser.add_argument("--select", default=None, help="Override selections, e.g. random,knn.")
    parser.add_argument("--seeds", default=None, help="Override seeds, e.g. 0,1,2.")
    parser.add_argument("--verify", action="store_true", help="Recheck the best settings via label_corpus.")
    parser.add_argument("--seed", type=int, default=0, help="Global seed (numpy/random/torch).")
    parser.add_argument(
        "--dtype",
        default="auto",
        help="Model dtype (auto = bf16 here). The answer cache key ignores dtype: use another --cache-path.",
    )
    parser.add_argument(
        "--sst2-detok", action="store_true", help="Experiment: SST-2 text with PTB tokenization undone."
    )
    parser.add_argument("--tag", default="", help="Suffix of the results file (search_<dataset><tag>.json).")
    args = parser.parse_args()

    random.seed(args.seed)
    np.random.seed(args.seed)
    import torch

    torch.manual_seed(args.seed)
    RESULTS.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    backend = make_backend(BackendSpec(dtype=args.dtype))
    cache = AnswerCache(Path(args.cache_path))
    phases = args.phases.split(",")
    try:
        for dataset in args.datasets.split(","):
            spec = SEARCH[dataset]
            rows = evaldata.load(spec["dev"])[: args.limit]
            detok = args.sst2_detok and dataset == "sst2"
            if detok:
                rows = [{**r, "text": evaldata.detok_sst(r["text"])} for r in rows]
            gold = [r["gold"] for r in rows]
            out_path = RESULTS / f"search_{dataset}{args.tag}.json"
            previous = json.loads(out_path.read_text()) if out_path.exists() else {}
            report: dict[str, Any] = {
                "dataset": dataset,
                "command": " ".join(["python", "eval/search_prompts.py", *sys.argv[1:]]),
                "sst2_detok": detok,
                "dev_split": spec["dev"],
                "dev_rows": len(rows),
                "model": backend.model_id,
                "dtype": getattr(backend, "dtype", None),
                "candidates": list(all_candidates(spec)),
                "templates": spec["templates"],
                "verbalizers": spec["verbalizers"],
            }
            if "zero" in phases or "zero" not in previous or previous.get("dev_rows") != len(rows):
                zero = zero_phase(dataset, backend, cache, rows, gold, log)
            else:
                zero = previous["zero"]
            report["zero"] = zero
            best, calibration = best_of(zero)
            report["best_zero"] = {**best, "calibration": calibration}
            print_zero_table(dataset, zero)
            best_few_entries = []
            if "few" in phases:
                space = dict(FEW_SHOT_SPACE[dataset])
                for key, override in (("shots", args.shots), ("select", args.select), ("seeds", args.seeds)):
                    if override:
                        space[key] = [int(x) if key != "select" else x for x in override.split(",")]
                        if key == "seeds":  # an explicit --seeds applies to every selection and K
                            space = {k: v for k, v in space.items() if not k.endswith("_seeds")}
                few = few_phase(dataset, backend, cache, rows, gold, zero, log, space, args.data_dir, detok)
                summary = summarize_few(few)
                report["few"] = few
                report["few_summary"] = summary
                report["few_space"] = space
                print_few_table(dataset, summary)
                top = summary[0]
                entry = next(
                    r for r in few if all(r[k] == top[k] for k in GROUP) and r["seed"] == top["best_seed"]
                )
                report["best_few"] = {**entry, "calibration": top["calibration"], "mean_over_seeds": top}
                best_few_entries = [("few", entry, top["calibration"])]
            if args.verify:
                rows_path = evaldata.write_jsonl(
                    rows, args.data_dir / f"{spec['dev']}-first{len(rows)}.jsonl"
                )
                report["verify"] = verify(
                    dataset,
                    backend,
                    args.cache_path,
                    rows_path,
                    [("zero", best, calibration)],
                    best_few_entries,
                    args.data_dir,
                    log,
                )
            out_path.write_text(json.dumps(report, indent=1))
            log(f"wrote {out_path}")
    finally:
        cache.close()
        backend.close()


if __name__ == "__main__":
    main()
