"""Selection with a finite-sample guarantee, from a small gold-labeled calibration set.

Two tools:

* `precision_threshold`: the lowest score threshold (largest coverage) whose precision is >= a target with
  probability >= 1 - delta over the draw of the calibration set. Learn-then-Test (Angelopoulos et al.,
  2021): for each candidate threshold, the null "precision < target" is tested with the exact binomial
  tail p-value (equivalently: the one-sided Clopper-Pearson lower bound is >= target), and the family is
  tested in fixed sequences from strict thresholds down, each stopping at its first failure (or with
  Bonferroni over a grid).
* `prediction_sets` (LAC, APS; split conformal prediction): sets that contain the true label with
  probability >= coverage; `select_singletons` keeps the rows whose set is a single label.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from llmst.filter._validation import (
    assert_open_unit,
    assert_score,
    assert_valid_labels,
    assert_valid_probs,
)
from llmst.filter.scores import label_quality_scores, pseudo_label_correct

TestMethod = Literal["multi-start", "fixed-sequence", "bonferroni"]
SetMethod = Literal["lac", "aps"]


class CalibrationTooSmall(ValueError):
    """The calibration set cannot support the requested guarantee, whatever its labels."""


def clopper_pearson_lower(successes: Any, trials: Any, *, delta: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound: P(true rate >= bound) >= 1 - delta. Shape of the inputs."""
    from scipy.stats import beta

    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = beta.ppf(delta, np.maximum(k, 1e-300), n - k + 1)
    return np.where((k <= 0) | (n <= 0), 0.0, bound)


def binomial_pvalue(successes: Any, trials: Any, target: float) -> np.ndarray:
    """P(Binomial(trials, target) >= successes): p-value of the null "rate < target"."""
    from scipy.stats import binom

    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    return np.where(n > 0, binom.sf(k - 1, n, target), 1.0)


def min_calibration_size(target_precision: float, delta: float) -> int:
    """Fewest calibration rows above a threshold that can certify `target_precision`: all must be correct
    and target**n <= delta."""
    assert_open_unit(target_precision, "target_precision")
    assert_open_unit(delta, "delta")
    return max(1, math.ceil(math.log(delta) / math.log(target_precision) - 1e-9))


@dataclass
class PrecisionThreshold:
    """Result of `precision_threshold`. Keep rows with score >= `threshold` (none when not `certified`)."""

    threshold: float
    certified: bool
    target_precision: float
    delta: float
    method: str
    n_calibration: int
    n_selected: int = 0
    n_correct: int = 0
    coverage: float = 0.0
    estimated_precision: float | None = None
    precision_lower_bound: float | None = None
    n_tested: int = 0
    test_level: float = 0.0
    best_lower_bound: float = 0.0
    curve: list[dict[str, float]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["threshold"] = float(self.threshold) if np.isfinite(self.threshold) else None
        return out


def _as_scores_and_correct(scores: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct)
    if scores.ndim != 1 or correct.shape != scores.shape:
        raise ValueError(
            f"scores and correct must be 1-D arrays of the same length; got {scores.shape} and {correct.shape}"
        )
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    if correct.dtype != bool and not np.isin(correct, (0, 1)).all():
        raise ValueError("correct must be boolean (pseudo-label == gold)")
    return scores, correct.astype(bool)


def _sequence_starts(n: int, target_precision: float, delta: float) -> tuple[list[int], float]:
    """Start ranks n0 * 2**j (<= n) of the multi-start procedure and the level delta / m of each sequence,
    with n0 = the smallest count that can pass at that level."""
    for m in range(1, 64):
        n0 = min_calibration_size(target_precision, delta / m)
        count = int(math.floor(math.log2(n / n0))) + 1 if n0 <= n else 0
        if count <= m:
            return [n0 * 2**j for j in range(count)], delta / m
    raise AssertionError("unreachable")  # pragma: no cover


def precision_threshold(
    scores: np.ndarray,
    correct: np.ndarray,
    *,
    target_precision: float,
    delta: float = 0.1,
    method: TestMethod = "multi-start",
    candidates: np.ndarray | None = None,
) -> PrecisionThreshold:
    """Largest-coverage threshold with precision >= `target_precision` with probability >= 1 - `delta`.

    Parameters
    ----------
    scores : np.ndarray
        Shape (n,): trust score of each calibration row (higher is more trusted).
    correct : np.ndarray
        Shape (n,), bool: the row's pseudo-label equals its gold label.
    target_precision, delta : float
        In (0, 1).
    method : {"multi-start", "fixed-sequence", "bonferroni"}
        Multiple-testing correction over the candidate thresholds (Learn-then-Test).
        `fixed-sequence` tests from the strictest threshold down at level delta and stops at the first
        failure; one unlucky error among the few most confident rows then ends the search.
        `multi-start` (default) runs m such sequences at level delta / m, starting where n0, 2 n0, 4 n0, ...
        calibration rows lie above the threshold, and keeps every threshold any of them certifies: more
        coverage when precision is flat near the top, as it is for LLM labelers.
        `bonferroni` tests every candidate at delta / m and takes the lowest certified one.
    candidates : np.ndarray, optional
        Candidate thresholds. Default: every distinct calibration score (sequences) or 20 quantiles of
        them, coverage 5% to 100% (`bonferroni`). Thresholds fixed before seeing the calibration data
        (e.g. quantiles of the unlabeled pool's scores) keep the guarantee exact.

    Returns
    -------
    PrecisionThreshold
        `threshold` is +inf and `certified` False when no candidate passes.

    Raises
    ------
    CalibrationTooSmall
        When fewer than `min_calibration_size(target_precision, delta)` calibration rows exist.
    """
    scores, correct = _as_scores_and_correct(scores, correct)
    target_precision = assert_open_unit(target_precision, "target_precision")
    delta = assert_open_unit(delta, "delta")
    if method not in ("multi-start", "fixed-sequence", "bonferroni"):
        raise ValueError(f"unknown method '{method}'; use multi-start, fixed-sequence or bonferroni")
    n = len(scores)
    n_min = min_calibration_size(target_precision, delta)
    if n < n_min:
        raise CalibrationTooSmall(
            f"the calibration set has {n} gold rows; certifying precision >= {target_precision} with "
            f"probability >= {1 - delta:g} needs at least {n_min}, even if every pseudo-label is correct"
        )
    if candidates is None and method == "bonferroni":  # a coarse grid: Bonferroni pays for every candidate
        candidates = np.quantile(scores, np.linspace(0.0, 0.95, 20), method="lower")
    grid = np.unique(scores if candidates is None else np.asarray(candidates, dtype=np.float64))[::-1]
    order = np.argsort(-scores, kind="stable")
    hits = np.concatenate([[0], np.cumsum(correct[order])])
    selected = np.searchsorted(-scores[order], -grid, side="right")  # rows with score >= threshold
    correct_counts = hits[selected]
    pvalues = binomial_pvalue(correct_counts, selected, target_precision)
    rejected = np.zeros(len(grid), dtype=bool)
    if method == "bonferroni":
        tested = selected >= n_min
        level = delta / max(int(tested.sum()), 1)
        rejected = tested & (pvalues <= level)
    else:
        starts, level = (
            _sequence_starts(n, target_precision, delta) if method == "multi-start" else ([n_min], delta)
        )
        tested = np.zeros(len(grid), dtype=bool)
        for start in starts:
            for i in np.flatnonzero(selected >= start):  # strictest threshold first
                tested[i] = True
                if pvalues[i] > level:
                    break
                rejected[i] = True
    n_tested = int(tested.sum())
    lower = clopper_pearson_lower(correct_counts, selected, delta=level)
    curve = [
        {
            "threshold": float(grid[i]),
            "n": int(selected[i]),
            "correct": int(correct_counts[i]),
            "coverage": float(selected[i] / n),
            "precision": float(correct_counts[i] / selected[i]) if selected[i] else 1.0,
            "lower_bound": float(lower[i]),
            "p_value": float(pvalues[i]),
            "tested": bool(tested[i]),
            "certified": bool(rejected[i]),
        }
        for i in range(len(grid))
    ]
    result = PrecisionThreshold(
        threshold=float("inf"),
        certified=False,
        target_precision=target_precision,
        delta=delta,
        method=method,
        n_calibration=n,
        n_tested=n_tested,
        test_level=level,
        best_lower_bound=float(lower[tested].max()) if n_tested else 0.0,
        curve=curve,
    )
    if rejected.any():
        chosen = int(np.flatnonzero(rejected)[-1])  # lowest certified threshold: largest coverage
        result.threshold = float(grid[chosen])
        result.certified = True
        result.n_selected = int(selected[chosen])
        result.n_correct = int(correct_counts[chosen])
        result.coverage = float(selected[chosen] / n)
        result.estimated_precision = float(correct_counts[chosen] / selected[chosen])
        result.precision_lower_bound = float(lower[chosen])
    return result


def certify_precision(
    cal_probs: np.ndarray,
    cal_labels: np.ndarray,
    *,
    target_precision: float,
    delta: float = 0.1,
    score: str = "confidence",
    method: TestMethod = "multi-start",
) -> PrecisionThreshold:
    """`precision_threshold` on a gold calibration set: trust scores from `cal_probs` (n, K), and a row is
    correct when its pseudo-label (argmax) equals `cal_labels` (n,) (`scores.pseudo_label_correct`).

    The returned `threshold` applies to `label_quality_scores(probs, score=score)` (negative entropy for
    `entropy`): keep rows with a score >= threshold.
    """
    cal_probs = assert_valid_probs(cal_probs, name="cal_probs")
    cal_labels = assert_valid_labels(cal_labels, cal_probs.shape[1], n=len(cal_probs), name="cal_labels")
    assert_score(score)
    return precision_threshold(
        label_quality_scores(cal_probs, score=score),
        pseudo_label_correct(cal_probs, cal_labels),
        target_precision=target_precision,
        delta=delta,
        method=method,
    )


def select_with_precision_guarantee(
    probs: np.ndarray,
    *,
    cal_probs: np.ndarray,
    cal_labels: np.ndarray,
    target_precision: float,
    delta: float = 0.1,
    score: str = "confidence",
    method: TestMethod = "multi-start",
) -> np.ndarray:
    """Keep rows above the threshold certified by `certify_precision` on a gold calibration set.

    Parameters
    ----------
    probs : np.ndarray
        Shape (N, K): rows to select from.
    cal_probs : np.ndarray
        Shape (n, K): the same labeler's probabilities on the calibration rows.
    cal_labels : np.ndarray
        Shape (n,): gold class indexes of the calibration rows.

    Returns
    -------
    np.ndarray
        Boolean mask of shape (N,); all False when no threshold is certified.
    """
    probs = assert_valid_probs(probs)
    if np.shape(cal_probs)[-1] != probs.shape[1]:
        raise ValueError(f"cal_probs has {np.shape(cal_probs)[-1]} classes, probs {probs.shape[1]}")
    result = certify_precision(
        cal_probs, cal_labels, target_precision=target_precision, delta=delta, score=score, method=method
    )
    return label_quality_scores(probs, score=score) >= result.threshold


# ---- split conformal prediction sets ----


def nonconformity_scores(probs: np.ndarray, labels: np.ndarray, *, method: SetMethod = "lac") -> np.ndarray:
    """Nonconformity of each (row, label), shape (N,).

    `lac`: 1 - p(label). `aps`: total probability of the labels ranked at or above `label`.
    """
    probs = assert_valid_probs(probs)
    labels = assert_valid_labels(labels, probs.shape[1], n=len(probs))
    rows = np.arange(len(probs))
    if method == "lac":
        return 1.0 - probs[rows, labels]
    if method == "aps":
        return _aps_cumulative(probs)[rows, labels]
    raise ValueError(f"unknown conformal method '{method}'; use lac or aps")


def _aps_cumulative(probs: np.ndarray) -> np.ndarray:
    """(N, K): for each label, the mass of the labels ranked at or above it (ties broken by index)."""
    order = np.lexsort((np.broadcast_to(np.arange(probs.shape[1]), probs.shape), -probs), axis=1)
    ranked = np.take_along_axis(probs, order, axis=1)
    cumulative = np.cumsum(ranked, axis=1)
    out = np.empty_like(probs)
    np.put_along_axis(out, order, cumulative, axis=1)
    return out


def conformal_quantile(cal_scores: np.ndarray, *, coverage: float) -> float:
    """The ceil((n+1) * coverage) / n empirical quantile of calibration nonconformity scores.

    Raises
    ------
    CalibrationTooSmall
        When n < 1 / (1 - coverage) - 1, so that no finite quantile gives the coverage.
    """
    cal_scores = np.asarray(cal_scores, dtype=np.float64)
    coverage = assert_open_unit(coverage, "coverage")
    n = len(cal_scores)
    rank = math.ceil((n + 1) * coverage - 1e-9)
    if rank > n:
        needed = math.ceil(coverage / (1 - coverage) - 1e-9)
        raise CalibrationTooSmall(
            f"the calibration set has {n} gold rows; conformal sets with coverage {coverage:g} need at least "
            f"{needed}"
        )
    return float(np.sort(cal_scores)[rank - 1])


def prediction_sets(
    probs: np.ndarray,
    *,
    cal_probs: np.ndarray,
    cal_labels: np.ndarray,
    coverage: float = 0.9,
    method: SetMethod = "lac",
) -> np.ndarray:
    """Split conformal prediction sets: each contains the true label with probability >= `coverage`.

    Parameters
    ----------
    probs : np.ndarray
        Shape (N, K).
    cal_probs : np.ndarray
        Shape (n, K), exchangeable with `probs` (same labeler, same distribution).
    cal_labels : np.ndarray
        Shape (n,): gold class indexes.
    coverage : float
        1 - alpha.
    method : {"lac", "aps"}
        LAC (Sadinle et al., 2019) gives the smallest sets; APS (Romano et al., 2020) adapts their size to
        the row's difficulty. APS sets always hold the top label.

    Returns
    -------
    np.ndarray
        Boolean membership of shape (N, K).
    """
    probs = assert_valid_probs(probs)
    cal_probs = assert_valid_probs(cal_probs, name="cal_probs")
    if cal_probs.shape[1] != probs.shape[1]:
        raise ValueError(f"cal_probs has {cal_probs.shape[1]} classes, probs {probs.shape[1]}")
    qhat = conformal_quantile(nonconformity_scores(cal_probs, cal_labels, method=method), coverage=coverage)
    if method == "lac":
        return 1.0 - probs <= qhat + 1e-12
    cumulative = _aps_cumulative(probs)
    sets = cumulative <= qhat + 1e-12
    sets[np.arange(len(probs)), probs.argmax(axis=1)] = True
    return sets


def select_singletons(
    probs: np.ndarray,
    *,
    cal_probs: np.ndarray,
    cal_labels: np.ndarray,
    coverage: float = 0.9,
    method: SetMethod = "lac",
) -> np.ndarray:
    """Keep rows whose conformal prediction set is exactly one label (then it is the argmax label).

    Returns
    -------
    np.ndarray
        Boolean mask of shape (N,).
    """
    sets = prediction_sets(
        probs, cal_probs=cal_probs, cal_labels=cal_labels, coverage=coverage, method=method
    )
    return sets.sum(axis=1) == 1
