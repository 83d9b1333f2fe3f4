"""Per-class thresholds, as in confident learning, so that easy classes do not crowd out hard ones."""

from __future__ import annotations

import numpy as np

from llmst.filter._validation import assert_valid_probs


def per_class_thresholds(probs: np.ndarray) -> np.ndarray:
    """Mean confidence of the rows predicted as each class (cleanlab's `get_confident_thresholds`, with the
    pseudo-label as the given label).

    Parameters
    ----------
    probs : np.ndarray
        Shape (N, K), rows summing to 1.

    Returns
    -------
    np.ndarray
        Shape (K,); NaN for a class no row is predicted as.
    """
    probs = assert_valid_probs(probs)
    predicted = probs.argmax(axis=1)
    top = probs.max(axis=1)
    thresholds = np.full(probs.shape[1], np.nan)
    for k in range(probs.shape[1]):
        members = predicted == k
        if members.any():
            thresholds[k] = top[members].mean()
    return thresholds


def select_per_class(probs: np.ndarray, *, thresholds: np.ndarray | None = None) -> np.ndarray:
    """Keep rows whose confidence reaches the threshold of their predicted class.

    Parameters
    ----------
    probs : np.ndarray
        Shape (N, K), rows summing to 1.
    thresholds : np.ndarray, optional
        Shape (K,). Default: `per_class_thresholds(probs)`.

    Returns
    -------
    np.ndarray
        Boolean mask of shape (N,).
    """
    probs = assert_valid_probs(probs)
    if thresholds is None:
        thresholds = per_class_thresholds(probs)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (probs.shape[1],):
        raise ValueError(f"thresholds must have shape ({probs.shape[1]},); got {thresholds.shape}")
    predicted = probs.argmax(axis=1)
    return probs.max(axis=1) >= thresholds[predicted]
