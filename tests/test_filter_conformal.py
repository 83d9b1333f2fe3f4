"""Guaranteed selection: Learn-then-Test thresholds against a brute force and in simulation (realized
precision below target in at most delta of the draws); split conformal prediction sets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta, binom

from llmst.filter import (
    CalibrationTooSmall,
    binomial_pvalue,
    clopper_pearson_lower,
    conformal_quantile,
    min_calibration_size,
    nonconformity_scores,
    precision_threshold,
    prediction_sets,
    select_singletons,
    select_with_precision_guarantee,
)


def test_clopper_pearson_matches_the_binomial_tail():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 400))
        k = int(rng.integers(1, n + 1))
        delta = float(rng.uniform(0.01, 0.3))
        lower = float(clopper_pearson_lower(k, n, delta=delta))
        assert binom.sf(k - 1, n, lower) == pytest.approx(delta, rel=1e-6)  # the bound inverts the test
        # the test "precision < p0" rejects at level delta exactly when the bound clears p0
        for p0 in (lower - 1e-6, lower + 1e-6):
            if 0 < p0 < 1:
                assert (binomial_pvalue(k, n, p0) <= delta) == (lower >= p0)
    assert clopper_pearson_lower(0, 10, delta=0.1) == 0.0
    assert min_calibration_size(0.9, 0.1) == 22  # 0.9**22 = 0.098 <= 0.1 < 0.9**21
    assert min_calibration_size(0.95, 0.05) == 59


def brute_force_fixed_sequence(scores, correct, target, delta):
    """Walk every distinct calibration score from the top; certify while Clopper-Pearson >= target."""
    n_min = math.ceil(math.log(delta) / math.log(target) - 1e-9)
    best = math.inf
    for threshold in sorted(set(scores.tolist()), reverse=True):
        kept = scores >= threshold
        n, k = int(kept.sum()), int(correct[kept].sum())
        if n < n_min:
            continue
        if beta.ppf(delta, k, n - k + 1) < target:
            break
        best = threshold
    return best


def brute_force_bonferroni(scores, correct, target, delta, grid):
    n_min = math.ceil(math.log(delta) / math.log(target) - 1e-9)
    tested = [t for t in grid if (scores >= t).sum() >= n_min]
    best = math.inf
    for threshold in tested:
        kept = scores >= threshold
        n, k = int(kept.sum()), int(correct[kept].sum())
        if k and beta.ppf(delta / len(tested), k, n - k + 1) >= target:
            best = min(best, threshold)
    return best


def brute_force_multi_start(scores, correct, target, delta):
    for m in range(1, 64):
        n0 = math.ceil(math.log(delta / m) / math.log(target) - 1e-9)
        starts = [n0 * 2**j for j in range(64) if n0 * 2**j <= len(scores)]
        if len(starts) <= m:
            break
    best = math.inf
    for start in starts:
        for threshold in sorted(set(scores.tolist()), reverse=True):
            kept = scores >= threshold
            n, k = int(kept.sum()), int(correct[kept].sum())
            if n < start:
                continue
            if k == 0 or beta.ppf(delta / m, k, n - k + 1) < target:
                break
            best = min(best, threshold)
    return best


def draw_uniform(rng, n):
    """Scores uniform on [0, 1], P(correct | s) = s: precision above t is (1 + t) / 2."""
    scores = rng.uniform(size=n)
    return scores, rng.uniform(size=n) < scores


def test_threshold_matches_brute_force():
    rng = np.random.default_rng(1)
    for trial in range(25):
        n = int(rng.integers(60, 250))
        scores, correct = draw_uniform(rng, n)
        scores = np.round(scores, 2)  # ties between scores
        target, delta = [(0.8, 0.1), (0.7, 0.2), (0.85, 0.05)][trial % 3]
        fixed = precision_threshold(
            scores, correct, target_precision=target, delta=delta, method="fixed-sequence"
        )
        assert fixed.threshold == brute_force_fixed_sequence(scores, correct, target, delta)
        multi = precision_threshold(scores, correct, target_precision=target, delta=delta)
        assert multi.threshold == brute_force_multi_start(scores, correct, target, delta)
        grid = np.linspace(0.3, 0.95, 14)
        bonferroni = precision_threshold(
            scores, correct, target_precision=target, delta=delta, method="bonferroni", candidates=grid
        )
        assert bonferroni.threshold == brute_force_bonferroni(scores, correct, target, delta, grid)
        for result in (fixed, multi, bonferroni):
            if result.certified:
                kept = scores >= result.threshold
                assert result.n_selected == kept.sum()
                assert result.estimated_precision == pytest.approx(correct[kept].mean())
                assert result.precision_lower_bound >= target


def uniform_precision(threshold):
    return (1 + min(threshold, 1.0)) / 2


def mixture_draw(rng, n):
    """LLM-like: 70% of rows very confident (score in [0.95, 1], 98% correct), the rest P(correct) = score."""
    high = rng.uniform(size=n) < 0.7
    scores = np.where(high, rng.uniform(0.95, 1.0, size=n), rng.uniform(0.5, 0.95, size=n))
    return scores, rng.uniform(size=n) < np.where(high, 0.98, scores)


def mixture_precision(t):
    """Exact precision of the rows with score >= t under `mixture_draw`."""
    if t >= 1:
        return 0.98
    if t >= 0.95:
        return 0.98
    low = max(t, 0.5)
    mass = 0.7 + 0.3 * (0.95 - low) / 0.45
    correct = 0.7 * 0.98 + 0.3 / 0.45 * (0.95**2 - low**2) / 2
    return correct / mass


@pytest.mark.parametrize("method", ["multi-start", "fixed-sequence", "bonferroni"])
@pytest.mark.parametrize(
    "draw,precision,target,delta,n",
    [
        (draw_uniform, uniform_precision, 0.8, 0.2, 100),
        (draw_uniform, uniform_precision, 0.9, 0.1, 300),
        (mixture_draw, mixture_precision, 0.95, 0.1, 200),
    ],
)
def test_guarantee_holds_in_simulation(method, draw, precision, target, delta, n):
    """Over many calibration draws, the realized precision of the chosen threshold is below target in at
    most delta of them."""
    rng = np.random.default_rng(7)
    draws, failures, certified = 300, 0, 0
    for _ in range(draws):
        scores, correct = draw(rng, n)
        result = precision_threshold(scores, correct, target_precision=target, delta=delta, method=method)
        certified += result.certified
        failures += result.certified and precision(result.threshold) < target
    assert failures / draws <= delta
    assert certified > 0  # the procedure is not vacuous


def test_unreachable_target_is_rarely_certified():
    """Precision is at most 0.85 at every threshold: certifying 0.9 must fail in >= 1 - delta of draws."""
    rng = np.random.default_rng(3)
    certified = 0
    for _ in range(200):
        scores = rng.uniform(size=200)
        correct = rng.uniform(size=200) < 0.85
        certified += precision_threshold(scores, correct, target_precision=0.9, delta=0.1).certified
    assert certified / 200 <= 0.1


def test_multi_start_beats_fixed_sequence_when_precision_is_flat_at_the_top():
    rng = np.random.default_rng(11)
    multi, fixed = [], []
    for _ in range(60):
        scores, correct = mixture_draw(rng, 300)
        for out, method in ((multi, "multi-start"), (fixed, "fixed-sequence")):
            result = precision_threshold(scores, correct, target_precision=0.95, delta=0.1, method=method)
            out.append(result.coverage)
    assert np.mean(multi) > np.mean(fixed)


def test_too_small_calibration_raises():
    scores, correct = np.linspace(0, 1, 40), np.ones(40, dtype=bool)
    with pytest.raises(CalibrationTooSmall, match="needs at least 59"):
        precision_threshold(scores, correct, target_precision=0.95, delta=0.05)
    result = precision_threshold(np.linspace(0, 1, 100), np.zeros(100, dtype=bool), target_precision=0.9)
    assert not result.certified and result.threshold == math.inf and result.best_lower_bound == 0.0
    with pytest.raises(ValueError, match="same length"):
        precision_threshold(np.ones(3), np.ones(4), target_precision=0.9)
    with pytest.raises(ValueError, match="target_precision"):
        precision_threshold(np.ones(3), np.ones(3), target_precision=1.0)


def test_select_with_precision_guarantee_on_probs():
    rng = np.random.default_rng(5)
    n = 3000
    top = rng.uniform(0.5, 1.0, size=n)
    probs = np.stack([top, 1 - top], axis=1)
    gold = np.where(rng.uniform(size=n) < top, 0, 1)  # calibrated: P(label 0 correct) = top
    cal, pool = slice(0, 400), slice(400, n)
    mask = select_with_precision_guarantee(
        probs[pool], cal_probs=probs[cal], cal_labels=gold[cal], target_precision=0.85, delta=0.1
    )
    assert 0 < mask.sum() < n - 400
    assert (gold[pool][mask] == 0).mean() >= 0.85


def test_conformal_quantile_and_sets_by_hand():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert conformal_quantile(scores, coverage=0.8) == 0.8  # ceil(10 * 0.8) = 8th smallest
    with pytest.raises(CalibrationTooSmall, match="need at least 19"):
        conformal_quantile(scores, coverage=0.95)
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.45, 0.05]])
    labels = np.array([1, 0])
    np.testing.assert_allclose(nonconformity_scores(probs, labels, method="lac"), [0.8, 0.5])
    np.testing.assert_allclose(nonconformity_scores(probs, labels, method="aps"), [0.9, 0.5])
    cal_probs = np.tile([[0.6, 0.3, 0.1]], (9, 1))
    cal_labels = np.array([0] * 7 + [1, 1])  # LAC scores: seven 0.4, two 0.7 -> quantile 0.7 at 80%
    sets = prediction_sets(probs, cal_probs=cal_probs, cal_labels=cal_labels, coverage=0.8)
    assert sets.tolist() == [[True, False, False], [True, True, False]]  # keep p >= 0.3
    assert select_singletons(probs, cal_probs=cal_probs, cal_labels=cal_labels, coverage=0.8).tolist() == [
        True,
        False,
    ]


@pytest.mark.parametrize("method", ["lac", "aps"])
def test_conformal_sets_reach_coverage(method):
    rng = np.random.default_rng(9)
    covered = []
    for _ in range(40):
        logits = rng.normal(size=(1200, 4)) * 2
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        gold = np.array([rng.choice(4, p=p) for p in probs])  # the labeler is calibrated
        sets = prediction_sets(
            probs[200:], cal_probs=probs[:200], cal_labels=gold[:200], coverage=0.9, method=method
        )
        covered.append(sets[np.arange(1000), gold[200:]].mean())
        if method == "aps":
            assert sets[np.arange(1000), probs[200:].argmax(axis=1)].all()
    assert np.mean(covered) >= 0.89


def test_the_simulation_catches_an_invalid_procedure():
    """Control: taking the lowest threshold whose calibration precision reaches the target (no bound)
    fails the guarantee check, so the check above has power."""
    rng = np.random.default_rng(7)
    failures = 0
    for _ in range(300):
        scores, correct = draw_uniform(rng, 300)
        curve = precision_threshold(scores, correct, target_precision=0.9, delta=0.1).curve
        passing = [p["threshold"] for p in curve if p["precision"] >= 0.9 and p["n"] >= 22]
        failures += bool(passing) and uniform_precision(min(passing)) < 0.9
    assert failures / 300 > 0.1
