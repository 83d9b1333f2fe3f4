"""Filter stage: select trustworthy pseudo-labels.

Selectors are plain functions over arrays (`probs` of shape (N, K)) that return boolean masks of shape (N,);
`filter.registry` maps each `llmst filter --method` to one of them, and `filter.stage.run_filter` is the
stage that reads and writes records (options: `filter.config.FilterConfig`).

Names are imported on first use (PEP 562), so `import llmst.filter.config` stays cheap (no numpy). Label
models and labeling functions live in `llmst.aggregate`.
"""

from __future__ import annotations

from llmst.lazy import lazy_exports

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
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
