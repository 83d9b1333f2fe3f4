"""A small learned selector: predict "this pseudo-label is correct" from cheap features.

Trained on gold calibration rows (logistic regression on confidence, margin, entropy and, when available,
source agreement, text length and embeddings), then used to rank or threshold the pool.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmst.filter._validation import assert_fraction, assert_valid_probs
from llmst.filter.scores import confidence, entropy, margin

BASE_FEATURES = ("confidence", "margin", "entropy")


def correctness_features(
    probs: np.ndarray,
    *,
    agreement: np.ndarray | None = None,
    lengths: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """Feature matrix for the correctness model.

    Parameters
    ----------
    probs : np.ndarray
        Shape (N, K).
    agreement : np.ndarray, optional
        Shape (N,): fraction of sources that agree with the row's label.
    lengths : np.ndarray, optional
        Shape (N,): text length (characters); used as log(1 + length).
    embeddings : np.ndarray, optional
        Shape (N, D).

    Returns
    -------
    np.ndarray
        Shape (N, F), F = 3 + [1] + [1] + [D]: confidence, margin, entropy, then the optional columns.
    """
    probs = assert_valid_probs(probs)
    n = len(probs)
    columns = [confidence(probs)[:, None], margin(probs)[:, None], entropy(probs)[:, None]]
    for name, extra in (("agreement", agreement), ("lengths", lengths)):
        if extra is not None:
            extra = np.asarray(extra, dtype=np.float64)
            if extra.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},); got {extra.shape}")
            columns.append((np.log1p(np.maximum(extra, 0)) if name == "lengths" else extra)[:, None])
    if embeddings is not None:
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.ndim != 2 or len(embeddings) != n:
            raise ValueError(f"embeddings must have shape ({n}, D); got {embeddings.shape}")
        columns.append(embeddings)
    features = np.hstack(columns)
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or infinite values")
    return features


def fit_correctness_model(features: np.ndarray, correct: np.ndarray, *, c: float = 1.0, seed: int = 0) -> Any:
    """Fit standardized logistic regression predicting `correct` (shape (n,), bool) from `features` (n, F).

    Returns a fitted scikit-learn pipeline; `predict_correctness` applies it.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.asarray(features, dtype=np.float64)
    correct = np.asarray(correct).astype(bool)
    if features.ndim != 2 or len(features) != len(correct):
        raise ValueError(
            f"features (n, F) and correct (n,) must have the same length; got {features.shape}, {correct.shape}"
        )
    if correct.all() or not correct.any():
        state = "correct" if correct.all() else "wrong"
        raise ValueError(
            f"every calibration pseudo-label is {state}: the correctness model needs both correct and wrong rows"
        )
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000, random_state=seed))
    model.fit(features, correct)
    return model


def predict_correctness(model: Any, features: np.ndarray) -> np.ndarray:
    """P(pseudo-label is correct) of each row, shape (N,)."""
    return model.predict_proba(np.asarray(features, dtype=np.float64))[:, 1]


def select_learned(
    features: np.ndarray,
    *,
    cal_features: np.ndarray,
    cal_correct: np.ndarray,
    threshold: float = 0.9,
    seed: int = 0,
) -> np.ndarray:
    """Keep rows whose predicted probability of a correct pseudo-label is >= `threshold`.

    Parameters
    ----------
    features : np.ndarray
        Shape (N, F), from `correctness_features`.
    cal_features : np.ndarray
        Shape (n, F): the same features on gold calibration rows.
    cal_correct : np.ndarray
        Shape (n,), bool: pseudo-label == gold on the calibration rows.
    threshold : float
        In [0, 1].

    Returns
    -------
    np.ndarray
        Boolean mask of shape (N,).
    """
    threshold = assert_fraction(threshold, "threshold")
    features = np.asarray(features, dtype=np.float64)
    cal_features = np.asarray(cal_features, dtype=np.float64)
    if features.ndim != 2 or cal_features.ndim != 2 or features.shape[1] != cal_features.shape[1]:
        raise ValueError(
            f"features and cal_features must have the same columns; got {features.shape}, {cal_features.shape}"
        )
    model = fit_correctness_model(cal_features, cal_correct, seed=seed)
    return predict_correctness(model, features) >= threshold
