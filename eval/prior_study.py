"""Which prior should `--calibrate prior` aim at? Rescores labeled suite outputs (no model runs) under
several targets and compares macro-F1 on the dev slices.

    python eval/prior_study.py [--config adhoc-classify] [--model NAME] [--limit N]

Reads `eval/suite.py` outputs: `<config>` (its records carry the fitted bias, so the raw label log-probs
are recovered exactly up to a per-row constant) and `<config>-contextual` when present (its bias is the
content-free one). Targets:
- `none`: raw scores; `uniform`: the default (mean prediction uniform); `contextual`: content-free bias;
- `em`: the EM prior estimate over content-free-corrected posteriors (`--prior em`, Saerens et al. 2002);
- `em-map`: EM with a Dirichlet prior of n/K pseudo-rows per label (shrunk toward uniform);
- `mixture`: a K-component Gaussian mixture (tied covariance) over the row-centred label log-probs, each
  component matched to the label it scores highest (Hungarian); its weights are the estimate: a label-shift
  estimate that, unlike EM, does not assume the posteriors are calibrated;
- `true` and `true-half`: the slice's own gold label shares, and halfway (in log space) from uniform to
  them: oracles no unlabeled run has, an upper reference for any estimate (`llmst tune`'s `prior-gold` and
  `prior-gold-half` estimate them from gold rows).
Prints a table (macro-F1 per task, means, tasks above the majority baseline, tasks more than 1 point under
`none`; for binary tasks the ROC AUC of the raw label log-odds, which bounds what any prior can do) and
writes eval/results/prior_study_<config>_<model>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite_data  # noqa: E402

from llmst.label.calibrate import em_prior, prior_bias, softmax  # noqa: E402
from llmst.models import DEFAULT_LABELER  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
LABELED = Path("/tmp/llmst-eval/suite/labeled")
TARGETS = ("none", "uniform", "contextual", "em", "em-map", "mixture", "true", "true-half")


def raw_scores(
    path: Path, labels: tuple[str, ...], limit: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label log-probs without the fitted bias, the bias, gold indices) of a labeled suite file."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:limit]
    bias = np.array([rows[0].get("calibration_bias", {}).get(n, 0.0) for n in labels])
    probs = np.array([[r["probs"][n] for n in labels] for r in rows])
    gold = np.array([labels.index(r["gold"]) for r in rows])
    return np.log(np.clip(probs, 1e-300, None)) - bias, bias, gold


def map_em(posteriors: np.ndarray, pseudo: float, iterations: int = 1000) -> np.ndarray:
    """EM for the prior with a symmetric Dirichlet of `pseudo` extra rows per label (a MAP estimate)."""
    n, k = posteriors.shape
    prior = np.full(k, 1.0 / k)
    for _ in range(iterations):
        adjusted = posteriors * (prior * k)
        adjusted /= adjusted.sum(axis=1, keepdims=True)
        new = (adjusted.sum(axis=0) + pseudo) / (n + pseudo * k)
        if np.abs(new - prior).max() < 1e-10:
            return new
        prior = new
    return prior


def mixture_prior(logprobs: np.ndarray, seed: int = 0) -> np.ndarray:
    """Label shares from a tied-covariance Gaussian mixture over row-centred label log-probs."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.mixture import GaussianMixture

    k = logprobs.shape[1]
    centred = logprobs - logprobs.mean(axis=1, keepdims=True)
    mixture = GaussianMixture(k, covariance_type="tied", random_state=seed, n_init=3).fit(centred)
    components, labels = linear_sum_assignment(-mixture.means_)  # component -> the label it scores highest
    prior = np.zeros(k)
    prior[labels] = mixture.weights_[components]
    return prior


def shares(p: np.ndarray, power: float = 1.0) -> np.ndarray:
    p = np.clip(p, 1e-3, None) ** power
    return p / p.sum()


def study(task: str, args: argparse.Namespace) -> dict[str, float]:
    labels = suite_data.SUITE[task].labels
    base = LABELED / args.model
    logprobs, _, gold = raw_scores(base / args.config / f"{task}.dev.jsonl", labels, args.limit)
    ctx_path = base / f"{args.config}-contextual" / f"{task}.dev.jsonl"
    context = raw_scores(ctx_path, labels, args.limit)[1] if ctx_path.exists() else np.zeros(len(labels))
    k, n = len(labels), len(gold)
    corrected = softmax(logprobs + context)
    true = np.bincount(gold, minlength=k) / n
    targets = {
        "none": None,
        "uniform": np.full(k, 1.0 / k),
        "em": shares(em_prior(corrected)),
        "em-map": shares(map_em(corrected, n / k)),
        "mixture": shares(mixture_prior(logprobs)),
        "true": shares(true),
        "true-half": shares(true, 0.5),
    }
    out = {}
    for name in TARGETS:
        if name == "contextual":
            scores = logprobs + context
        elif targets[name] is None:
            scores = logprobs
        else:
            scores = logprobs + prior_bias(logprobs, targets[name])
        out[name] = float(
            f1_score(gold, scores.argmax(1), labels=list(range(k)), average="macro", zero_division=0)
        )
    if k == 2:
        from sklearn.metrics import roc_auc_score

        out["auc"] = float(roc_auc_score(gold, logprobs[:, 1] - logprobs[:, 0]))
    majority = np.full(n, np.bincount(gold, minlength=k).argmax())
    out["majority"] = float(f1_score(gold, majority, labels=list(range(k)), average="macro", zero_division=0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="adhoc-classify")
    parser.add_argument("--model", default=DEFAULT_LABELER)
    parser.add_argument("--limit", type=int, default=None, help="first N rows of each dev slice")
    parser.add_argument("--tasks", nargs="+", default=list(suite_data.SUITE))
    args = parser.parse_args()
    results = {task: study(task, args) for task in args.tasks}
    head = " | ".join(TARGETS)
    lines = [f"Prior targets, `{args.config}`, {args.model}, dev slices" + (f" (first {args.limit} rows)" if args.limit else ""),
             "", f"| task | AUC | majority | {head} |", "|---|---|---|" + "---|" * len(TARGETS)]  # fmt: skip
    for task, r in results.items():
        auc = f"{r['auc']:.3f}" if "auc" in r else ""
        lines.append(
            f"| {task} | {auc} | {r['majority']:.3f} | " + " | ".join(f"{r[t]:.3f}" for t in TARGETS) + " |"
        )
    mean = {t: np.mean([r[t] for r in results.values()]) for t in (*TARGETS, "majority")}
    above = {t: sum(r[t] > r["majority"] for r in results.values()) for t in TARGETS}
    worse = {t: sum(r[t] < r["none"] - 0.01 for r in results.values()) for t in TARGETS}
    lines.append(
        f"| **mean** | | {mean['majority']:.3f} | " + " | ".join(f"{mean[t]:.3f}" for t in TARGETS) + " |"
    )
    lines.append("| above majority | | | " + " | ".join(str(above[t]) for t in TARGETS) + " |")
    lines.append("| >1 pt under none | | | " + " | ".join(str(worse[t]) for t in TARGETS) + " |")
    table = "\n".join(lines)
    print(table)
    out = RESULTS / f"prior_study_{args.config}_{args.model}.json"
    out.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "results": results, "table": table}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
