"""`llmst evaluate`: score labeled records against gold labels (options: `evaluate.config.EvaluateConfig`).

`import llmst.evaluate.config` stays cheap (no numpy); `evaluate_file` and `evaluate_labeled` load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from llmst.evaluate.config import EvaluateConfig

_LAZY = {"evaluate_file": "llmst.evaluate.run", "evaluate_labeled": "llmst.evaluate.run"}

__all__ = ["EvaluateConfig", "evaluate_file", "evaluate_labeled"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmst.evaluate' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
