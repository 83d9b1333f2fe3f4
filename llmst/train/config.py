"""Options of `llmst train` (the CLI fills this; Python users can too)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmst.errors import ConfigError

STUDENT_KINDS = ("classifier", "generative")
LOSSES = ("ce", "doubly-robust")


@dataclass
class TrainConfig:
    """How a student is trained on labeled records.

    Parameters that choose the student: `student`, `kind`, `lora*`. Parameters that choose the targets:
    `soft_labels`, `weight_field`, `loss`, `gold*`. Optimisation: `epochs` ... `bf16`. Bookkeeping: `save_steps`,
    `resume`, `overwrite`.
    """

    student: str = field(
        default="minilm-l6",
        metadata={"help": "Bundled name, model folder, .gguf file or hub id of the student."},
    )
    kind: Literal["classifier", "generative"] = field(
        default="classifier",
        metadata={
            "help": "classifier (sequence classification head) or generative (SFT with TRL, prompt -> label)."
        },
    )
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft) instead of all weights."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target: str = field(
        default="all-linear", metadata={"help": "LoRA target modules: all-linear or comma-separated names."}
    )
    text_fields: list[str] | None = field(default=None, metadata={"help": "Fields joined as the input text."})
    labels: list[str] | None = field(
        default=None, metadata={"help": "Label names in order (default: the keys of the records' probs)."}
    )
    soft_labels: bool = field(
        default=False, metadata={"help": "Train on the labeler's probs, not argmax labels."}
    )
    weight_field: str | None = field(
        default=None,
        metadata={"help": "Numeric record field used as a per-row loss weight (e.g. confidence)."},
    )
    loss: Literal["ce", "doubly-robust"] = field(
        default="ce", metadata={"help": "ce, or doubly-robust (needs --gold rows that also carry probs)."}
    )
    gold: str | None = field(
        default=None, metadata={"help": "Small gold-labeled file mixed into every batch."}
    )
    gold_field: str = field(default="gold", metadata={"help": "Field of the gold label in --gold."})
    gold_share: float = field(default=0.0, metadata={"help": "Share of each batch drawn from --gold (0-1)."})
    eval: str | None = field(
        default=None,
        metadata={"help": "Gold-labeled file scored after training (metrics go in the model card)."},
    )
    eval_gold_field: str = field(default="gold", metadata={"help": "Gold field of --eval."})
    epochs: float = field(default=3.0, metadata={"help": "Passes over the pseudo-labeled rows."})
    learning_rate: float | None = field(
        default=None, metadata={"help": "Peak learning rate (default 5e-5 full fine-tune, 2e-4 LoRA)."}
    )
    batch_size: int = field(default=16, metadata={"help": "Rows per batch per process."})
    max_length: int = field(
        default=128, metadata={"help": "Tokens per input at most (longer inputs are cut)."}
    )
    warmup_ratio: float = field(default=0.1, metadata={"help": "Linear warm-up share of the steps."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    seed: int = field(default=0, metadata={"help": "Seed for the head init, data order and dropout."})
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 autocast (default: on where a GPU supports it, off on CPU)."}
    )
    save_steps: int = field(
        default=200, metadata={"help": "Checkpoint every N optimiser steps (for resume)."}
    )
    resume: bool = field(default=True, metadata={"help": "Resume from the newest checkpoint in the output."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing trained model folder."})
    limit: int | None = field(default=None, metadata={"help": "Train on the first N rows only."})
    prompt: str = field(
        default="{{ text }}\nLabel:",
        metadata={"help": "generative: Jinja template of the prompt; the target is ' <label>'."},
    )

    def __post_init__(self) -> None:
        if isinstance(self.text_fields, str):
            self.text_fields = [f.strip() for f in self.text_fields.split(",") if f.strip()]
        if isinstance(self.labels, str):
            self.labels = [f.strip() for f in self.labels.split(",") if f.strip()]
        if self.kind not in STUDENT_KINDS:
            raise ConfigError(f"unknown student kind '{self.kind}'", hint="use classifier or generative")
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss '{self.loss}'", hint="use ce or doubly-robust")
        if not 0.0 <= self.gold_share < 1.0:
            raise ConfigError("--gold-share must be in [0, 1)")
        if self.gold_share > 0 and not self.gold:
            raise ConfigError("--gold-share needs --gold FILE")
        if self.loss == "doubly-robust" and (not self.gold or self.gold_share <= 0):
            raise ConfigError(
                "--loss doubly-robust needs gold rows in every batch",
                hint="pass --gold FILE (labeled by the same labeler, with a gold field) and --gold-share, e.g. 0.25",
            )
        if self.kind == "generative" and (self.soft_labels or self.weight_field or self.loss != "ce"):
            raise ConfigError("a generative student trains on hard labels with plain cross-entropy")
        if self.epochs <= 0 or self.batch_size < 1 or self.max_length < 8:
            raise ConfigError("--epochs must be > 0, --batch-size >= 1 and --max-length >= 8")
        if self.save_steps < 1:
            raise ConfigError("--save-steps must be >= 1")
        if self.eval and not Path(self.eval).exists():
            raise ConfigError(f"--eval file not found: {self.eval}")
        if self.gold and not Path(self.gold).exists():
            raise ConfigError(f"--gold file not found: {self.gold}")
        if self.learning_rate is None:
            self.learning_rate = 2e-4 if self.lora else 5e-5
        if self.learning_rate <= 0:
            raise ConfigError("--learning-rate must be > 0")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
