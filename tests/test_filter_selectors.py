"""Selectors on synthetic arrays with known answers: threshold, per-class, balanced, curriculum, agreement,
learned."""

from __future__ import annotations

import numpy as np
import pytest

from llmst.filter import (
    agreement_counts,
    balanced_quotas,
    correctness_features,
    curriculum_fraction,
    entropy,
    label_quality_scores,
    margin,
    per_class_thresholds,
    select_agreement,
    select_balanced,
    select_by_threshold,
    select_curriculum,
    select_learned,
    select_per_class,
    target_prior,
)

PROBS = np.array(
    [
        [0.95, 0.05],  # class 0, very confident
        [0.70, 0.30],  # class 0
        [0.55, 0.45],  # class 0, unsure
        [0.20, 0.80],  # class 1
        [0.40, 0.60],  # class 1, unsure
    ]
)


def random_probs(n: int, k: int, seed: int, class_weights=None) -> np.ndarray:
    """Peaked random distributions whose argmax follows `class_weights`."""
    rng = np.random.default_rng(seed)
    top = rng.choice(k, size=n, p=class_weights)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), top] += rng.uniform(0.5, 4.0, size=n)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def test_scores_by_hand():
    np.testing.assert_allclose(label_quality_scores(PROBS), [0.95, 0.70, 0.55, 0.80, 0.60])
    np.testing.assert_allclose(margin(PROBS), [0.90, 0.40, 0.10, 0.60, 0.20])
    expected_entropy = -(PROBS * np.log(PROBS)).sum(axis=1)
    np.testing.assert_allclose(entropy(PROBS), expected_entropy)
    np.testing.assert_allclose(label_quality_scores(PROBS, score="entropy"), -expected_entropy)


def test_threshold_on_each_score():
    assert select_by_threshold(PROBS, threshold=0.7).tolist() == [True, True, False, True, False]
    assert select_by_threshold(PROBS, threshold=0.5, score="margin").tolist() == [
        True,
        False,
        False,
        True,
        False,
    ]
    cut = float(entropy(PROBS)[3])  # keep rows at most as uncertain as row 3
    assert select_by_threshold(PROBS, threshold=cut, score="entropy").tolist() == [
        True,
        False,
        False,
        True,
        False,
    ]


def test_per_class_thresholds_are_mean_confidence_of_predicted_rows():
    thresholds = per_class_thresholds(PROBS)
    np.testing.assert_allclose(thresholds, [(0.95 + 0.70 + 0.55) / 3, (0.80 + 0.60) / 2])
    assert select_per_class(PROBS).tolist() == [True, False, False, True, False]
    # a global threshold of 0.9 would drop every row of the hard class 1; per class, it keeps its best
    skewed = np.array([[0.99, 0.01], [0.98, 0.02], [0.93, 0.07], [0.35, 0.65], [0.30, 0.70]])
    assert select_by_threshold(skewed, threshold=0.9)[3:].sum() == 0
    assert select_per_class(skewed).tolist() == [True, True, False, False, True]
    assert np.isnan(per_class_thresholds(np.array([[0.9, 0.1, 0.0]]))[1])


@pytest.mark.parametrize(
    "prior,shares",
    [("uniform", [1 / 3, 1 / 3, 1 / 3]), ([0.5, 0.3, 0.2], [0.5, 0.3, 0.2]), ([2, 1, 1], [0.5, 0.25, 0.25])],
)
def test_balanced_keeps_each_class_within_5_points_of_target(prior, shares):
    probs = random_probs(3000, 3, seed=1, class_weights=[0.75, 0.2, 0.05])  # heavily skewed pseudo-labels
    for fraction in (0.05, 0.1, 0.3):
        mask = select_balanced(probs, prior=prior, fraction=fraction)
        kept = np.bincount(probs[mask].argmax(axis=1), minlength=3) / mask.sum()
        assert np.abs(kept - shares).max() <= 0.05, (fraction, kept)
        assert mask.sum() <= round(fraction * 3000)
    # the kept rows of a class are its most confident ones
    mask = select_balanced(probs, prior=prior, size=300)
    confidence = probs.max(axis=1)
    for k in range(3):
        members = probs.argmax(axis=1) == k
        if (mask & members).any() and (~mask & members).any():
            assert confidence[mask & members].min() >= confidence[~mask & members].max()


def test_balanced_estimated_prior_and_shrinking():
    probs = random_probs(2000, 3, seed=2, class_weights=[0.6, 0.3, 0.1])
    estimated = target_prior(probs, "estimated")
    np.testing.assert_allclose(estimated, probs.mean(axis=0))
    mask = select_balanced(probs, prior="estimated", fraction=0.5)
    kept = np.bincount(probs[mask].argmax(axis=1), minlength=3) / mask.sum()
    assert np.abs(kept - estimated).max() <= 0.05
    # uniform target with a rare class: the total shrinks so that the distribution is kept
    available = np.bincount(probs.argmax(axis=1), minlength=3)
    mask = select_balanced(probs, prior="uniform", fraction=1.0)
    assert np.bincount(probs[mask].argmax(axis=1), minlength=3).tolist() == [available.min()] * 3
    assert select_balanced(probs, k_per_class=10).sum() == 30


def test_balanced_quotas_largest_remainder():
    assert balanced_quotas(np.array([100, 100, 100]), np.array([1 / 3] * 3), 10).tolist() == [4, 3, 3]
    assert balanced_quotas(np.array([100, 5, 100]), np.array([0.5, 0.25, 0.25]), 100).tolist() == [10, 5, 5]
    assert balanced_quotas(np.array([100, 0]), np.array([1.0, 0.0]), 7).tolist() == [7, 0]
    with pytest.raises(ValueError, match="no row is predicted as class 1"):
        balanced_quotas(np.array([100, 0]), np.array([0.5, 0.5]), 10)


def test_balanced_bad_options():
    with pytest.raises(ValueError, match="exactly one of"):
        select_balanced(PROBS, fraction=0.5, size=2)
    with pytest.raises(ValueError, match="one share per class"):
        select_balanced(PROBS, prior=[0.2, 0.3, 0.5], fraction=0.5)
    with pytest.raises(ValueError, match="uniform"):
        select_balanced(PROBS, prior=[0.2, 0.8], k_per_class=1)


def test_curriculum_top_fraction_per_class_and_schedule():
    assert select_curriculum(PROBS, fraction=0.5).tolist() == [True, True, False, True, False]
    assert select_curriculum(PROBS, fraction=0.0).sum() == 0
    assert select_curriculum(PROBS, fraction=1.0).all()
    probs = random_probs(1000, 4, seed=3, class_weights=[0.4, 0.3, 0.2, 0.1])
    counts = np.bincount(probs.argmax(axis=1), minlength=4)
    mask = select_curriculum(probs, fraction=0.2)
    assert (
        np.bincount(probs[mask].argmax(axis=1), minlength=4).tolist()
        == np.ceil(0.2 * counts).astype(int).tolist()
    )
    assert [curriculum_fraction(r) for r in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    assert curriculum_fraction(2, start=0.1, step=0.1, stop=0.25) == pytest.approx(0.25)
    # the kept sets grow round by round
    masks = [select_curriculum(probs, fraction=curriculum_fraction(r)) for r in range(5)]
    for small, big in zip(masks, masks[1:], strict=False):
        assert (big | small).sum() == big.sum()


def test_agreement_k_of_n():
    sources = np.array([[0, 0, 0], [0, 1, 0], [1, 1, -1], [0, 1, 2], [-1, -1, 2]])
    agree, voters = agreement_counts(sources, n_classes=3)
    assert agree.tolist() == [3, 2, 2, 1, 1] and voters.tolist() == [3, 3, 2, 3, 1]
    assert select_agreement(sources, n_classes=3, min_agree=2).tolist() == [True, True, True, False, False]
    labels = np.array([0, 1, 1, 2, 2])  # agreement with a given (fused) label
    assert select_agreement(sources, n_classes=3, min_agree=2, labels=labels).tolist() == [
        True,
        False,
        True,
        False,
        False,
    ]
    with pytest.raises(ValueError, match="min_agree"):
        select_agreement(sources, n_classes=3, min_agree=4)
    with pytest.raises(ValueError, match="class indexes"):
        select_agreement(np.array([[0, 5]]), n_classes=3, min_agree=1)


def test_learned_selector_uses_a_feature_confidence_misses():
    """Correctness depends on text length, not on confidence: the learned selector finds it."""
    rng = np.random.default_rng(4)
    n = 1200
    probs = random_probs(n, 2, seed=5)
    lengths = rng.integers(10, 2000, size=n)
    correct = rng.uniform(size=n) < np.where(lengths < 300, 0.97, 0.55)
    features = correctness_features(probs, lengths=lengths)
    assert features.shape == (n, 4)
    cal, pool = slice(0, 300), slice(300, n)
    mask = select_learned(
        features[pool], cal_features=features[cal], cal_correct=correct[cal], threshold=0.85
    )
    assert 0 < mask.sum() < n - 300
    assert correct[pool][mask].mean() > 0.9 > correct[pool].mean()
    by_confidence = label_quality_scores(probs[pool]) >= np.quantile(probs[pool].max(axis=1), 1 - mask.mean())
    assert correct[pool][mask].mean() > correct[pool][by_confidence].mean() + 0.1


def test_learned_needs_both_outcomes():
    features = correctness_features(PROBS)
    with pytest.raises(ValueError, match="both correct and wrong"):
        select_learned(features, cal_features=features, cal_correct=np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match="same columns"):
        select_learned(features, cal_features=features[:, :2], cal_correct=np.array([1, 0, 1, 0, 1]))


@pytest.mark.parametrize(
    "probs,message",
    [
        (np.array([0.5, 0.5]), "shape"),
        (np.array([[1.0], [1.0]]), "at least 2 classes"),
        (np.array([[0.5, 0.6]]), "sum to 1"),
        (np.array([[np.nan, 1.0]]), "NaN"),
        (np.array([[-0.5, 1.5]]), "negative"),
    ],
)
def test_selectors_validate_probs(probs, message):
    for select in (
        lambda p: select_by_threshold(p, threshold=0.5),
        select_per_class,
        lambda p: select_balanced(p, fraction=0.5),
        lambda p: select_curriculum(p, fraction=0.5),
    ):
        with pytest.raises(ValueError, match=message):
            select(probs)


def test_bad_scalar_options():
    with pytest.raises(ValueError, match="unknown score"):
        select_by_threshold(PROBS, threshold=0.5, score="logit")
    with pytest.raises(ValueError, match="fraction"):
        select_curriculum(PROBS, fraction=1.5)
    with pytest.raises(ValueError, match="round"):
        curriculum_fraction(-1)
