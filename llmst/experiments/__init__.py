"""Orchestrations that only call stages: self-training (more to come: weak-to-strong, Trans-Encoder).

Import the orchestration you need from its module (`llmst.experiments.selftrain`); this package imports
nothing heavy.
"""
