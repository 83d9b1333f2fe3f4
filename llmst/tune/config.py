"""Options of `llmst tune` (the CLI is generated from `TuneConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llmst.errors import ConfigError
from llmst.label.config import TASK_HINT, parse_label_descriptions
from llmst.models import DEFAULT_LABELER
from llmst.option_values import check_choices, parse_names
from llmst.stage import runtime

# prior: uniform target; prior-gold: the label shares of the tuning rows; prior-gold-half: halfway (in log
# space) from uniform to those shares, which macro-F1 tends to prefer; prior-estimated: the EM estimate.
Calibration = Literal["none", "prior", "prior-gold", "prior-gold-half", "prior-estimated", "contextual"]
CALIBRATIONS: tuple[str, ...] = (
    "none",
    "prior",
    "prior-gold",
    "prior-gold-half",
    "prior-estimated",
    "contextual",
)


@dataclass
class TuneConfig:
    """How `llmst tune` searches: prompt families x verbalizers x calibrations x shots, scored by K-fold
    cross-validation on the gold rows (macro-F1 of the pooled out-of-fold predictions)."""

    task: str | None = field(
        default=None, metadata={"help": "A task to start from (its prompt is a candidate), or use --labels."}
    )
    labels: list[str] | None = field(default=None, metadata={"help": "Ad-hoc task: label names."})
    instruction: str | None = field(default=None, metadata={"help": "Ad-hoc task: what to decide."})
    label_descriptions: str | None = field(
        default=None, metadata={"help": 'Ad-hoc task: name="description",... or a YAML file.'}
    )
    text_fields: list[str] | None = field(
        default=None, metadata={"help": "Field(s) that feed the prompt.", "cli": ["--text-field"]}
    )
    gold_field: str = field(
        default="gold", metadata={"help": "Field holding the gold label (name or index)."}
    )
    folds: int = field(default=5, metadata={"help": "Cross-validation folds over the gold rows."})
    shots: list[int] | None = field(
        default=None,
        metadata={
            "help": "Numbers of demonstrations to try (0 = zero-shot); default 0,4. Drawn from other folds."
        },
    )
    select: Literal["random", "knn"] = field(
        default="random",
        metadata={
            "help": "How few-shot candidates pick demonstrations (as llmst label --select): random (one "
            "label-stratified sample per fold, then of all gold rows) or knn (each row's nearest gold rows "
            "by MiniLM embeddings, from the other folds; what the written task then does on the corpus)."
        },
    )
    draws: int = field(
        default=4,
        metadata={
            "help": "A few-shot choice with --select random: label-stratified draws of demonstrations from all "
            "gold rows to try; each is scored on the gold rows outside it and the best is written (1: one "
            "seeded draw, unscored). Small models swing by several points from one draw to another."
        },
    )
    label_words: int = field(
        default=3,
        metadata={
            "help": "Words per label to find on the gold rows (the words the labeler itself says at the answer "
            "for that label's rows, e.g. ' bad' for negative) and pool with the label's name, as one more "
            "verbalizer style per prompt family; found on the other folds only while cross-validating. 0: off."
        },
    )
    calibrations: list[str] | None = field(
        default=None,
        metadata={
            "help": "Calibrations to try (default all): none, prior, prior-gold, prior-gold-half, "
            "prior-estimated, contextual."
        },
    )
    model: str = field(default=DEFAULT_LABELER, metadata={"help": "The labeler (as llmst label --model)."})
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = field(
        default="auto", metadata={"help": "auto, bfloat16, float16 or float32."}
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of the folds, the demonstrations and the bootstrap."}
    )
    batch_size: int | None = field(
        default=None, metadata=runtime("Sequences per forward pass (default: as llmst label).")
    )
    cache_path: str | None = field(
        default=None, metadata=runtime("sqlite answer cache (default ~/.cache/llmst).")
    )
    overwrite: bool = field(default=False, metadata=runtime("Replace an existing output."))
    progress: bool = field(default=True, metadata=runtime("Progress lines on stderr."))

    def __post_init__(self) -> None:
        check_choices(self)
        self.labels = parse_names(self.labels, "--labels")
        self.text_fields = parse_names(self.text_fields, "--text-field")
        self.calibrations = parse_names(self.calibrations, "--calibrations") or list(CALIBRATIONS)
        bad = [c for c in self.calibrations if c not in CALIBRATIONS]
        if bad:
            raise ConfigError(f"--calibrations: unknown {bad}", hint="choose from " + ", ".join(CALIBRATIONS))
        shots = parse_names(self.shots, "--shots") or ["0", "4"]
        try:
            self.shots = sorted({int(s) for s in shots})
        except ValueError:
            raise ConfigError(
                f"--shots: expected whole numbers, got {shots}", hint="e.g. --shots 0,4,8"
            ) from None
        if min(self.shots) < 0:
            raise ConfigError("--shots must be >= 0")
        if (self.task is None) == (self.labels is None):
            raise ConfigError("give --task or --labels (the labels to tune a prompt for)", hint=TASK_HINT)
        if self.draws < 1:
            raise ConfigError(f"--draws must be >= 1, got {self.draws}")
        if self.label_words < 0:
            raise ConfigError(f"--label-words must be >= 0, got {self.label_words}")
        if self.folds < 2:
            raise ConfigError(f"--folds must be >= 2, got {self.folds}")
        if self.label_descriptions is not None:
            parse_label_descriptions(self.label_descriptions, self.labels or [])
