"""Global threshold on one trust score."""

from __future__ import annotations

import numpy as np

from llmst.filter._validation import assert_score, assert_valid_probs
from llmst.filter.scores import entropy, label_quality_scores


def select_by_threshold(probs: np.ndarray, *, threshold: float, score: str = "confidence") -> np.ndarray:
    """Keep rows whose trust score passes one global threshold.

    Parameters
    ----------
    probs : np.ndarray
        Shape (N, K), rows summing to 1.
    threshold : float
        `confidence` and `margin`: keep rows with score >= threshold. `entropy` (nats): keep rows with
        entropy <= threshold.
    score : {"confidence", "margin", "entropy"}

    Returns
    -------
    np.ndarray
        Boolean mask of shape (N,).
    """
    assert_score(score)
    probs = assert_valid_probs(probs)
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number; got {threshold}")
    if score == "entropy":
        if threshold < 0:
            raise ValueError(f"an entropy threshold must be >= 0 (nats); got {threshold}")
        return entropy(probs) <= threshold
    return label_quality_scores(probs, score=score) >= threshold
