"""Performance gap recovered (PGR) and its paired bootstrap intervals, for weak-to-strong experiments.

PGR = (transfer - weak) / (ceiling - weak) (Burns et al. 2023), for accuracy and ROC AUC. The three models are
scored on the same test rows, so an interval resamples rows *paired*: one draw of row indices scores all
three. Across seeds the draw is hierarchical: seeds with replacement, then rows within each drawn seed, and
the PGR of the means over the drawn seeds. scipy's `bootstrap` cannot resample in two levels, hence this
small numpy one. A PGR whose ceiling is less than `min_gap` above the weak model is undefined (None): there
is no gap to recover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METRICS = ("accuracy", "auroc")
ROLES = ("weak", "transfer", "ceiling")


@dataclass
class Scored:
    """One seed's test predictions: gold label indices (N,) and each role's probabilities (N, K)."""

    gold: np.ndarray
    probs: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        self.gold = np.asarray(self.gold, dtype=int)
        self.probs = {role: np.asarray(p, dtype=float) for role, p in self.probs.items()}
        for role in ROLES:
            if role not in self.probs:
                raise ValueError(f"Scored: missing the {role} model's probabilities")
            if self.probs[role].shape != (len(self.gold), self.probs["weak"].shape[1]):
                raise ValueError(f"Scored: {role} probabilities do not match the gold rows")


def metric(name: str, gold: np.ndarray, probs: np.ndarray) -> float:
    """Accuracy, or ROC AUC (binary: of the second label's probability; more labels: macro one-vs-rest).

    ROC AUC is NaN when the rows hold a single gold class (possible in a bootstrap draw of few rows)."""
    if name == "accuracy":
        return float(np.mean(probs.argmax(axis=1) == gold))
    if name != "auroc":
        raise ValueError(f"unknown metric {name!r}; use one of {METRICS}")
    from sklearn.metrics import roc_auc_score

    if len(np.unique(gold)) < 2:
        return float("nan")
    if probs.shape[1] == 2:  # Mann-Whitney U with mid-ranks for ties: sklearn's value, ~20x faster
        from scipy.stats import rankdata

        positive = gold == 1
        ranks = rankdata(probs[:, 1])
        n1, n0 = int(positive.sum()), int((~positive).sum())
        return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
    present = np.unique(gold)
    if len(present) < probs.shape[1]:  # a class absent from these rows: AUC over the present ones
        return float(
            np.mean([roc_auc_score(gold == k, probs[:, k]) for k in present if 0 < (gold == k).sum()])
        )
    return float(roc_auc_score(gold, probs, multi_class="ovr"))


def pgr(weak: float, transfer: float, ceiling: float, min_gap: float = 0.02) -> float | None:
    """(transfer - weak) / (ceiling - weak); None when the gap is below `min_gap` (or a score is NaN)."""
    gap = ceiling - weak
    if not np.isfinite([weak, transfer, ceiling]).all() or gap < min_gap:
        return None
    return float((transfer - weak) / gap)


def _interval(values: Sequence[float | None]) -> list[float] | None:
    finite = np.asarray([v for v in values if v is not None and np.isfinite(v)])
    if len(finite) < max(10, len(values) // 2):  # most draws undefined: no honest interval
        return None
    return [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))]


def _scores(seeds: Sequence[Scored]) -> list[dict[str, dict[str, float]]]:
    return [
        {name: {role: metric(name, s.gold, s.probs[role]) for role in ROLES} for name in METRICS}
        for s in seeds
    ]


def _mean_score(scores: Sequence[dict[str, dict[str, float]]], name: str, role: str) -> float:
    return float(np.mean([s[name][role] for s in scores]))


def _mean_pgr(scores: Sequence[dict[str, dict[str, float]]], name: str, min_gap: float) -> float | None:
    means = {role: _mean_score(scores, name, role) for role in ROLES}
    return pgr(means["weak"], means["transfer"], means["ceiling"], min_gap)


_SeedScores = dict[str, dict[str, float]]  # {metric: {role: score}}


def _draws(seeds: Sequence[Scored], n_boot: int, rng_seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Bootstrap draws, a function of (rows per seed, n_boot, rng_seed) only: variants scored on the same test
    rows get the same draws, so their differences are paired. Yields per draw the chosen seeds and, for every
    seed, that seed's row indices."""
    rng = np.random.default_rng(rng_seed)
    rows = [rng.integers(0, len(s.gold), (n_boot, len(s.gold))) for s in seeds]
    chosen = rng.integers(0, len(seeds), (n_boot, len(seeds)))
    return rows, chosen


def _boot_scores(seeds: Sequence[Scored], rows: Sequence[np.ndarray]) -> list[list[_SeedScores]]:
    """[seed][draw] -> {metric: {role: score}} on that seed's resampled rows."""
    out = []
    for scored, indices in zip(seeds, rows, strict=True):
        out.append(
            [
                {
                    name: {role: metric(name, scored.gold[i], scored.probs[role][i]) for role in ROLES}
                    for name in METRICS
                }
                for i in indices
            ]
        )
    return out


def _entry(
    scores: _SeedScores, pgrs: dict[str, float | None], cis: dict[str, list[float] | None]
) -> dict[str, object]:
    out: dict[str, object] = {
        role: {name: round(scores[name][role], 4) for name in METRICS} for role in ROLES
    }
    out["pgr"] = {}
    for name in METRICS:
        out["pgr"][name] = None if pgrs[name] is None else round(pgrs[name], 4)
        out["pgr"][f"{name}_ci"] = None if cis[name] is None else [round(v, 4) for v in cis[name]]
    return out


def _pooled_draws(
    seeds: Sequence[Scored], n_boot: int, rng_seed: int, min_gap: float
) -> tuple[dict[str, list[float | None]], list[list[_SeedScores]], np.ndarray]:
    """Per metric, the pooled PGR of every draw; also the draws' scores ([seed][draw]) and chosen seeds."""
    rows, chosen = _draws(seeds, n_boot, rng_seed)
    boot = _boot_scores(seeds, rows)
    pgrs = {
        name: [_mean_pgr([boot[s][b] for s in chosen[b]], name, min_gap) for b in range(n_boot)]
        for name in METRICS
    }
    return pgrs, boot, chosen


def summarize(
    seeds: Sequence[Scored], min_gap: float = 0.02, n_boot: int = 1000, rng_seed: int = 0
) -> dict[str, object]:
    """Per seed and pooled over seeds: each role's metrics and PGR with its 95% paired bootstrap interval.

    Returns `{"seeds": [...], "mean": {...}}`, each entry `{weak, transfer, ceiling: {accuracy, auroc},
    pgr: {accuracy, accuracy_ci, auroc, auroc_ci}}`; the pooled PGR is that of the seed-mean scores.
    """
    if not seeds:
        raise ValueError("summarize: no seeds")
    point = _scores(seeds)
    rows, chosen = _draws(seeds, n_boot, rng_seed)
    boot = _boot_scores(seeds, rows)
    per_seed = []
    for scores, draws in zip(point, boot, strict=True):
        pgrs = {name: pgr(**scores[name], min_gap=min_gap) for name in METRICS}
        cis = {name: _interval([pgr(**d[name], min_gap=min_gap) for d in draws]) for name in METRICS}
        per_seed.append(_entry(scores, pgrs, cis))
    mean_scores = {name: {role: _mean_score(point, name, role) for role in ROLES} for name in METRICS}
    pooled = {name: _mean_pgr(point, name, min_gap) for name in METRICS}
    pooled_cis = {
        name: _interval([_mean_pgr([boot[s][b] for s in chosen[b]], name, min_gap) for b in range(n_boot)])
        for name in METRICS
    }
    return {"seeds": per_seed, "mean": _entry(mean_scores, pooled, pooled_cis)}


def compare(
    first: Sequence[Scored],
    second: Sequence[Scored],
    min_gap: float = 0.02,
    n_boot: int = 1000,
    rng_seed: int = 0,
) -> dict[str, object]:
    """Pooled PGR of `first` minus that of `second` (same seeds and test rows), with a paired 95% interval;
    under `weak` and `transfer`, the same paired difference of those models' scores, which stays defined where
    a PGR is not (a gap under `min_gap`): `{accuracy, accuracy_ci, auroc, auroc_ci, weak: {...}, transfer:
    {...}}`."""
    if len(first) != len(second) or any(
        not np.array_equal(a.gold, b.gold) for a, b in zip(first, second, strict=False)
    ):
        raise ValueError("compare: both variants must be scored on the same seeds and test rows")
    a, boot_a, chosen = _pooled_draws(first, n_boot, rng_seed, min_gap)
    b, boot_b, _ = _pooled_draws(second, n_boot, rng_seed, min_gap)  # same draws: paired
    point_a, point_b = _scores(first), _scores(second)
    out: dict[str, object] = {}
    for name in METRICS:
        pa, pb = _mean_pgr(point_a, name, min_gap), _mean_pgr(point_b, name, min_gap)
        diffs = [
            x - y if x is not None and y is not None else None for x, y in zip(a[name], b[name], strict=True)
        ]
        out[name] = None if pa is None or pb is None else round(pa - pb, 4)
        ci = _interval(diffs)
        out[f"{name}_ci"] = None if ci is None else [round(v, 4) for v in ci]
    for role in ("weak", "transfer"):
        out[role] = {}
        for name in METRICS:
            draws = [
                _mean_score([boot_a[s][d] for s in chosen[d]], name, role)
                - _mean_score([boot_b[s][d] for s in chosen[d]], name, role)
                for d in range(n_boot)
            ]
            point = _mean_score(point_a, name, role) - _mean_score(point_b, name, role)
            ci = _interval(draws)  # None when most draws are undefined (an AUC on one-class rows)
            out[role][name] = round(point, 4) if np.isfinite(point) else None
            out[role][f"{name}_ci"] = None if ci is None else [round(v, 4) for v in ci]
    return out
