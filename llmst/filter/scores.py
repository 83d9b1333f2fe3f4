"""Scoring (apart from selecting, like cleanlab's `rank.py`): how much to trust each pseudo-label."""

from __future__ import annotations

import numpy as np

from llmst.filter._validation import assert_score, assert_valid_probs


def predicted_labels(probs: np.ndarray) -> np.ndarray:
    """Argmax class index of each row: shape (N,) from `probs` of shape (N, K)."""
    return np.argmax(assert_valid_probs(probs), axis=1)


def pseudo_label_correct(probs: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Whether each row's pseudo-label (the argmax of `probs`, shape (N, K)) equals `gold` (shape (N,)).

    The one definition of a correct pseudo-label in llmst: guarantees, learned selectors, reports and
    `llmst evaluate` all use it (`records.read_labeled` refuses records whose `label` disagrees).
    """
    gold = np.asarray(gold)
    predicted = predicted_labels(probs)
    if gold.shape != predicted.shape:
        raise ValueError(f"gold must have shape ({len(predicted)},); got {gold.shape}")
    return predicted == gold


def confidence(probs: np.ndarray) -> np.ndarray:
    """Top probability of each row, shape (N,)."""
    return assert_valid_probs(probs).max(axis=1)


def margin(probs: np.ndarray) -> np.ndarray:
    """Top probability minus the second, shape (N,)."""
    ordered = np.sort(assert_valid_probs(probs), axis=1)
    return ordered[:, -1] - ordered[:, -2]


def entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy in nats of each row, shape (N,)."""
    array = assert_valid_probs(probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(array > 0, array * np.log(array), 0.0)
    return -terms.sum(axis=1)


def label_quality_scores(probs: np.ndarray, *, score: str = "confidence") -> np.ndarray:
    """Trust score of each row's argmax label, shape (N,); higher means more trustworthy.

    Parameters
    ----------
    probs : np.ndarray
        Shape (N, K), rows summing to 1.
    score : {"confidence", "margin", "entropy"}
        `confidence` is the top probability, `margin` the top minus the second, and `entropy` returns the
        *negative* entropy (nats) so that every score ranks the same way.

    Returns
    -------
    np.ndarray
        Shape (N,).
    """
    assert_score(score)
    if score == "confidence":
        return confidence(probs)
    if score == "margin":
        return margin(probs)
    return -entropy(probs)
