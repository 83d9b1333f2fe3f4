"""Filter stage: select trustworthy pseudo-labels.

Selectors are plain functions over arrays (`probs` of shape (N, K)) that return boolean masks of shape (N,);
`filter.registry` maps each `llmst filter --method` to one of them, and `filter.stage.run_filter` is the
stage that reads and writes records (options: `filter.config.FilterConfig`).

Names are imported on first use (PEP 562), so `import llmst.filter.config` stays cheap (no numpy). The
label models moved to `llmst.aggregate`; `from llmst.filter import labeling_function` (and the other
aggregation names) still works and returns the `llmst.aggregate` objects.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "agreement_counts": "agreement",
    "select_agreement": "agreement",
    "balanced_quotas": "balanced",
    "select_balanced": "balanced",
    "target_prior": "balanced",
    "CalibrationTooSmall": "conformal",
    "PrecisionThreshold": "conformal",
    "binomial_pvalue": "conformal",
    "certify_precision": "conformal",
    "clopper_pearson_lower": "conformal",
    "conformal_quantile": "conformal",
    "min_calibration_size": "conformal",
    "nonconformity_scores": "conformal",
    "precision_threshold": "conformal",
    "prediction_sets": "conformal",
    "select_singletons": "conformal",
    "select_with_precision_guarantee": "conformal",
    "curriculum_fraction": "curriculum",
    "select_curriculum": "curriculum",
    "correctness_features": "learned",
    "fit_correctness_model": "learned",
    "predict_correctness": "learned",
    "select_learned": "learned",
    "per_class_thresholds": "per_class",
    "select_per_class": "per_class",
    "confidence": "scores",
    "entropy": "scores",
    "label_quality_scores": "scores",
    "margin": "scores",
    "predicted_labels": "scores",
    "pseudo_label_correct": "scores",
    "select_by_threshold": "threshold",
    "FilterConfig": "config",
    "Selection": "registry",
    "register_selector": "registry",
    "run_filter": "stage",
    "summarize": "stage",
}
# Moved to llmst.aggregate (kept here so existing labeling-function files and scripts keep working).
_MOVED = {
    "ABSTAIN": "llmst.aggregate.labeling",
    "apply_labeling_functions": "llmst.aggregate.labeling",
    "labeling_function": "llmst.aggregate.labeling",
    "load_labeling_functions": "llmst.aggregate.labeling",
    "DawidSkeneResult": "llmst.aggregate.label_models",
    "dawid_skene": "llmst.aggregate.label_models",
    "estimate_source_accuracies": "llmst.aggregate.label_models",
    "log_odds_weights": "llmst.aggregate.label_models",
    "majority_vote": "llmst.aggregate.label_models",
    "mean_probs": "llmst.aggregate.label_models",
    "weighted_vote": "llmst.aggregate.label_models",
    "AggregateConfig": "llmst.aggregate.config",
    "run_aggregate": "llmst.aggregate.stage",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"llmst.filter.{_EXPORTS[name]}")
    elif name in _MOVED:
        module = importlib.import_module(_MOVED[name])
    else:
        raise AttributeError(f"module 'llmst.filter' has no attribute '{name}'")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_MOVED))
