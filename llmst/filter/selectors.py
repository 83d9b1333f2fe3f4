"""Registry entries of the selectors that need no calibration set: threshold, per-class, balanced,
curriculum, agreement. Each calls the public selector function of its module."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from llmst.errors import ConfigError
from llmst.filter.agreement import agreement_counts, select_agreement
from llmst.filter.balanced import select_balanced, target_prior
from llmst.filter.config import BALANCED_DEFAULT_FRACTION
from llmst.filter.curriculum import curriculum_fraction, select_curriculum
from llmst.filter.per_class import per_class_thresholds, select_per_class
from llmst.filter.registry import FilterData, Selection, register_selector, source_matrix
from llmst.filter.scores import label_quality_scores
from llmst.filter.threshold import select_by_threshold

if TYPE_CHECKING:
    from llmst.filter.config import FilterConfig


def _rule(score: str, threshold: float) -> str:
    return f"entropy <= {threshold:.6g}" if score == "entropy" else f"{score} >= {threshold:.6g}"


@register_selector("threshold")
def threshold_selector(data: FilterData, config: FilterConfig) -> Selection:
    threshold = 0.9 if config.threshold is None else config.threshold
    mask = select_by_threshold(data.pool.probs, threshold=threshold, score=config.score)
    details = {"score": config.score, "threshold": threshold, "rule": _rule(config.score, threshold)}
    return Selection(mask, details)


@register_selector("per-class")
def per_class_selector(data: FilterData, config: FilterConfig) -> Selection:
    probs, names = data.pool.probs, data.pool.names
    thresholds = per_class_thresholds(probs)
    mask = select_per_class(probs, thresholds=thresholds)
    details = {
        "score": "confidence",
        "thresholds": {
            name: (None if np.isnan(t) else float(t)) for name, t in zip(names, thresholds, strict=True)
        },
    }
    return Selection(mask, details, ranking=label_quality_scores(probs, score="confidence"))


@register_selector("balanced")
def balanced_selector(data: FilterData, config: FilterConfig) -> Selection:
    """Class-balanced top rows. With none of fraction/size/k_per_class it keeps half the rows
    (`BALANCED_DEFAULT_FRACTION`): "the largest balanced subset" keeps ~all rows once the labeler's prior is
    calibrated, a silent no-op."""
    probs, names = data.pool.probs, data.pool.names
    fraction, defaulted = config.fraction, False
    if fraction is None and config.size is None and config.k_per_class is None:
        fraction, defaulted = BALANCED_DEFAULT_FRACTION, True
    prior = config.prior_value
    mask = select_balanced(
        probs,
        prior=prior,
        fraction=fraction,
        size=config.size,
        k_per_class=config.k_per_class,
        score=config.score,
    )
    shares = target_prior(probs, prior if config.k_per_class is None else "uniform")
    if fraction is not None:
        requested = round(fraction * len(probs))
    elif config.size is not None:
        requested = config.size
    else:
        requested = (config.k_per_class or 0) * len(names)
    details = {
        "score": config.score,
        "prior": prior,
        "target_shares": {name: float(p) for name, p in zip(names, shares, strict=True)},
        "fraction": fraction,
        "size": config.size,
        "k_per_class": config.k_per_class,
        "requested": int(min(requested, len(probs))),
    }
    if defaulted:
        details["note"] = (
            f"no --fraction, --size or --k-per-class: kept the top {fraction:g} of the rows, class-balanced"
        )
    return Selection(mask, details)


@register_selector("curriculum")
def curriculum_selector(data: FilterData, config: FilterConfig) -> Selection:
    start, step, *rest = config.schedule
    if config.fraction is not None:
        fraction = config.fraction
    else:
        fraction = curriculum_fraction(
            config.round or 0, start=start, step=step, stop=rest[0] if rest else 1.0
        )
    mask = select_curriculum(data.pool.probs, fraction=fraction, score=config.score)
    details = {
        "score": config.score,
        "fraction": fraction,
        "round": config.round,
        "schedule": config.schedule,
    }
    return Selection(mask, details)


@register_selector("agreement", fields=lambda config: [config.sources_field])
def agreement_selector(data: FilterData, config: FilterConfig) -> Selection:
    pool = data.pool
    if not any(isinstance(v, dict) and v for v in pool.columns.get(config.sources_field, [])):
        raise ConfigError(
            f"records have no per-source labels in field '{config.sources_field}'",
            hint="run `llmst aggregate A B C -o OUT` first and filter its output (or set --sources-field)",
        )
    matrix, source_names = source_matrix(pool, config.sources_field)
    min_agree = config.min_agree or len(source_names) // 2 + 1
    if min_agree > len(source_names):
        raise ConfigError(
            f"--min-agree {min_agree} is more than the {len(source_names)} sources {source_names}"
        )
    n_classes = len(pool.names)
    mask = select_agreement(matrix, n_classes=n_classes, min_agree=min_agree, labels=pool.labels)
    agree, _ = agreement_counts(matrix, n_classes=n_classes, labels=pool.labels)
    ranking = agree + 1e-3 * label_quality_scores(pool.probs, score=config.score)  # ties: by trust score
    details = {
        "score": config.score,
        "min_agree": min_agree,
        "sources": source_names,
        "n_sources": len(source_names),
    }
    return Selection(mask, details, ranking=ranking)
