"""Class-balanced selection: the kept label distribution matches a target prior.

Pseudo-labels lean toward easy and frequent classes; keeping the most confident rows overall makes that
worse. Here every class gets a quota (its target share of the kept total) filled with its most trusted rows.
"""

from __future__ import annotations

import math

import numpy as np

from llmst.filter._ranking import top_per_class
from llmst.filter._validation import assert_fraction, assert_score, assert_valid_probs
from llmst.filter.scores import label_quality_scores


def target_prior(probs: np.ndarray, prior: str | np.ndarray | list[float] = "uniform") -> np.ndarray:
    """Resolve a target prior to a distribution of shape (K,).

    Parameters
    ----------
    probs : np.ndarray
        Shape (N, K).
    prior : {"uniform", "estimated"} or array-like of shape (K,)
        `estimated` is the mean predicted distribution (soft counts), which leans less toward frequent
        classes than argmax counts. An array is normalized to sum to 1.
    """
    probs = assert_valid_probs(probs)
    n_classes = probs.shape[1]
    if isinstance(prior, str):
        if prior == "uniform":
            return np.full(n_classes, 1.0 / n_classes)
        if prior == "estimated":
            if not len(probs):
                raise ValueError("cannot estimate a prior from zero rows")
            estimate = probs.mean(axis=0)
            return estimate / estimate.sum()
        raise ValueError(f"unknown prior '{prior}'; use uniform, estimated, or one share per class")
    shares = np.asarray(prior, dtype=np.float64)
    if shares.shape != (n_classes,):
        raise ValueError(f"prior must have one share per class ({n_classes}); got {shares.shape[0]}")
    if (shares < 0).any() or not np.isfinite(shares).all() or shares.sum() <= 0:
        raise ValueError("prior shares must be non-negative and not all zero")
    return shares / shares.sum()


def balanced_quotas(available: np.ndarray, prior: np.ndarray, total: int) -> np.ndarray:
    """Rows to keep per class, shape (K,), summing to at most `total`, in proportion to `prior`.

    When a class has fewer rows than its share of `total`, the total shrinks so that every class still gets
    its share (the distribution is kept, not the size). Rounding uses the largest-remainder method.

    Parameters
    ----------
    available : np.ndarray
        Shape (K,): rows predicted as each class.
    prior : np.ndarray
        Shape (K,), sums to 1.
    total : int
        Requested number of kept rows.
    """
    available = np.asarray(available, dtype=np.int64)
    prior = np.asarray(prior, dtype=np.float64)
    wanted = prior > 0
    empty = np.flatnonzero(wanted & (available == 0))
    if len(empty):
        raise ValueError(
            f"no row is predicted as class {int(empty[0])} but its target share is {prior[empty[0]]:.3f}; "
            "give that class a share of 0 in the prior, or label more rows"
        )
    feasible = min(available[k] / prior[k] for k in np.flatnonzero(wanted)) if wanted.any() else 0
    total = int(min(total, math.floor(feasible + 1e-9)))
    exact = prior * total
    quotas = np.floor(exact + 1e-9).astype(np.int64)
    remainder = total - int(quotas.sum())
    if remainder > 0:
        order = np.lexsort((np.arange(len(prior)), -(exact - quotas)))
        for k in order:
            if remainder == 0:
                break
            if quotas[k] < available[k] and wanted[k]:
                quotas[k] += 1
                remainder -= 1
    return quotas


def select_balanced(
    probs: np.ndarray,
    *,
    prior: str | np.ndarray | list[float] = "uniform",
    fraction: float | None = None,
    size: int | None = None,
    k_per_class: int | None = None,
    score: str = "confidence",
) -> np.ndarray:
    """Keep the most trusted rows of each predicted class, in proportion to a target prior.

    Give exactly one of `fraction`, `size` or `k_per_class`.

    Parameters
    ----------
    probs : np.ndarray
        Shape (N, K), rows summing to 1.
    prior : {"uniform", "estimated"} or array-like of shape (K,)
        Target label distribution of the kept rows (see `target_prior`).
    fraction : float, optional
        Keep this fraction of all N rows.
    size : int, optional
        Keep this many rows.
    k_per_class : int, optional
        Keep k rows of every class (uniform prior only).
    score : {"confidence", "margin", "entropy"}
        Ranks rows inside a class.

    Returns
    -------
    np.ndarray
        Boolean mask of shape (N,). The kept total is smaller than asked when a class has too few rows for
        its share: each class's kept share equals its target share up to rounding (1 row).
    """
    probs = assert_valid_probs(probs)
    assert_score(score)
    n, n_classes = probs.shape
    given = [x is not None for x in (fraction, size, k_per_class)]
    if sum(given) != 1:
        raise ValueError("give exactly one of fraction, size or k_per_class")
    if fraction is not None:
        total = int(round(assert_fraction(fraction, "fraction") * n))
    elif size is not None:
        if int(size) < 0:
            raise ValueError(f"size must be >= 0; got {size}")
        total = min(int(size), n)
    else:
        if int(k_per_class) < 0:  # type: ignore[arg-type]
            raise ValueError(f"k_per_class must be >= 0; got {k_per_class}")
        if not (isinstance(prior, str) and prior == "uniform"):
            raise ValueError("k_per_class keeps the same number of every class: use it with prior='uniform'")
        total = int(k_per_class) * n_classes  # type: ignore[arg-type]
    shares = target_prior(probs, prior)
    predicted = probs.argmax(axis=1)
    available = np.bincount(predicted, minlength=n_classes)
    quotas = balanced_quotas(available, shares, total)
    return top_per_class(predicted, label_quality_scores(probs, score=score), quotas)
