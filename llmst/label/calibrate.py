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


def em_prior(
    posteriors: np.ndarray,
    train_prior: np.ndarray | None = None,
    *,
    iterations: int = 1000,
    tol: float = 1e-9,
) -> np.ndarray:
    """The label prior of a corpus by EM (Saerens, Latinne & Decaestecker, 2002).

    `posteriors` (N, K) are p(y|x) of a model calibrated under `train_prior` (default uniform). Each step
    reweights them by prior / train_prior and takes their mean as the new prior; the fixed point is the
    maximum-likelihood prior of the corpus.
    """
    p = np.asarray(posteriors, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError("em_prior needs a non-empty (N, K) array of posteriors")
    k = p.shape[1]
    train = np.full(k, 1.0 / k) if train_prior is None else np.asarray(train_prior, dtype=np.float64)
    prior = train.copy()
    for _ in range(iterations):
        adjusted = p * (prior / train)
        adjusted /= adjusted.sum(axis=1, keepdims=True)
        new = adjusted.mean(axis=0)
        done = np.abs(new - prior).max() < tol
        prior = new
        if done:
            break
    return prior


def estimate_prior(
    label_logprobs: np.ndarray,
    reference_bias: np.ndarray | None = None,
    *,
    resamples: int = 200,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EM estimate of the corpus prior, with a 95% bootstrap interval over rows: (estimate, low, high);
    `resamples=0` skips the interval (low = high = estimate).

    The posteriors are softmax(label_logprobs + reference_bias), taken as calibrated under a uniform prior.
    Raw LLM scores are not (a model's own preference for a label would read as label shift), so llmst
    passes the content-free bias (`contextual_bias`) as the reference. (Posteriors already fitted to a
    uniform mean are EM's fixed point: the likelihood is concave in the prior and flat there, so the
    reference is the only thing that lets EM see a shift.)
    """
    logits = np.asarray(label_logprobs, dtype=np.float64)
    if reference_bias is not None:
        logits = logits + np.asarray(reference_bias, dtype=np.float64)
    posteriors = softmax(logits)
    estimate = em_prior(posteriors)
    if resamples <= 0:
        return estimate, estimate.copy(), estimate.copy()
    rng = np.random.default_rng(seed)
    n = len(posteriors)
    draws = np.array([em_prior(posteriors[rng.integers(0, n, n)]) for _ in range(resamples)])
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    return estimate, low, high


def estimated_target(estimate: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """An EM prior estimate as a `prior_bias` target: every share at least `floor` (EM may drive a label to 0,
    which no bias can reach), renormalised."""
    shares = np.clip(np.asarray(estimate, dtype=np.float64), floor, None)
    return shares / shares.sum()


# ---- a fitted calibration travels with the labels -------------------------------------------------------
# Each labeled record carries its run's method (`calibration`) and bias vector (`calibration_bias`), so a
# later stage can check that two files were calibrated alike (conformal needs the pool and its gold
# calibration rows scored by the same function), and `llmst label --calibration-from` can reuse one.

BIAS_DECIMALS = 9  # biases compare equal at this precision (JSON round trips, platforms)


def record_calibration(method: str, bias: np.ndarray, names: list[str]) -> dict[str, object]:
    """The record fields of a fitted calibration: `calibration` and, unless `none`, `calibration_bias`."""
    fields: dict[str, object] = {"calibration": method}
    if method != "none":
        fields["calibration_bias"] = {n: float(b) for n, b in zip(names, bias, strict=True)}
    return fields


def calibration_identity(record: dict) -> tuple | None:
    """A hashable identity of a record's fitted calibration; None when the record does not say."""
    method = record.get("calibration")
    if not isinstance(method, str):
        return None
    bias = record.get("calibration_bias")
    if method == "none" or not isinstance(bias, dict):
        return (method,) if method == "none" else None
    return (method, tuple(sorted((str(k), round(float(v), BIAS_DECIMALS)) for k, v in bias.items())))


BIAS_TOLERANCE = 1e-6  # biases refitted on the same rows in another process or machine differ by ~1e-7


def same_calibration(a: dict, b: dict, tolerance: float = BIAS_TOLERANCE) -> bool:
    """Whether two records (or calibration-field dicts) were calibrated alike: the same method and, but for
    `tolerance`, the same per-label biases (a refit on the same rows elsewhere matches; another fit does not)."""
    first, second = calibration_identity(a), calibration_identity(b)
    if first is None or second is None or len(first) != len(second) or first[0] != second[0]:
        return first == second
    if len(first) == 1:
        return True
    names_a, values_a = zip(*first[1], strict=True) if first[1] else ((), ())
    names_b, values_b = zip(*second[1], strict=True) if second[1] else ((), ())
    return names_a == names_b and all(
        abs(x - y) <= tolerance for x, y in zip(values_a, values_b, strict=True)
    )


def describe_identity(identity: tuple) -> str:
    if len(identity) == 1:
        return identity[0]
    biases = ", ".join(f"{k} {v:+.4f}" for k, v in identity[1])
    return f"{identity[0]} (biases {biases})"


def read_fitted_calibration(path: str, names: list[str]) -> tuple[str, np.ndarray]:
    """The method and bias vector (in `names` order) that labeled `path`, from its first record."""
    from llmst.errors import ConfigError
    from llmst.readers import iter_checked

    hint = "give the output of `llmst label` on the corpus (it writes calibration_bias on every record)"
    for _line, record in iter_checked(path):
        identity = calibration_identity(record)
        if identity is None:
            raise ConfigError(f"{path}: its records do not say how they were calibrated", hint=hint)
        if identity[0] == "none":
            return "none", np.zeros(len(names))
        if identity[0].startswith("aggregate:"):
            raise ConfigError(
                f"{path} holds fused labels ({identity[0]}): no single calibration to reuse",
                hint="give the ensemble's own options (--template/--orders/--zero-shot-member) to reuse each "
                "member's calibration, or a single-prompt labeled file",
            )
        bias = {str(k): float(v) for k, v in record["calibration_bias"].items()}  # exact, not rounded
        if set(bias) != set(names):
            raise ConfigError(
                f"{path} was calibrated for the labels {sorted(bias)}, not {sorted(names)}",
                hint="use a file labeled with the same task",
            )
        return identity[0], np.array([bias[n] for n in names])
    raise ConfigError(f"{path} has no records", hint=hint)
