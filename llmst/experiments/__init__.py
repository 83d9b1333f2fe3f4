"""Orchestrations that only call stages: self-training (more to come: weak-to-strong, Trans-Encoder)."""

from llmst.experiments.selftrain import SelfTrainConfig, load_selftrain_config, run_selftrain

__all__ = ["SelfTrainConfig", "load_selftrain_config", "run_selftrain"]
