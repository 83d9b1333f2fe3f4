"""Augmented SBERT on STS-b (Thakur et al. 2021): gold-only fine-tuning vs gold + silver pairs scored by a
cross-encoder teacher, with random sampling as the control; MiniLM-L6 (all-MiniLM-L6-v2) students.

    python eval/augsbert.py [--seeds 0 1 2 3 4] [--silver 6000] [--epochs 1] [--teacher-epochs 3]
                            [--data-dir DIR] [--out-dir /tmp/llmst-eval/augsbert] [--json eval/results/augsbert.json]

Steps, each a signature-cached llmst stage under OUT_DIR (a rerun reuses what is current):
1. teacher: `llmst train --kind cross-encoder` on STS-b train gold (MiniLM-L6 weights, new head, scores / 5);
2. silver pairs: `llmst pairs sample` over the train sentences by bm25, semantic (MiniLM-L6) and random, top-3,
   with STS-b dev and test pairs excluded (the leak guard); a seeded subset of `--silver` pairs per variant
   (bm25 + semantic: half each);
3. `llmst pairs score` with the teacher (its sigmoid score is the target);
4. per seed, bi-encoders (`llmst train --kind bi-encoder --loss cosent`) on gold only, gold + bm25/semantic
   silver (AugSBERT) and gold + random silver; Spearman x 100 on STS-b dev and test (`llmst.pairs.evaluate`).
Prints a table (mean over seeds, 95% t-interval; AugSBERT minus gold-only paired by seed) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pairs_data  # noqa: E402

from llmst.experiments.orchestration import run_stage  # noqa: E402
from llmst.pairs.config import (  # noqa: E402
    SampleConfig,
    ScoreConfig,
    sample_signature,  # noqa: E402
)
from llmst.pairs.evaluate import evaluate_pairs  # noqa: E402
from llmst.pairs.sample import sample_pairs  # noqa: E402
from llmst.pairs.score import score_pairs, score_signature  # noqa: E402
from llmst.stage import read_marker, signature  # noqa: E402
from llmst.train import TrainConfig, train, train_signature  # noqa: E402

STUDENT = "minilm-l6"


def _stage(name: str, out: Path, sig: str, fn) -> None:
    run_stage(name, out, sig, fn, owner="augsbert")


def teacher(args, train_file: Path, dev: Path) -> Path:
    out = args.out_dir / "teacher-ce"
    config = TrainConfig(
        student=STUDENT,
        kind="cross-encoder",
        score_field="label",
        eval=str(dev),
        eval_gold_field="label",
        epochs=args.teacher_epochs,
        batch_size=16,
        max_length=128,
        progress=False,
    )
    _stage(
        "teacher cross-encoder",
        out,
        train_signature(train_file, config),
        lambda fresh: train(train_file, out, TrainConfig(**{**config.__dict__, "overwrite": fresh})),
    )
    return out


def silver(args, method: str, train_file: Path, exclude: list[Path], teacher_dir: Path) -> Path:
    """The teacher-scored silver pairs of one sampling method (a seeded subset of `--silver` pairs)."""
    sampled = args.out_dir / f"sampled-{method}.jsonl"
    config = SampleConfig(method=method, top_k=3, exclude=[str(p) for p in exclude], progress=False)
    _stage(
        f"sample {method}",
        sampled,
        sample_signature(train_file, config),
        lambda _fresh: sample_pairs(train_file, sampled, config),
    )
    share = args.silver // 2 if method in ("bm25", "semantic") else args.silver
    subset = args.out_dir / f"subset-{method}-{share}.jsonl"
    sig = signature("augsbert-subset", {"n": share, "seed": 0}, {"input": sampled})

    def write_subset(_fresh: bool) -> None:
        lines = sampled.read_text(encoding="utf-8").splitlines()
        random.Random(0).shuffle(lines)
        subset.write_text("\n".join(lines[:share]) + "\n", encoding="utf-8")
        from llmst.stage import write_marker

        write_marker(subset, sig)

    _stage(f"subset {method}", subset, sig, write_subset)
    scored = args.out_dir / f"scored-{method}-{share}.jsonl"
    score_config = ScoreConfig(
        teachers=f"cross-encoder:{teacher_dir}", max_length=128, batch_size=64, progress=False
    )
    _stage(
        f"score {method}",
        scored,
        score_signature(subset, score_config),
        lambda fresh: score_pairs(
            subset, scored, ScoreConfig(**{**score_config.__dict__, "overwrite": fresh})
        ),
    )
    return scored


def training_file(args, name: str, gold: Path, silvers: list[Path]) -> Path:
    """Gold pairs (target: label) plus silver pairs (target: the teacher's score, as label)."""
    out = args.out_dir / f"train-{name}.jsonl"
    sig = signature(
        "augsbert-train-file", {"name": name}, {"gold": gold, **{f"s{i}": p for i, p in enumerate(silvers)}}
    )

    def write(_fresh: bool) -> None:
        rows = [json.loads(line) for line in gold.read_text(encoding="utf-8").splitlines()]
        for path in silvers:
            for line in path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                rows.append(
                    {
                        "id": record["id"],
                        "text_a": record["text_a"],
                        "text_b": record["text_b"],
                        "label": record["score"],
                    }
                )
        out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        from llmst.stage import write_marker

        write_marker(out, sig)

    _stage(f"training file {name}", out, sig, write)
    return out


def student(args, name: str, data: Path, seed: int, dev: Path, test: Path) -> dict:
    out = args.out_dir / f"seed{seed}" / name
    config = TrainConfig(
        student=STUDENT,
        kind="bi-encoder",
        loss="cosent",
        score_field="label",
        epochs=args.epochs,
        batch_size=16,
        learning_rate=2e-5,
        max_length=128,
        seed=seed,
        progress=False,
    )
    _stage(
        f"seed {seed}: bi-encoder {name}",
        out,
        train_signature(data, config),
        lambda fresh: train(data, out, TrainConfig(**{**config.__dict__, "overwrite": fresh})),
    )
    return scores(out, dev, test)


def scores(model: str | Path, dev: Path, test: Path) -> dict:
    """Spearman x 100 on dev and test, cached next to a trained model by its signature."""
    cache = (
        Path(model) / "augsbert-eval.json"
        if Path(model).is_dir() and (Path(model) / "llmst_student.json").exists()
        else None
    )
    key = read_marker(model) if cache else None
    if cache and cache.exists() and json.loads(cache.read_text()).get("signature") == key:
        return json.loads(cache.read_text())["scores"]
    result = {
        split: round(100 * evaluate_pairs(model, path, kind="bi-encoder")["spearman"], 2)
        for split, path in (("dev", dev), ("test", test))
    }
    if cache:
        cache.write_text(json.dumps({"signature": key, "scores": result}))
    return result


def _interval(values: list[float]) -> list[float] | None:
    if len(values) < 2:
        return None
    mean, sem = float(np.mean(values)), float(stats.sem(values))
    half = float(stats.t.ppf(0.975, len(values) - 1) * sem)
    return [round(mean - half, 2), round(mean + half, 2)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--silver", type=int, default=6000, help="silver pairs per variant")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--teacher-epochs", type=float, default=3.0)
    parser.add_argument("--data-dir", type=Path, default=pairs_data.DEFAULT_OUT)
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/llmst-eval/augsbert"))
    parser.add_argument("--json", type=Path, default=Path("eval/results/augsbert.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    train_file, dev, test = (pairs_data.ensure(f"stsb-{s}", args.data_dir) for s in ("train", "dev", "test"))
    teacher_dir = teacher(args, train_file, dev)
    teacher_scores = {
        split: round(100 * evaluate_pairs(teacher_dir, path, kind="cross-encoder")["spearman"], 2)
        for split, path in (("dev", dev), ("test", test))
    }
    scored = {
        m: silver(args, m, train_file, [dev, test], teacher_dir) for m in ("bm25", "semantic", "random")
    }
    files = {
        "gold": training_file(args, "gold", train_file, []),
        "augsbert": training_file(
            args, f"augsbert-{args.silver}", train_file, [scored["bm25"], scored["semantic"]]
        ),
        "random": training_file(args, f"random-{args.silver}", train_file, [scored["random"]]),
    }
    results = {"off-the-shelf": {s: [v] for s, v in scores(STUDENT, dev, test).items()}}
    for name in files:
        results[name] = {"dev": [], "test": []}
    for seed in args.seeds:
        for name, data in files.items():
            for split, value in student(args, name, data, seed, dev, test).items():
                results[name][split].append(value)
    table = ["| model | seeds | dev Spearman | test Spearman | test 95% CI |", "|---|---|---|---|---|"]
    table.append(f"| cross-encoder teacher | 1 | {teacher_scores['dev']} | {teacher_scores['test']} | |")
    summary = {}
    for name, values in results.items():
        mean = {s: round(float(np.mean(v)), 2) for s, v in values.items()}
        summary[name] = {"per_seed": values, "mean": mean, "test_ci": _interval(values["test"])}
        ci = summary[name]["test_ci"]
        table.append(f"| {name} | {len(values['test'])} | {mean['dev']} | {mean['test']} | {ci or ''} |")
    paired = {}
    for name in ("augsbert", "random"):
        diffs = [a - b for a, b in zip(results[name]["test"], results["gold"]["test"], strict=True)]
        paired[name] = {"mean": round(float(np.mean(diffs)), 2), "ci": _interval(diffs), "per_seed": diffs}
        table.append(
            f"| {name} - gold (paired) | {len(diffs)} | | {paired[name]['mean']:+.2f} | {paired[name]['ci'] or ''} |"
        )
    print("\n".join(table))
    payload = {
        "command": "python eval/augsbert.py " + " ".join(sys.argv[1:]),
        "machine": platform.processor() or platform.machine(),
        "settings": {
            "silver": args.silver,
            "epochs": args.epochs,
            "teacher_epochs": args.teacher_epochs,
            "seeds": args.seeds,
            "student": STUDENT,
            "loss": "cosent",
            "learning_rate": 2e-5,
        },
        "teacher": teacher_scores,
        "results": summary,
        "versus_gold": paired,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
