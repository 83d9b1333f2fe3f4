"""Debate and consultancy transcripts (`llmst debate`), the context weak models see in weak-to-strong runs."""

from llmst.debate.config import DebateConfig

__all__ = ["DebateConfig", "debate_signature", "run_debate"]


def __getattr__(name: str):
    if name in ("run_debate", "debate_signature"):
        from llmst.debate import run

        return getattr(run, name)
    raise AttributeError(name)
