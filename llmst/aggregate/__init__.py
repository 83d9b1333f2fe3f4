"""Aggregate stage: fuse several labelers of one corpus (LLM labelers and labeling functions).

Label models are plain functions over `source_labels` of shape (N, S) (`aggregate.label_models`);
labeling functions are user rules (`aggregate.labeling`); `aggregate.stage.run_aggregate` is the stage that
reads and writes records (options: `aggregate.config.AggregateConfig`). Names load on first use (PEP 562),
so `import llmst.aggregate.config` stays cheap.
"""

from __future__ import annotations

from llmst.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ABSTAIN": "labeling",
    "apply_labeling_functions": "labeling",
    "labeling_function": "labeling",
    "load_labeling_functions": "labeling",
    "DawidSkeneResult": "label_models",
    "dawid_skene": "label_models",
    "estimate_source_accuracies": "label_models",
    "log_odds_weights": "label_models",
    "majority_vote": "label_models",
    "mean_probs": "label_models",
    "weighted_vote": "label_models",
    "AggregateConfig": "config",
    "run_aggregate": "stage",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
