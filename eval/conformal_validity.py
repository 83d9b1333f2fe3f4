"""Does the conformal precision guarantee hold on real LLM pseudo-labels?

    python eval/conformal_validity.py [--draws 20] [--cal-size 200] [--target 0.95] [--delta 0.1]
                                      [--calibrate prior] [--out eval/results/conformal_validity.json]

Labels SST-2 test with the default labeler (shipped `sentiment` task, zero-shot), and SST-2 dev with the
test labels' fitted calibration (`llmst label --calibration-from`, so calibration and test rows are scored
by the same function; `--refit-dev` fits dev on its own rows, as before). Then, for each of
`--draws` seeded draws of a `--cal-size`-row calibration set from SST-2 dev (gold known), certifies the
largest-coverage confidence threshold whose precision is >= target with probability >= 1 - delta
(`llmst.filter.precision_threshold`), applies it to SST-2 test, and measures the realized precision and
coverage there. Validity: the realized precision falls below the target in at most about delta of the draws.

With `--dev-labeled DEV.jsonl --test-labeled TEST.jsonl --labeler NAME`, any other labeler's output is used
instead (e.g. the dev-chosen prompt ensemble written by eval/fewshot_ensemble.py and eval/label_accuracy.py):

    python eval/conformal_validity.py --dev-labeled /tmp/llmst-eval/ensemble/f0-all-zero.jsonl \
        --test-labeled /tmp/llmst-eval/final/labeled/sst2-ensemble.jsonl --labeler ensemble \
        --out eval/results/conformal_validity_ensemble.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import ensure  # noqa: E402

from llmst import stage  # noqa: E402
from llmst.filter import precision_threshold  # noqa: E402
from llmst.label.config import LabelConfig  # noqa: E402
from llmst.label.run import label_corpus, label_signature  # noqa: E402
from llmst.models import DEFAULT_LABELER  # noqa: E402
from llmst.readers import read_jsonl  # noqa: E402


def label_split(
    split: str,
    work: Path,
    calibrate: str,
    cache_path: str,
    calibration_from: Path | None = None,
    model: str = DEFAULT_LABELER,
) -> Path:
    """Label an SST-2 split (reused while its signature matches); with `calibration_from`, with that
    file's fitted calibration instead of one fitted on the split itself."""
    tag = "pool-calibration" if calibration_from else calibrate
    labeled = work / (f"{split}-{tag}.jsonl" if model == DEFAULT_LABELER else f"{model}/{split}-{tag}.jsonl")
    labeled.parent.mkdir(parents=True, exist_ok=True)
    config = LabelConfig(
        task="sentiment",
        model=model,
        calibrate=calibrate,
        calibration_from=str(calibration_from) if calibration_from else None,
        cache_path=cache_path,
        progress=False,
    )
    if not stage.is_current(labeled, label_signature(ensure(split), config)):
        label_corpus(ensure(split), labeled, replace(config, overwrite=True))
    return labeled


def labeled_arrays(labeled: Path) -> tuple[np.ndarray, np.ndarray]:
    """Confidence and correctness (pseudo-label == gold) of every row of a labeled file."""
    rows = read_jsonl(labeled)
    confidence = np.array([r["confidence"] for r in rows])
    correct = np.array([r["label"] == r["gold"] for r in rows])
    return confidence, correct


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--cal-size", type=int, default=200)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--calibrate", default="prior", choices=["none", "contextual", "prior"])
    parser.add_argument(
        "--method", default="multi-start", choices=["multi-start", "fixed-sequence", "bonferroni"]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dev-labeled", type=Path, default=None, help="SST-2 dev labeled by another labeler")
    parser.add_argument("--test-labeled", type=Path, default=None, help="SST-2 test labeled by the same")
    parser.add_argument("--labeler", default=None, help="name of that labeler, for the report")
    parser.add_argument(
        "--refit-dev", action="store_true", help="calibrate dev on its own rows (before --calibration-from)"
    )
    parser.add_argument("--model", default=DEFAULT_LABELER, help="the labeler (llmst label --model)")
    parser.add_argument("--cache-path", default="/tmp/llmst-eval/cache.sqlite")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/llmst-eval/conformal"))
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "conformal_validity.json"
    )
    args = parser.parse_args()

    args.work_dir.mkdir(parents=True, exist_ok=True)
    if (args.dev_labeled is None) != (args.test_labeled is None):
        raise SystemExit("give both --dev-labeled and --test-labeled, or neither")
    test_file = args.test_labeled or label_split(
        "sst2-test", args.work_dir, args.calibrate, args.cache_path, model=args.model
    )
    # the calibration rows are scored like the rows the threshold is applied to: with the test corpus's
    # fitted calibration (`--calibration-from`), not one refitted on dev (unless --refit-dev, the old way)
    dev_file = args.dev_labeled or label_split(
        "sst2-dev",
        args.work_dir,
        args.calibrate,
        args.cache_path,
        None if args.refit_dev else test_file,
        model=args.model,
    )
    dev_conf, dev_correct = labeled_arrays(dev_file)
    test_conf, test_correct = labeled_arrays(test_file)
    rng = np.random.default_rng(args.seed)
    draws = []
    for draw in range(args.draws):
        pick = rng.choice(len(dev_conf), size=args.cal_size, replace=False)
        result = precision_threshold(
            dev_conf[pick],
            dev_correct[pick],
            target_precision=args.target,
            delta=args.delta,
            method=args.method,
        )
        kept = test_conf >= result.threshold if result.certified else np.zeros(len(test_conf), dtype=bool)
        precision = float(test_correct[kept].mean()) if kept.any() else None
        draws.append(
            {
                "draw": draw,
                "certified": result.certified,
                "threshold": float(result.threshold),
                "calibration_estimated_precision": result.estimated_precision,
                "calibration_lower_bound": result.precision_lower_bound,
                "test_coverage": float(kept.mean()),
                "test_precision": precision,
            }
        )
    below = sum(1 for d in draws if d["test_precision"] is not None and d["test_precision"] < args.target)
    coverage = [d["test_coverage"] for d in draws]
    summary = {
        "labeler": args.labeler or f"{args.model}, task sentiment, zero-shot, calibrate={args.calibrate}",
        "labeled_files": [str(dev_file), str(test_file)],
        "dev_calibration": "own fit (--refit-dev)"
        if args.refit_dev
        else "the test corpus's (--calibration-from)",
        "labeler_test_accuracy": float(test_correct.mean()),
        "draws": args.draws,
        "cal_size": args.cal_size,
        "target_precision": args.target,
        "delta": args.delta,
        "method": args.method,
        "seed": args.seed,
        "certified_draws": sum(d["certified"] for d in draws),
        "draws_below_target": below,
        "fraction_below_target": below / args.draws,
        "mean_test_coverage": float(np.mean(coverage)),
        "min_test_coverage": float(np.min(coverage)),
        "max_test_coverage": float(np.max(coverage)),
        "mean_test_precision": float(
            np.mean([d["test_precision"] for d in draws if d["test_precision"] is not None])
        )
        if any(d["test_precision"] is not None for d in draws)
        else None,
    }
    print("| draw | certified | threshold | test coverage | test precision |")
    print("|---|---|---|---|---|")
    for d in draws:
        precision = "-" if d["test_precision"] is None else f"{d['test_precision']:.3f}"
        print(
            f"| {d['draw']} | {d['certified']} | {d['threshold']:.4f} | {d['test_coverage']:.3f} | {precision} |"
        )
    print(json.dumps(summary, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "draws": draws}, indent=2) + "\n")


if __name__ == "__main__":
    main()
