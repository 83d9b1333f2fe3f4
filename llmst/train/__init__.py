"""Students: train on labeled records (`train`), relabel corpora (`predict_file`).

The configs and signatures import without torch; `train`, `predict_file` and the rest load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmst.train' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
