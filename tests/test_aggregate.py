"""Aggregation: Dawid-Skene recovers planted source accuracies, vote and weighted vote, labeling functions."""

from __future__ import annotations

import numpy as np
import pytest

from llmst.aggregate import (
    apply_labeling_functions,
    dawid_skene,
    estimate_source_accuracies,
    labeling_function,
    load_labeling_functions,
    log_odds_weights,
    majority_vote,
    mean_probs,
    weighted_vote,
)


def planted_sources(n, accuracies, n_classes, seed, abstain=0.0, prior=None):
    """Each source is right with its accuracy, otherwise picks a wrong class uniformly; may abstain."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(n_classes, size=n, p=prior)
    labels = np.empty((n, len(accuracies)), dtype=np.int64)
    for s, accuracy in enumerate(accuracies):
        right = rng.uniform(size=n) < accuracy
        wrong = (truth + rng.integers(1, n_classes, size=n)) % n_classes
        labels[:, s] = np.where(right, truth, wrong)
        labels[rng.uniform(size=n) < abstain, s] = -1
    return truth, labels


def test_dawid_skene_recovers_planted_accuracies():
    accuracies = [0.92, 0.8, 0.7, 0.6, 0.5]
    truth, labels = planted_sources(4000, accuracies, 3, seed=0)
    result = dawid_skene(labels, n_classes=3)
    assert result.converged
    np.testing.assert_allclose(result.accuracies, accuracies, atol=0.03)
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0)
    assert result.confusions.shape == (5, 3, 3)
    np.testing.assert_allclose(result.confusions.sum(axis=2), 1.0)
    # with sources of unequal quality, the EM posterior beats the plain vote
    ds = (result.probs.argmax(axis=1) == truth).mean()
    vote = (majority_vote(labels, n_classes=3).argmax(axis=1) == truth).mean()
    assert ds > vote + 0.01


def test_dawid_skene_with_abstains_and_class_imbalance():
    accuracies = [0.9, 0.8, 0.75, 0.7, 0.65]
    truth, labels = planted_sources(4000, accuracies, 2, seed=1, abstain=0.3, prior=[0.8, 0.2])
    result = dawid_skene(labels, n_classes=2)
    np.testing.assert_allclose(result.accuracies, accuracies, atol=0.04)
    np.testing.assert_allclose(result.class_prior, [0.8, 0.2], atol=0.03)
    everyone_abstains = (labels == -1).all(axis=1)
    assert everyone_abstains.any()
    np.testing.assert_allclose(
        result.probs[everyone_abstains], np.tile(result.class_prior, (everyone_abstains.sum(), 1))
    )


def test_dawid_skene_learns_an_asymmetric_confusion():
    """A biased labeler says class 1 for everything: DS finds its confusion and ignores it; the vote is
    dragged toward class 1."""
    truth, informative = planted_sources(3000, [0.85, 0.75, 0.7], 2, seed=2)
    biased = np.ones((3000, 1), dtype=np.int64)
    labels = np.concatenate([informative, biased, biased.copy()], axis=1)
    result = dawid_skene(labels, n_classes=2)
    assert result.confusions[3, 0, 1] > 0.95 and result.confusions[3, 1, 1] > 0.95
    ds = (result.probs.argmax(axis=1) == truth).mean()
    vote = (majority_vote(labels, n_classes=2).argmax(axis=1) == truth).mean()
    assert ds > 0.85 and ds > vote + 0.05


def test_majority_and_weighted_vote():
    labels = np.array([[0, 0, 1], [1, 1, 0], [2, -1, -1], [-1, -1, -1], [0, 1, 2]])
    probs = majority_vote(labels, n_classes=3)
    np.testing.assert_allclose(probs[0], [2 / 3, 1 / 3, 0])
    np.testing.assert_allclose(probs[2], [0, 0, 1])
    np.testing.assert_allclose(probs[3], [1 / 3] * 3)  # nobody voted
    assert probs[4].argmax() == 0  # a tie goes to the lowest index
    weighted = majority_vote(labels, n_classes=3, weights=np.array([1.0, 1.0, 5.0]))
    assert weighted[0].argmax() == 1
    with pytest.raises(ValueError, match="one value per source"):
        majority_vote(labels, n_classes=3, weights=np.ones(2))


def test_weighted_vote_weights_follow_accuracy():
    truth, labels = planted_sources(3000, [0.95, 0.7, 0.6, 0.55], 3, seed=3)
    estimated = estimate_source_accuracies(labels, n_classes=3)
    assert list(np.argsort(-estimated)) == [0, 1, 2, 3]
    probs, weights = weighted_vote(labels, n_classes=3)
    assert list(np.argsort(-weights)) == [0, 1, 2, 3]
    np.testing.assert_allclose(log_odds_weights(np.array([1 / 3, 0.5]), n_classes=3), [0.0, np.log(2)])
    assert (probs.argmax(axis=1) == truth).mean() > (
        majority_vote(labels, n_classes=3).argmax(axis=1) == truth
    ).mean()


def test_mean_probs_skips_abstaining_sources():
    source_probs = np.array([[[0.9, 0.1], [0.5, 0.5]], [[0.2, 0.8], [np.nan, np.nan]]])
    np.testing.assert_allclose(mean_probs(source_probs), [[0.7, 0.3], [0.2, 0.8]])
    np.testing.assert_allclose(mean_probs(source_probs, weights=np.array([3.0, 1.0]))[0], [0.8, 0.2])


def test_labeling_functions_load_and_apply(tmp_path):
    path = tmp_path / "rules.py"
    path.write_text(
        "from llmst.aggregate import labeling_function\n"
        "@labeling_function\n"
        "def refund(record):\n"
        "    return 'negative' if 'refund' in record['text'] else None\n"
        "@labeling_function(name='great')\n"
        "def rule_2(record):\n"
        "    return 1 if 'great' in record['text'] else None\n"
        "def helper(record):\n"
        "    return 'negative'\n"
    )
    functions = load_labeling_functions(path)
    assert list(functions) == ["refund", "great"]
    records = [{"text": "I want a refund"}, {"text": "great film"}, {"text": "meh"}]
    out = apply_labeling_functions(records, functions, ["negative", "positive"])
    assert out.tolist() == [[0, -1], [-1, 1], [-1, -1]]
    # loading again does not accumulate registrations, and a decorator outside a load stays harmless
    assert list(load_labeling_functions(path)) == ["refund", "great"]

    @labeling_function
    def stray(record):
        return None

    assert list(load_labeling_functions(path)) == ["refund", "great"]


def test_labeling_function_errors(tmp_path):
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ValueError, match="registers no labeling function"):
        load_labeling_functions(empty)
    with pytest.raises(FileNotFoundError):
        load_labeling_functions(tmp_path / "missing.py")
    records = [{"id": "r1", "text": "a"}]
    with pytest.raises(ValueError, match="returned 'maybe' on record 'r1'"):
        apply_labeling_functions(records, {"bad": lambda r: "maybe"}, ["no", "yes"])
    with pytest.raises(ValueError, match="'boom' raised KeyError"):
        apply_labeling_functions(records, {"boom": lambda r: r["missing"]}, ["no", "yes"])
