"""Students: train on labeled records (`train`), relabel corpora (`predict_file`).

The configs and signatures import without torch; `train`, `predict_file` and the rest load on first use.
"""

from __future__ import annotations

from llmst.lazy import lazy_exports
from llmst.train.config import PredictConfig, TrainConfig, predict_signature, train_signature

_LAZY = {
    "train": "llmst.train.run",
    "TrainSummary": "llmst.train.run",
    "register_student_kind": "llmst.train.run",
    "predict_file": "llmst.train.predict",
    "evaluate_student": "llmst.train.predict",
}

__all__ = [
    "PredictConfig",
    "TrainConfig",
    "TrainSummary",
    "evaluate_student",
    "predict_file",
    "predict_signature",
    "register_student_kind",
    "train",
    "train_signature",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
