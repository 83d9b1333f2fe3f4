"""`llmst tune`: choose a labeling prompt for a new task on a few gold rows, by cross-validation.

`import llmst.tune.config` stays cheap (no numpy, no torch); `run_tune` loads on first use.
"""

from __future__ import annotations

from llmst.tune.config import TuneConfig

__all__ = ["TuneConfig", "run_tune"]


def __getattr__(name: str):
    if name == "run_tune":
        from llmst.tune.run import run_tune

        return run_tune
    raise AttributeError(f"module 'llmst.tune' has no attribute '{name}'")
