"""Metrics and plots shared by every stage (plain functions on arrays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """ECE with equal-width confidence bins (Guo et al., 2017): sum_b |B|/N * |acc(B) - conf(B)|."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ValueError("confidence and correct must be 1-D arrays of the same length")
    if len(confidence) == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per-bin count, mean confidence and accuracy (for the reliability diagram)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        rows.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": int(members.sum()),
                "confidence": float(confidence[members].mean()) if members.any() else 0.0,
                "accuracy": float(correct[members].mean()) if members.any() else 0.0,
            }
        )
    return rows


def accuracy_coverage(
    confidence: np.ndarray, correct: np.ndarray, points: int = 20
) -> list[dict[str, float]]:
    """Accuracy of the most confident fraction of rows, at `points` coverage levels (1/points .. 1)."""
    order = np.argsort(-np.asarray(confidence), kind="stable")
    hits = np.cumsum(np.asarray(correct, dtype=np.float64)[order])
    n = len(order)
    curve = []
    for level in np.linspace(1.0 / points, 1.0, points):
        k = max(1, int(round(level * n)))
        curve.append(
            {
                "coverage": float(k / n),
                "accuracy": float(hits[k - 1] / k),
                "threshold": float(confidence[order[k - 1]]),
            }
        )
    return curve


def plot_reliability(bins: list[dict[str, float]], path: Path, title: str = "Reliability diagram") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    centers = [(b["low"] + b["high"]) / 2 for b in bins]
    width = bins[0]["high"] - bins[0]["low"]
    accuracy = [b["accuracy"] if b["count"] else 0 for b in bins]
    ax.bar(centers, accuracy, width=width * 0.9, color="#4C72B0", edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy_coverage(
    curve: list[dict[str, float]], path: Path, title: str = "Accuracy vs coverage"
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([c["coverage"] for c in curve], [c["accuracy"] for c in curve], marker="o", ms=3)
    ax.set_xlabel("coverage (most confident fraction kept)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def label_counts(labels: np.ndarray, names: list[str]) -> dict[str, int]:
    """Rows per class {name: count} from class indexes (N,)."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=len(names)) if len(labels) else np.zeros(len(names), dtype=int)
    return {name: int(counts[i]) for i, name in enumerate(names)}


def label_shares(counts: dict[str, int]) -> dict[str, float]:
    """Counts as shares of their total (all 0 when the total is 0)."""
    total = sum(counts.values())
    return {name: (value / total if total else 0.0) for name, value in counts.items()}


def majority_baseline(gold: np.ndarray, n_classes: int) -> tuple[int, float]:
    """(class, accuracy) of always predicting the most frequent gold class of these rows (ties: the lowest
    index), from gold class indexes (N,).

    An optimistic baseline: it knows the class distribution of the rows it is scored on. A labeler (or a
    student) that does not beat it has learned nothing beyond the class prior.
    """
    gold = np.asarray(gold, dtype=np.int64)
    if not len(gold):
        raise ValueError("majority_baseline needs at least one gold label")
    counts = np.bincount(gold, minlength=n_classes)
    majority = int(np.argmax(counts))
    return majority, float(counts[majority] / len(gold))
