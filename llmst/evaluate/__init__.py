"""`llmst evaluate`: score labeled records against gold labels (options: `evaluate.config.EvaluateConfig`).

`import llmst.evaluate.config` stays cheap (no numpy); `evaluate_file` and `evaluate_labeled` load on first use.
"""

from __future__ import annotations

from llmst.evaluate.config import EvaluateConfig
from llmst.lazy import lazy_exports

_LAZY = {"evaluate_file": "llmst.evaluate.run", "evaluate_labeled": "llmst.evaluate.run"}

__all__ = ["EvaluateConfig", "evaluate_file", "evaluate_labeled"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
