"""Input checks shared by every selector (one place, like cleanlab's `assert_valid_inputs`).

Selectors raise `ValueError` with a message that names the offending argument; the filter stage turns
them into one-line `ConfigError`s.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Score = Literal["confidence", "margin", "entropy"]
SCORES: tuple[str, ...] = ("confidence", "margin", "entropy")


def assert_valid_probs(probs: np.ndarray, *, name: str = "probs") -> np.ndarray:
    """Return `probs` as a float64 array of shape (N, K), K >= 2, rows non-negative and summing to 1."""
    array = np.asarray(probs, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (N, K); got an array of shape {array.shape}")
    if array.shape[1] < 2:
        raise ValueError(f"{name} must have at least 2 classes (columns); got {array.shape[1]}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if (array < -1e-9).any():
        raise ValueError(f"{name} contains negative probabilities")
    if len(array) and not np.allclose(array.sum(axis=1), 1.0, atol=1e-3):
        bad = int(np.argmax(np.abs(array.sum(axis=1) - 1.0)))
        raise ValueError(f"{name} rows must sum to 1; row {bad} sums to {array[bad].sum():.4f}")
    return np.clip(array, 0.0, 1.0)


def assert_valid_labels(labels: np.ndarray, n_classes: int, *, n: int | None = None, name: str = "labels"):
    """Return `labels` as an int array of shape (N,) with values in [0, n_classes)."""
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"{name} must have shape (N,); got {array.shape}")
    if n is not None and len(array) != n:
        raise ValueError(f"{name} and probs must have the same length; got {len(array)} and {n}")
    if len(array) and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"{name} must hold integer class indexes")
    array = array.astype(np.int64)
    if len(array) and (array.min() < 0 or array.max() >= n_classes):
        raise ValueError(
            f"{name} must hold class indexes in [0, {n_classes}); got {array.min()}..{array.max()}"
        )
    return array


def assert_valid_source_labels(source_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Return per-source labels as an int array of shape (N, S): class index, or -1 for abstain."""
    array = np.asarray(source_labels)
    if array.ndim != 2:
        raise ValueError(f"source_labels must have shape (N, S); got {array.shape}")
    if array.shape[1] < 1:
        raise ValueError("source_labels needs at least one source (column)")
    array = array.astype(np.int64)
    if array.size and (array.min() < -1 or array.max() >= n_classes):
        raise ValueError(f"source_labels must hold class indexes in [0, {n_classes}) or -1 (abstain)")
    return array


def assert_score(score: str) -> None:
    if score not in SCORES:
        raise ValueError(f"unknown score '{score}'; use one of {', '.join(SCORES)}")


def assert_fraction(value: float, name: str, *, allow_zero: bool = True) -> float:
    value = float(value)
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value <= 1):
        bound = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name} must be in {bound}; got {value}")
    return value


def assert_open_unit(value: float, name: str) -> float:
    value = float(value)
    if not 0 < value < 1:
        raise ValueError(f"{name} must be strictly between 0 and 1; got {value}")
    return value
