"""Options of `llmst evaluate` (the CLI is generated from `EvaluateConfig`; nothing here imports numpy)."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmst import stage
from llmst.errors import ConfigError


@dataclass
class EvaluateConfig:
    """How labeled records are scored against their gold labels."""

    gold_field: str = field(
        default="gold", metadata={"help": "Field holding the gold label (a label name or its index)."}
    )
    bins: int = field(default=10, metadata={"help": "Bins of the reliability diagram and of the ECE."})
    report_dir: str | None = field(
        default=None,
        metadata=stage.runtime(
            "Also write report.json and the PNG plots (reliability, accuracy-coverage) here."
        ),
    )

    def __post_init__(self) -> None:
        if not self.gold_field:
            raise ConfigError("--gold-field must name a field", hint="the default is gold")
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < 1:
            raise ConfigError(f"--bins must be an integer >= 1; got {self.bins!r}", hint="the default is 10")
