"""Deterministic within-class ranking shared by the balanced and curriculum selectors."""

from __future__ import annotations

import numpy as np


def top_per_class(predicted: np.ndarray, scores: np.ndarray, quotas: np.ndarray) -> np.ndarray:
    """Mask keeping the `quotas[k]` highest-scoring rows predicted as class k (ties: lower index first)."""
    mask = np.zeros(len(predicted), dtype=bool)
    for k, quota in enumerate(quotas):
        members = np.flatnonzero(predicted == k)
        if quota <= 0 or not len(members):
            continue
        order = members[np.lexsort((members, -scores[members]))]
        mask[order[: int(quota)]] = True
    return mask
