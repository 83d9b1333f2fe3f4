"""Label models: fuse several labelers of one corpus by majority vote, weighted vote, mean of probs or
Dawid-Skene EM.

Sources are LLM labelers (models, prompts, few-shot sets, sampled runs) and labeling functions
(`aggregate.labeling`). All fusers work on `source_labels` of shape (N, S): a class index per row and
source, -1 for abstain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from llmst.filter._validation import assert_valid_probs, assert_valid_source_labels


def _one_hot(source_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, S, K) one-hot votes; abstains are all-zero."""
    n, s = source_labels.shape
    out = np.zeros((n, s, n_classes))
    rows, cols = np.nonzero(source_labels >= 0)
    out[rows, cols, source_labels[rows, cols]] = 1.0
    return out


def _vote_matrix(source_labels: np.ndarray, n_classes: int, weights: np.ndarray) -> np.ndarray:
    votes = np.zeros((len(source_labels), n_classes))
    for column, weight in zip(source_labels.T, weights, strict=True):
        voted = column >= 0
        np.add.at(votes, (np.flatnonzero(voted), column[voted]), weight)
    return votes


def _check_weights(weights: Any, n_sources: int) -> np.ndarray:
    array = np.asarray(weights, dtype=np.float64)
    if array.shape != (n_sources,):
        raise ValueError(f"weights must have one value per source ({n_sources}); got {array.shape}")
    if (array < 0).any() or not np.isfinite(array).all():
        raise ValueError("weights must be finite and non-negative")
    return array


def majority_vote(
    source_labels: np.ndarray, *, n_classes: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Fused probabilities = (weighted) vote shares, shape (N, K). Rows where every source abstains are
    uniform; ties give equal shares (argmax then takes the lowest class index)."""
    source_labels = assert_valid_source_labels(source_labels, n_classes)
    n_sources = source_labels.shape[1]
    weights = np.ones(n_sources) if weights is None else _check_weights(weights, n_sources)
    votes = _vote_matrix(source_labels, n_classes, weights)
    totals = votes.sum(axis=1, keepdims=True)
    return np.where(totals > 0, votes / np.where(totals > 0, totals, 1.0), 1.0 / n_classes)


def estimate_source_accuracies(source_labels: np.ndarray, *, n_classes: int) -> np.ndarray:
    """Each source's agreement with the majority vote of the *other* sources, shape (S,); NaN for a source
    that never votes on a row where another source votes."""
    source_labels = assert_valid_source_labels(source_labels, n_classes)
    all_votes = _vote_matrix(source_labels, n_classes, np.ones(source_labels.shape[1]))
    accuracies = np.full(source_labels.shape[1], np.nan)
    for s, column in enumerate(source_labels.T):
        others = all_votes.copy()
        voted = column >= 0
        others[np.flatnonzero(voted), column[voted]] -= 1
        usable = voted & (others.sum(axis=1) > 0)
        if usable.any():
            accuracies[s] = float((others[usable].argmax(axis=1) == column[usable]).mean())
    return accuracies


def log_odds_weights(accuracies: np.ndarray, *, n_classes: int, eps: float = 1e-3) -> np.ndarray:
    """Optimal weighted-majority weights under symmetric noise: log((K - 1) acc / (1 - acc)), >= 0; shape (S,)."""
    acc = np.clip(np.nan_to_num(np.asarray(accuracies, dtype=np.float64), nan=1.0 / n_classes), eps, 1 - eps)
    return np.maximum(np.log((n_classes - 1) * acc / (1 - acc)), 0.0)


def weighted_vote(
    source_labels: np.ndarray, *, n_classes: int, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted vote with log-odds weights: fused probs = softmax(sum of the weights of each class's votes),
    the posterior when each source is right with its accuracy and otherwise errs uniformly.

    Parameters
    ----------
    source_labels : np.ndarray
        Shape (N, S), -1 for abstain.
    weights : np.ndarray, optional
        Shape (S,). Default: `log_odds_weights(estimate_source_accuracies(...))`.

    Returns
    -------
    (probs, weights) : shapes (N, K) and (S,).
    """
    source_labels = assert_valid_source_labels(source_labels, n_classes)
    if weights is None:
        weights = log_odds_weights(
            estimate_source_accuracies(source_labels, n_classes=n_classes), n_classes=n_classes
        )
    weights = _check_weights(weights, source_labels.shape[1])
    scores = _vote_matrix(source_labels, n_classes, weights)
    scores -= scores.max(axis=1, keepdims=True)
    probs = np.exp(scores)
    return probs / probs.sum(axis=1, keepdims=True), weights


def mean_probs(source_probs: np.ndarray, *, weights: np.ndarray | None = None) -> np.ndarray:
    """(Weighted) mean of the sources' distributions, shape (N, K), from `source_probs` of shape (N, S, K);
    a source that abstains on a row has NaN there and is left out."""
    source_probs = np.asarray(source_probs, dtype=np.float64)
    if source_probs.ndim != 3:
        raise ValueError(f"source_probs must have shape (N, S, K); got {source_probs.shape}")
    n, n_sources, n_classes = source_probs.shape
    weights = np.ones(n_sources) if weights is None else _check_weights(weights, n_sources)
    present = ~np.isnan(source_probs).any(axis=2)
    w = present * weights[None, :]
    total = np.einsum("ns,nsk->nk", w, np.nan_to_num(source_probs))
    norm = total.sum(axis=1, keepdims=True)
    return np.where(norm > 0, total / np.where(norm > 0, norm, 1.0), 1.0 / n_classes)


@dataclass
class DawidSkeneResult:
    """Output of `dawid_skene`."""

    probs: np.ndarray  # (N, K) posterior over the true class
    confusions: np.ndarray  # (S, K, K): P(source says l | true class j) at [s, j, l]
    class_prior: np.ndarray  # (K,)
    accuracies: np.ndarray  # (S,): sum_j prior_j * confusion[s, j, j]
    n_iter: int
    converged: bool
    log_likelihood: float


def dawid_skene(
    source_labels: np.ndarray,
    *,
    n_classes: int,
    max_iter: int = 100,
    tol: float = 1e-6,
    smoothing: float = 0.01,
    init_probs: np.ndarray | None = None,
) -> DawidSkeneResult:
    """Dawid-Skene EM: estimate each source's confusion matrix and the posterior of each row's true class.

    Parameters
    ----------
    source_labels : np.ndarray
        Shape (N, S): class index, or -1 for abstain.
    n_classes : int
    max_iter : int
        EM iterations at most.
    tol : float
        Stop when the largest change of a posterior probability is below `tol`.
    smoothing : float
        Pseudo-count added to every confusion-matrix cell and class count (keeps estimates off 0 and 1).
    init_probs : np.ndarray, optional
        Shape (N, K) initial posteriors. Default: majority-vote shares, which anchors the class order
        (no label switching).

    Returns
    -------
    DawidSkeneResult
    """
    source_labels = assert_valid_source_labels(source_labels, n_classes)
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1; got {max_iter}")
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0; got {smoothing}")
    n, n_sources = source_labels.shape
    posterior = (
        majority_vote(source_labels, n_classes=n_classes)
        if init_probs is None
        else assert_valid_probs(init_probs, name="init_probs")
    )
    if posterior.shape != (n, n_classes):
        raise ValueError(f"init_probs must have shape ({n}, {n_classes}); got {posterior.shape}")
    confusions = np.zeros((n_sources, n_classes, n_classes))
    prior = np.full(n_classes, 1.0 / n_classes)
    converged = False
    log_likelihood = float("nan")
    n_iter = 0
    for iteration in range(1, max_iter + 1):
        n_iter = iteration
        # M-step: class prior and confusion matrices from the current posteriors
        prior = (posterior.sum(axis=0) + smoothing) / (n + n_classes * smoothing)
        for s, column in enumerate(source_labels.T):
            counts = np.full((n_classes, n_classes), smoothing)
            for label in range(n_classes):
                counts[:, label] += posterior[column == label].sum(axis=0)
            sums = counts.sum(axis=1, keepdims=True)
            confusions[s] = np.where(sums > 0, counts / np.where(sums > 0, sums, 1.0), 1.0 / n_classes)
        # E-step: posterior of the true class given every source's vote
        with np.errstate(divide="ignore"):
            log_joint = np.tile(np.log(prior), (n, 1))
            log_conf = np.log(confusions)
        for s, column in enumerate(source_labels.T):
            voted = column >= 0
            log_joint[voted] += log_conf[s][:, column[voted]].T
        top = log_joint.max(axis=1, keepdims=True)
        joint = np.exp(log_joint - top)
        evidence = joint.sum(axis=1, keepdims=True)
        updated = joint / evidence
        log_likelihood = float((np.log(evidence) + top).sum())
        change = float(np.abs(updated - posterior).max()) if n else 0.0
        posterior = updated
        if change < tol:
            converged = True
            break
    accuracies = np.einsum("j,sjj->s", prior, confusions)
    return DawidSkeneResult(
        probs=posterior,
        confusions=confusions.copy(),
        class_prior=prior,
        accuracies=accuracies,
        n_iter=n_iter,
        converged=converged,
        log_likelihood=log_likelihood,
    )
