"""Options of `llmst aggregate` (the CLI is generated from `AggregateConfig`; Python users fill it too).

Nothing here imports numpy or torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from llmst import stage
from llmst.errors import ConfigError
from llmst.option_values import parse_floats, parse_names

AggregateMethod = Literal["vote", "weighted", "mean", "dawid-skene"]
AGGREGATE_METHODS: tuple[str, ...] = get_args(AggregateMethod)


@dataclass
class AggregateConfig:
    """Options of `llmst aggregate`: the label model (`method` and its options), the sources' names and
    weights, labeling functions, and the gold field used for the report. Runtime only: `plots`."""

    method: AggregateMethod = field(
        default="vote",
        metadata={"help": "vote, weighted (log-odds weights), mean (of probs) or dawid-skene (EM)."},
    )
    names: list[str] | None = field(
        default=None, metadata={"help": "Source names, one per file (default: file names)."}
    )
    weights: list[float] | None = field(
        default=None,
        metadata={"help": "vote, weighted, mean: one weight per source (files, then labeling functions)."},
    )
    labeling_functions: str | None = field(
        default=None,
        metadata={
            "help": "Python file of @labeling_function rules (extra sources).",
            "cli": ["--labeling-functions", "--lf"],
        },
    )
    max_iter: int = field(default=100, metadata={"help": "dawid-skene: EM iterations at most."})
    tol: float = field(
        default=1e-6, metadata={"help": "dawid-skene: stop when no posterior changes by more than this."}
    )
    smoothing: float = field(default=0.01, metadata={"help": "dawid-skene: pseudo-count per confusion cell."})
    gold_field: str = field(
        default="gold", metadata={"help": "When records carry it: each source's gold accuracy in the report."}
    )
    plots: bool = field(default=True, metadata=stage.runtime("Write PNG plots next to the report."))

    def __post_init__(self) -> None:
        if self.method not in AGGREGATE_METHODS:
            raise ConfigError(
                f"--method: unknown value {self.method!r}", hint=f"use one of {', '.join(AGGREGATE_METHODS)}"
            )
        self.names = parse_names(self.names, "--names")
        self.weights = parse_floats(self.weights, "--weights")
        if self.weights is not None and (not self.weights or min(self.weights) < 0):
            raise ConfigError(
                "--weights must be non-negative numbers, one per source", hint="e.g. --weights 2,1,1"
            )
        if self.weights is not None and self.method == "dawid-skene":
            raise ConfigError("dawid-skene estimates its own source weights", hint="drop --weights")
        if self.max_iter < 1:
            raise ConfigError(f"--max-iter must be >= 1; got {self.max_iter}")
        if self.smoothing < 0:
            raise ConfigError(f"--smoothing must be >= 0; got {self.smoothing}")
        if self.tol <= 0:
            raise ConfigError(f"--tol must be > 0; got {self.tol}")


def aggregate_inputs(inputs: Sequence[str | Path], config: AggregateConfig) -> dict[str, str | Path | None]:
    """The inputs of an aggregate run, by name, as the signature fingerprints them."""
    named: dict[str, str | Path | None] = {f"input_{i}": path for i, path in enumerate(inputs)}
    named["labeling_functions"] = config.labeling_functions
    return named


def aggregate_signature(inputs: Sequence[str | Path], config: AggregateConfig) -> str:
    """The signature `run_aggregate(inputs, out, config)` records next to its output."""
    return stage.signature("aggregate", config, aggregate_inputs(inputs, config))
