"""`llmst tune DEV -o task.yaml`: choose a prompt, verbalizers, calibration and shots on a few gold rows.

Candidates: the prompt of `--task` (if given) and the ad-hoc families (`llmst.label.task.ADHOC_FAMILIES`),
each with exact or case-pooled verbalizers or pooled with label words found on the gold rows
(`llmst.tune.verbalizers`; within cross-validation found on the other folds only); every `--calibrations`
choice; every `--shots` count. Each
candidate is scored by K-fold cross-validation: the rows of fold k are labeled (by `llmst.label.run.
label_corpus`, so answers are cached and shared between candidates) with demonstrations drawn only from the
other folds, so no row is ever scored with a demonstration drawn from itself. Prior calibrations are fitted
on the scored fold's texts, as `llmst label --calibrate prior` fits on a corpus, toward a uniform target,
the other folds' gold label shares (`prior-gold`), halfway to them (`prior-gold-half`) or the EM estimate.
The score is the macro-F1 of the pooled out-of-fold predictions, with a 95% bootstrap interval over rows.
The choice is the best-scored candidate that beats the reference (what `llmst label` does untuned: the
task's prompt or the ad-hoc default, zero-shot, `--calibrate prior`) in at least `SURE` of paired bootstrap
draws over the gold rows, else the reference.

Writes OUT (a task YAML that `llmst label --task OUT` uses), OUT.options.yaml (the chosen `llmst label`
options, for `--config`), OUT.demos.jsonl when the choice is few-shot (its demonstrations, drawn from all
gold rows), and OUT.report.json (every candidate). Warns when the gold rows cannot tell the best candidates
apart.
"""

from __future__ import annotations

import random
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from llmst.backends import make_backend
from llmst.backends.base import BackendSpec
from llmst.errors import ConfigError
from llmst.label.calibrate import (
    estimate_prior,
    estimated_target,
    prior_bias,
    read_fitted_calibration,
    softmax,
)
from llmst.label.config import LabelConfig, parse_label_descriptions
from llmst.label.fewshot import Example, stratified_sample
from llmst.label.run import Labeler, label_corpus
from llmst.label.scoring import Scorer
from llmst.label.task import ADHOC_FAMILIES, VERBALIZER_STYLES, Task, adhoc_task, load_task
from llmst.readers import Row, iter_checked
from llmst.records import label_index, probs_by_id, write_json_atomic, write_jsonl_atomic
from llmst.tune.config import TuneConfig
from llmst.tune.verbalizers import choose_words, with_words, word_logprobs

# a tuning row the labeler rejected cannot be scored
_ROW_HINT = "every tuning row needs its text field(s); fix or drop it"

BOOTSTRAP = 500


def _prompts(config: TuneConfig) -> dict[str, Task]:
    """Candidate prompts by name: the given task's own, then every ad-hoc family x verbalizer style."""
    base = load_task(config.task) if config.task else None
    labels = base.label_names if base else config.labels
    fields = config.text_fields or (base.text_fields if base else ["text"])
    descriptions = parse_label_descriptions(config.label_descriptions, labels) if config.labels else None
    prompts: dict[str, Task] = {}
    if base is not None:
        base.text_fields = list(fields)
        prompts[f"task:{base.name}"] = base
    for family in ADHOC_FAMILIES:
        for style in VERBALIZER_STYLES:
            task = adhoc_task(
                labels, fields, config.instruction, descriptions, family=family, verbalizers=style
            )
            if style == "cased" and all(len(v) == 1 for v in task.labels.values()):
                continue  # nothing to pool (e.g. labels already capitalised)
            task.name = f"{task.name}-{family}-{style}"
            prompts[f"{family}/{style}"] = task
        if config.label_words:  # the exact-style prompt, its label words found per fold (`_word_tasks`)
            task = adhoc_task(labels, fields, config.instruction, descriptions, family=family)
            task.name = f"{task.name}-{family}-words"
            prompts[f"{family}/{WORDS}"] = task
    return prompts


WORDS = "words"  # the verbalizer style whose label words are found on the gold rows


def _word_tasks(
    name: str, task: Task, rows, folds, gold: np.ndarray, backend, config: TuneConfig, work: Path
) -> tuple[Task, list[Path], dict[str, list[str]]]:
    """A `.../words` candidate: its label words found on all gold rows (the deployed task), a task file per
    fold with words found on the other folds only, and the deployed words. No task files when no word was
    found anywhere (the candidate would repeat the exact-style one)."""
    labeler = Labeler(
        LabelConfig(task=name, text_fields=task.text_fields, progress=False), task, backend, None
    )
    prepared, rejects = labeler.prepare([Row(i + 1, row) for i, row in enumerate(rows)])
    if rejects:
        raise ConfigError(f"tuning row {rejects[0].line}: {rejects[0].reason}", hint=_ROW_HINT)
    prompts = [item.prompt for item in prepared]
    logprobs, words = word_logprobs(backend, prompts)
    own = Scorer(backend, task, cache=None).label_logprobs(prompts, [0] * len(prompts))
    per_fold = []
    for fold in folds:
        rest = np.setdiff1d(np.arange(len(rows)), fold)
        per_fold.append(choose_words(own[rest], logprobs[rest], gold[rest], words, task, config.label_words))
    found = choose_words(own, logprobs, gold, words, task, config.label_words)
    if not any(any(chosen.values()) for chosen in [*per_fold, found]):
        return task, [], found
    files = [
        _task_file(
            work / "tasks" / f"{name.replace('/', '-')}-f{f}.yaml", with_words(task, chosen, task.name)
        )
        for f, chosen in enumerate(per_fold)
    ]
    return with_words(task, found, task.name), files, found


def _task_file(path: Path, task: Task) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(task.to_dict(), sort_keys=False, allow_unicode=True))
    return path


def _gold_rows(path: str, config: TuneConfig, labels: list[str]) -> list[dict[str, Any]]:
    rows = []
    for line, record in iter_checked(path):
        index = label_index(record.get(config.gold_field), labels)
        if index < 0:
            raise ConfigError(
                f"{path}, line {line}: gold field '{config.gold_field}' is {record.get(config.gold_field)!r}, "
                f"not one of {labels}",
                hint="every tuning row needs a gold label (name or index); use --gold-field",
            )
        rows.append({**record, "id": str(record.get("id", f"row{line}")), "_gold": index})
    if len(rows) < 2 * config.folds:
        raise ConfigError(
            f"{path} has {len(rows)} gold rows; {config.folds}-fold tuning needs at least {2 * config.folds}"
        )
    return rows


def _demos(
    rows: list[dict[str, Any]], labels: list[str], shots: int, seed: int, select: str = "random"
) -> list[dict[str, Any]]:
    """The few-shot file of `llmst label` for demonstrations drawn from `rows` (gold in `label`): with
    `select="random"`, the `shots` rows it would use (label-stratified, seeded); with "knn", all of them (it
    picks each query's nearest `shots` itself)."""
    pool = [Example(record=row, text="", label=labels[row["_gold"]]) for row in rows]
    chosen = pool if select == "knn" else stratified_sample(pool, shots, seed)
    return [{**{k: v for k, v in e.record.items() if k != "_gold"}, "label": e.label} for e in chosen]


def _macro_f1(gold: np.ndarray, pred: np.ndarray, k: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(gold, pred, labels=list(range(k)), average="macro", zero_division=0))


def gold_shares(gold: np.ndarray, k: int, power: float = 1.0) -> np.ndarray:
    """Label shares of gold rows (add-one smoothed, so no share is 0), raised to `power` and renormalised:
    `power=0.5` is halfway, in log space, from the uniform prior to the gold one."""
    shares = (np.bincount(gold, minlength=k) + 1.0) ** power
    return shares / shares.sum()


GOLD_POWER = {"prior-gold": 1.0, "prior-gold-half": 0.5}  # gold-share calibrations: `gold_shares` power


def calibration_options(calibration: str, gold: np.ndarray, k: int) -> dict[str, str]:
    """The `llmst label` options of a tune calibration; `gold`: label indices of the gold rows."""
    if calibration == "prior-estimated":
        return {"calibrate": "prior", "prior": "em"}
    if calibration in GOLD_POWER:
        shares = gold_shares(gold, k, GOLD_POWER[calibration])
        return {"calibrate": "prior", "prior": ",".join(f"{share:.4f}" for share in shares)}
    return {"calibrate": calibration}


def _calibrated(
    logprobs: np.ndarray,
    calibration: str,
    contextual: tuple[np.ndarray, np.ndarray] | None,
    train_gold: np.ndarray,
) -> np.ndarray:
    """Out-of-fold probabilities under one calibration; `contextual`: the fold's content-free-calibrated
    probabilities and that bias; `train_gold`: the gold labels of the other folds (the prior-gold targets
    come from them, never from the scored fold)."""
    k = logprobs.shape[1]
    if calibration == "prior":
        return softmax(logprobs + prior_bias(logprobs))
    if calibration in GOLD_POWER:
        target = gold_shares(train_gold, k, GOLD_POWER[calibration])
        return softmax(logprobs + prior_bias(logprobs, target))
    if calibration == "prior-estimated":  # as `llmst label --prior estimated` fits it
        estimate, _, _ = estimate_prior(logprobs, contextual[1], resamples=0)  # type: ignore[index]
        return softmax(logprobs + prior_bias(logprobs, estimated_target(estimate)))
    if calibration == "contextual":
        return contextual[0]  # type: ignore[index]
    return softmax(logprobs)


def _label_probs(
    task_file: Path,
    task: Task,
    source: Path,
    ids: list[str],
    demos: Path | None,
    shots: int,
    train_gold: np.ndarray,
    raw: Path,
    backend: Any,
    config: TuneConfig,
    calibrations: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Label the rows `ids` of `source` with one candidate prompt (and demonstrations `demos`), once without
    calibration (into `raw`), and return their probabilities under each calibration (default: all of
    `config`'s); `train_gold`: the gold labels the prior-gold targets come from."""
    calibrations = calibrations or list(config.calibrations or [])
    base = LabelConfig(
        task=str(task_file),
        text_fields=task.text_fields,
        model=config.model,
        dtype=config.dtype,
        few_shot=str(demos) if demos else None,
        shots=max(shots, 1),
        select=config.select,
        calibrate="none",
        cache_path=config.cache_path,
        overwrite=True,
        progress=False,
    )
    labels = task.label_names
    label_corpus(source, raw, base, backend=backend)
    logprobs = np.log(np.clip(probs_by_id(raw, ids, labels, _ROW_HINT), 1e-300, None))
    contextual = None
    if {"contextual", "prior-estimated"} & set(calibrations):
        ctx = raw.with_name(raw.stem + "-contextual.jsonl")
        label_corpus(source, ctx, replace(base, calibrate="contextual"), backend=backend)
        contextual = (probs_by_id(ctx, ids, labels, _ROW_HINT), read_fitted_calibration(str(ctx), labels)[1])
    return {c: _calibrated(logprobs, c, contextual, train_gold) for c in calibrations}


DRAW_SEED_STEP = 1000  # draw d uses seed + 1000 d: apart from the folds' seeds (seed + fold)


def _choose_draw(rows, labels, gold, best, task, config: TuneConfig, backend, work: Path):
    """The deployed demonstrations of a few-shot choice: `config.draws` label-stratified draws of all gold
    rows (draw 0 is the one a single draw gives), each scored (macro-F1, under the chosen calibration) on
    the gold rows outside it; the best draw and every draw's score. The rows outside a draw are also the
    rows the draw is chosen on, so its score is optimistic: it ranks draws, it does not estimate quality
    (the cross-validated score does)."""
    shots, calibration = best["shots"], best["calibration"]
    scored = []
    for d in range(config.draws):
        seed = config.seed + DRAW_SEED_STEP * d
        demos = _demos(rows, labels, shots, seed, "random")
        used = {str(row["id"]) for row in demos}
        rest = [i for i, row in enumerate(rows) if row["id"] not in used]
        source = write_jsonl_atomic(
            work / "draws" / f"rest{d}.jsonl",
            [{k: v for k, v in rows[i].items() if k != "_gold"} for i in rest],
        )
        demo_file = write_jsonl_atomic(work / "draws" / f"demos{d}.jsonl", demos)
        probs = _label_probs(
            Path(best["task_file"]), task, source, [rows[i]["id"] for i in rest], demo_file, shots, gold,
            work / "draws" / f"labeled{d}.jsonl", backend, config, [calibration],
        )[calibration]  # fmt: skip
        f1 = _macro_f1(gold[rest], probs.argmax(axis=1), len(labels))
        scored.append({"draw": d, "seed": seed, "macro_f1": round(f1, 4), "rows": len(rest), "demos": demos})
    chosen = max(scored, key=lambda r: (r["macro_f1"], -r["draw"]))
    return chosen["demos"], [{k: v for k, v in r.items() if k != "demos"} for r in scored], chosen["draw"]


def _bootstrap_draws(n: int, seed: int) -> np.ndarray:
    """The row indices of `BOOTSTRAP` resamples of `n` rows, (draws, rows); the same for every candidate."""
    return np.random.default_rng(seed).integers(0, n, (BOOTSTRAP, n))


def _bootstrap_f1(gold: np.ndarray, pred: np.ndarray, k: int, seed: int) -> tuple[float, float]:
    low, high = np.percentile(_macro_f1_draws(gold, pred, k, _bootstrap_draws(len(gold), seed)), [2.5, 97.5])
    return float(low), float(high)


def run_tune(dev: str | Path, out: str | Path, config: TuneConfig) -> dict[str, Any]:
    """Score every candidate by cross-validation on the gold rows of `dev`; write the best as a task YAML
    (OUT), its `llmst label` options (OUT.options.yaml) and every candidate (OUT.report.json)."""
    out = Path(out)
    if out.exists() and not config.overwrite:
        raise ConfigError(f"{out} already exists", hint="pass --overwrite to replace it")
    prompts = _prompts(config)
    labels = next(iter(prompts.values())).label_names
    rows = _gold_rows(str(dev), config, labels)
    order = list(range(len(rows)))
    random.Random(config.seed).shuffle(order)
    folds = [sorted(order[f :: config.folds]) for f in range(config.folds)]
    gold = np.array([row["_gold"] for row in rows])
    work = out.with_name(out.name + ".work")
    fold_files = [
        write_jsonl_atomic(
            work / "folds" / f"fold{f}.jsonl",
            [{k: v for k, v in rows[i].items() if k != "_gold"} for i in fold],
        )
        for f, fold in enumerate(folds)
    ]
    spec = BackendSpec(
        model=config.model, dtype=config.dtype, batch_size=config.batch_size, quiet=not config.progress
    )
    demo_files = {  # the same for every prompt: written once per (fold, shots), from the other folds only
        (f, shots): write_jsonl_atomic(
            work / "demos" / f"fold{f}-{shots}-{config.select}.jsonl",
            _demos(
                [rows[i] for i in range(len(rows)) if i not in set(fold)],
                labels,
                shots,
                config.seed + f,
                config.select,
            ),
        )
        for f, fold in enumerate(folds)
        for shots in config.shots
        if shots
    }
    backend = make_backend(spec)
    results: list[dict[str, Any]] = []
    preds: dict[tuple[str, int, str], np.ndarray] = {}
    try:
        for number, (name, task) in enumerate(prompts.items(), start=1):
            fold_tasks, words = None, None
            if name.endswith("/" + WORDS):
                task, fold_tasks, words = _word_tasks(name, task, rows, folds, gold, backend, config, work)
                if not fold_tasks:
                    if config.progress:
                        print(f"[tune] {name}: no label words found, candidate skipped", file=sys.stderr)
                    continue
                prompts[name] = task
            task_file = _task_file(work / "tasks" / f"{number:02d}.yaml", task)
            for shots in config.shots:
                if config.progress:
                    print(f"[tune] prompt {number}/{len(prompts)} {name}, {shots}-shot", file=sys.stderr)
                probs = {c: np.zeros((len(rows), len(labels))) for c in config.calibrations}
                for f, fold in enumerate(folds):
                    ids = [rows[i]["id"] for i in fold]
                    raw = work / "labeled" / f"{number:02d}-s{shots}-f{f}.jsonl"
                    scored = _label_probs(
                        fold_tasks[f] if fold_tasks else task_file, task, fold_files[f], ids,
                        demo_files.get((f, shots)), shots,
                        np.delete(gold, fold), raw, backend, config,
                    )  # fmt: skip
                    for calibration, fold_probs in scored.items():
                        probs[calibration][fold] = fold_probs
                for calibration in config.calibrations:
                    pred = probs[calibration].argmax(axis=1)
                    preds[(name, shots, calibration)] = pred
                    f1 = _macro_f1(gold, pred, len(labels))
                    low, high = _bootstrap_f1(gold, pred, len(labels), config.seed)
                    results.append(
                        {
                            "prompt": name,
                            "task_file": str(task_file),
                            "shots": shots,
                            "calibration": calibration,
                            "macro_f1": round(f1, 4),
                            "macro_f1_interval": [round(low, 4), round(high, 4)],
                            "accuracy": round(float((pred == gold).mean()), 4),
                            **({"words": words} if words is not None else {}),
                        }
                    )
        ranked = sorted(
            results, key=lambda r: (-r["macro_f1"], r["shots"], CALIBRATION_ORDER[r["calibration"]])
        )
        best = _choose(ranked, preds, gold, len(labels), _reference(prompts), config.seed)
        task, demos, draws = prompts[best["prompt"]], None, []
        if best["shots"] and config.select == "random" and config.draws > 1:
            demos, draws, chosen_draw = _choose_draw(rows, labels, gold, best, task, config, backend, work)
            best = {**best, "draw": chosen_draw}
        elif best["shots"]:
            demos = _demos(rows, labels, best["shots"], config.seed, config.select)
    finally:
        backend.close()
    warnings = []
    if len(ranked) > 1 and ranked[1]["macro_f1"] >= best["macro_f1_interval"][0]:
        close = sum(r["macro_f1"] >= best["macro_f1_interval"][0] for r in ranked[1:])
        warnings.append(
            f"{len(rows)} gold rows cannot tell the best candidates apart: {close} others score within the best's "
            f"95% interval {best['macro_f1_interval']}; more gold rows would make the choice firmer"
        )
    return _write_choice(out, dev, config, task, best, rows, labels, ranked, warnings, demos, draws)


# A candidate replaces the reference (what `llmst label` does with the task and no options) only when it beats
# it in this share of paired bootstrap draws over the gold rows: the best of ~100 cross-validated scores on 100
# rows is optimistic (the winner's curse), so the default wins unless the evidence against it is firm.
SURE = 0.9


def _reference(prompts: dict[str, Task]) -> tuple[str, int, str]:
    """The candidate `llmst label` would run without tuning: the task's prompt (`_prompts` names it
    `task:...`; else the ad-hoc default family), zero-shot, `--calibrate prior` toward a uniform prior."""
    return (next((name for name in prompts if name.startswith("task:")), "classify/exact"), 0, "prior")


def _choose(ranked, preds, gold: np.ndarray, k: int, reference, seed: int) -> dict[str, Any]:
    """The best-scored candidate that beats the reference in at least `SURE` of paired bootstrap draws, else
    the reference (the best-scored one when the reference is not a candidate)."""
    ref = next((r for r in ranked if (r["prompt"], r["shots"], r["calibration"]) == reference), None)
    if ref is None:
        return ranked[0]
    idx = _bootstrap_draws(len(gold), seed)
    base = _macro_f1_draws(gold, preds[reference], k, idx)
    for r in ranked[: ranked.index(ref)]:  # the candidates scored above the reference, best first
        wins = float(
            (_macro_f1_draws(gold, preds[(r["prompt"], r["shots"], r["calibration"])], k, idx) > base).mean()
        )
        if wins >= SURE:
            return {**r, "beats_reference": round(wins, 3)}
    return {**ref, "reference": True}


def _macro_f1_draws(gold: np.ndarray, pred: np.ndarray, k: int, idx: np.ndarray) -> np.ndarray:
    """Macro-F1 of `pred` on each bootstrap draw of rows `idx` (draws, rows), as `_macro_f1` computes it (a
    label with no gold row and no prediction scores 0); vectorised, since sklearn per draw is ~100x slower."""
    g, p = gold[idx], pred[idx]
    scores = []
    for c in range(k):
        tp = ((g == c) & (p == c)).sum(axis=1)
        wrong = ((g == c) != (p == c)).sum(axis=1)
        scores.append(np.where(2 * tp + wrong > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 0.0))
    return np.mean(scores, axis=0)


CALIBRATION_ORDER = {
    c: i
    for i, c in enumerate(("prior", "prior-gold-half", "prior-gold", "none", "prior-estimated", "contextual"))
}


def _write_choice(
    out, dev, config, task, best, rows, labels, ranked, warnings, demos, draws
) -> dict[str, Any]:
    task.name = out.stem
    task.description = f"chosen by llmst tune on {dev} ({len(rows)} gold rows, {config.folds}-fold CV)"
    _task_file(out, task)
    options: dict[str, Any] = {"task": str(out), "text_fields": task.text_fields}
    options.update(
        calibration_options(best["calibration"], np.array([row["_gold"] for row in rows]), len(labels))
    )
    if demos is not None:
        demo_file = write_jsonl_atomic(out.with_name(out.name + ".demos.jsonl"), demos)
        options.update(few_shot=str(demo_file), shots=best["shots"], select=config.select)
    options_path = out.with_name(out.name + ".options.yaml")
    options_path.write_text(yaml.safe_dump(options, sort_keys=False))
    report = {
        "output": str(out),
        "options": str(options_path),
        "command": f"llmst label CORPUS -o LABELED --config {options_path}",
        "rows": len(rows),
        "folds": config.folds,
        "chosen": best,
        "draws": draws,
        "warnings": warnings,
        "candidates": ranked,
    }
    write_json_atomic(out.with_name(out.name + ".report.json"), report)
    return report
