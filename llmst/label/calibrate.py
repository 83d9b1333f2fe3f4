"""Label-score calibration: per-label biases added to log-probabilities.

- contextual (Zhao et al., 2021, "Calibrate Before Use"): score content-free inputs ("N/A", "", "[MASK]"),
  average their label distribution p_cf, and divide it out: bias = -log p_cf.
- prior: fit biases on the unlabeled corpus itself so that the mean predicted distribution matches a target
  prior (uniform or given). This is the EM fixed point of Saerens et al. (2002) run in reverse: iterate
  b <- b + log(prior) - log(mean softmax(logp + b)).
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of shape (N, K)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def contextual_bias(content_free_logprobs: np.ndarray) -> np.ndarray:
    """Bias (K,) from label log-probs of content-free inputs, shape (M, K)."""
    p_cf = softmax(np.asarray(content_free_logprobs, dtype=np.float64)).mean(axis=0)
    return -np.log(np.clip(p_cf, 1e-12, None))


def prior_bias(
    label_logprobs: np.ndarray, prior: np.ndarray | None = None, *, iterations: int = 200, tol: float = 1e-7
) -> np.ndarray:
    """Bias (K,) such that mean(softmax(label_logprobs + bias)) == prior. `label_logprobs` has shape (N, K)."""
    logits = np.asarray(label_logprobs, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError("prior_bias needs a non-empty (N, K) array of label log-probs")
    k = logits.shape[1]
    target = np.full(k, 1.0 / k) if prior is None else np.asarray(prior, dtype=np.float64)
    if target.shape != (k,) or np.any(target <= 0) or not np.isclose(target.sum(), 1.0):
        raise ValueError(f"prior must be {k} positive numbers summing to 1, got {target.tolist()}")
    bias = np.zeros(k)
    for _ in range(iterations):
        marginal = softmax(logits + bias).mean(axis=0)
        step = np.log(target) - np.log(np.clip(marginal, 1e-300, None))
        bias += step
        if np.abs(step).max() < tol:
            break
    return bias - bias.mean()
