"""`llmst tune`: choose a labeling prompt for a new task on a few gold rows, by cross-validation.

`import llmst.tune.config` stays cheap (no numpy, no torch); `run_tune` loads on first use.
"""

from __future__ import annotations

from llmst.lazy import lazy_exports
from llmst.tune.config import TuneConfig

__all__ = ["TuneConfig", "run_tune"]

__getattr__, __dir__ = lazy_exports(__name__, {"run_tune": "run"})
