"""Curriculum selection: the top p% of each predicted class, p growing round by round in self-training."""

from __future__ import annotations

import math

import numpy as np

from llmst.filter._ranking import top_per_class
from llmst.filter._validation import assert_fraction, assert_score, assert_valid_probs
from llmst.filter.scores import label_quality_scores


def curriculum_fraction(
    round_index: int, *, start: float = 0.2, step: float = 0.2, stop: float = 1.0
) -> float:
    """Fraction kept per class at a self-training round (0-based): `min(stop, start + step * round)`."""
    if int(round_index) < 0:
        raise ValueError(f"round must be >= 0; got {round_index}")
    assert_fraction(start, "schedule start")
    assert_fraction(stop, "schedule stop")
    if step < 0:
        raise ValueError(f"schedule step must be >= 0; got {step}")
    return float(min(stop, start + step * int(round_index)))


def select_curriculum(probs: np.ndarray, *, fraction: float, score: str = "confidence") -> np.ndarray:
    """Keep the most trusted `fraction` of the rows predicted as each class (rounded up).

    Parameters
    ----------
    probs : np.ndarray
        Shape (N, K), rows summing to 1.
    fraction : float
        In [0, 1]; see `curriculum_fraction` for a per-round schedule.
    score : {"confidence", "margin", "entropy"}

    Returns
    -------
    np.ndarray
        Boolean mask of shape (N,).
    """
    probs = assert_valid_probs(probs)
    assert_score(score)
    fraction = assert_fraction(fraction, "fraction")
    predicted = probs.argmax(axis=1)
    available = np.bincount(predicted, minlength=probs.shape[1])
    quotas = np.array([math.ceil(fraction * count - 1e-9) for count in available], dtype=np.int64)
    return top_per_class(predicted, label_quality_scores(probs, score=score), quotas)
