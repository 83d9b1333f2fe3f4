"""Filter stage: select trustworthy pseudo-labels, and aggregate several labelers.

Selectors are plain functions over arrays (`probs` of shape (N, K)) that return boolean masks of shape (N,);
`run_filter` / `run_aggregate` are the stages that read and write records.
"""

from llmst.filter.aggregate import (
    ABSTAIN,
    DawidSkeneResult,
    apply_labeling_functions,
    dawid_skene,
    estimate_source_accuracies,
    labeling_function,
    load_labeling_functions,
    log_odds_weights,
    majority_vote,
    mean_probs,
    weighted_vote,
)
from llmst.filter.agreement import agreement_counts, select_agreement
from llmst.filter.balanced import balanced_quotas, select_balanced, target_prior
from llmst.filter.conformal import (
    CalibrationTooSmall,
    PrecisionThreshold,
    binomial_pvalue,
    clopper_pearson_lower,
    conformal_quantile,
    min_calibration_size,
    nonconformity_scores,
    precision_threshold,
    prediction_sets,
    select_singletons,
    select_with_precision_guarantee,
)
from llmst.filter.curriculum import curriculum_fraction, select_curriculum
from llmst.filter.learned import (
    correctness_features,
    fit_correctness_model,
    predict_correctness,
    select_learned,
)
from llmst.filter.per_class import per_class_thresholds, select_per_class
from llmst.filter.run import AggregateConfig, FilterConfig, run_aggregate, run_filter, summarize
from llmst.filter.scores import confidence, entropy, label_quality_scores, margin, predicted_labels
from llmst.filter.threshold import select_by_threshold

__all__ = [
    "ABSTAIN",
    "AggregateConfig",
    "CalibrationTooSmall",
    "DawidSkeneResult",
    "FilterConfig",
    "PrecisionThreshold",
    "agreement_counts",
    "apply_labeling_functions",
    "balanced_quotas",
    "binomial_pvalue",
    "clopper_pearson_lower",
    "confidence",
    "conformal_quantile",
    "correctness_features",
    "curriculum_fraction",
    "dawid_skene",
    "entropy",
    "estimate_source_accuracies",
    "fit_correctness_model",
    "label_quality_scores",
    "labeling_function",
    "load_labeling_functions",
    "log_odds_weights",
    "majority_vote",
    "margin",
    "mean_probs",
    "min_calibration_size",
    "nonconformity_scores",
    "per_class_thresholds",
    "precision_threshold",
    "predict_correctness",
    "predicted_labels",
    "prediction_sets",
    "run_aggregate",
    "run_filter",
    "select_agreement",
    "select_balanced",
    "select_by_threshold",
    "select_curriculum",
    "select_learned",
    "select_per_class",
    "select_singletons",
    "select_with_precision_guarantee",
    "summarize",
    "target_prior",
    "weighted_vote",
]
