"""Agreement between several labelers (models, prompts, sampled runs, labeling functions)."""

from __future__ import annotations

import numpy as np

from llmst.filter._validation import assert_valid_labels, assert_valid_source_labels


def agreement_counts(
    source_labels: np.ndarray, *, n_classes: int, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """How many sources agree on each row.

    Parameters
    ----------
    source_labels : np.ndarray
        Shape (N, S): each source's class index, or -1 where it abstains.
    n_classes : int
    labels : np.ndarray, optional
        Shape (N,): count the sources that agree with these labels (e.g. the fused label). Default: the
        size of the largest block of agreeing sources (the plurality label).

    Returns
    -------
    (agree, voters) : tuple of np.ndarray
        Both of shape (N,): agreeing sources and non-abstaining sources.
    """
    source_labels = assert_valid_source_labels(source_labels, n_classes)
    n = len(source_labels)
    votes = np.zeros((n, n_classes), dtype=np.int64)
    for column in source_labels.T:
        voted = column >= 0
        np.add.at(votes, (np.flatnonzero(voted), column[voted]), 1)
    voters = votes.sum(axis=1)
    if labels is None:
        return votes.max(axis=1) if n else np.zeros(0, dtype=np.int64), voters
    labels = assert_valid_labels(labels, n_classes, n=n)
    return votes[np.arange(n), labels], voters


def select_agreement(
    source_labels: np.ndarray,
    *,
    n_classes: int,
    min_agree: int,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Keep rows where at least `min_agree` sources give the same label (or give `labels`, when passed).

    Parameters
    ----------
    source_labels : np.ndarray
        Shape (N, S): class index per source, -1 for abstain.
    n_classes : int
    min_agree : int
        In [1, S].
    labels : np.ndarray, optional
        Shape (N,): the label each row will carry; rows are kept only when enough sources agree with it.

    Returns
    -------
    np.ndarray
        Boolean mask of shape (N,).
    """
    source_labels = assert_valid_source_labels(source_labels, n_classes)
    n_sources = source_labels.shape[1]
    if not 1 <= int(min_agree) <= n_sources:
        raise ValueError(
            f"min_agree must be between 1 and the number of sources ({n_sources}); got {min_agree}"
        )
    agree, _ = agreement_counts(source_labels, n_classes=n_classes, labels=labels)
    return agree >= int(min_agree)
