"""Options of `llmst filter` (the CLI is generated from `FilterConfig`; Python users fill it too).

Nothing here imports numpy or torch: `filter_signature` tells an orchestration whether a filtered file on
disk is current without loading anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from llmst import stage
from llmst.errors import ConfigError
from llmst.option_values import normalize_prior, parse_floats, parse_names, prior_shares

FilterMethod = Literal[
    "threshold", "per-class", "balanced", "curriculum", "conformal", "agreement", "learned", "student-oof"
]
TrustScore = Literal["confidence", "margin", "entropy"]
TestMethod = Literal["multi-start", "fixed-sequence", "bonferroni"]
ConformalMode = Literal["precision", "lac", "aps"]
FILTER_METHODS: tuple[str, ...] = get_args(FilterMethod)
BALANCED_DEFAULT_FRACTION = 0.5


def check_unit(value: float | None, option: str, *, open_interval: bool = False) -> None:
    """`value` in [0, 1] (or (0, 1)); None passes."""
    if value is None:
        return
    ok = 0 < value < 1 if open_interval else 0 <= value <= 1
    if not ok:
        raise ConfigError(
            f"{option} must be {'strictly ' if open_interval else ''}between 0 and 1; got {value}"
        )


@dataclass
class FilterConfig:
    """Options of `llmst filter`.

    What to keep: `method` and `score`, then that method's options: `threshold` (threshold, learned),
    `prior`/`fraction`/`size`/`k_per_class` (balanced), `fraction`/`round`/`schedule` (curriculum),
    `calibration`/`gold_field`/`target_precision`/`delta`/`test`/`conformal`/`coverage` (conformal,
    learned), `min_agree`/`sources_field` (agreement), `text_fields`/`embedding_field` (learned),
    `student`/`folds`/`student_epochs` (student-oof), `seed` (learned, student-oof). Runtime only (left out
    of the signature): `plots`.
    """

    method: FilterMethod = field(
        default="balanced",
        metadata={
            "help": "Selector (default balanced: the most confident half of the rows, in proportion to "
            "--prior; chosen on SST-2 dev, see eval/RESULTS.md)."
        },
    )
    score: TrustScore = field(
        default="confidence", metadata={"help": "Trust score: confidence, margin or entropy."}
    )
    threshold: float | None = field(
        default=None,
        metadata={
            "help": "threshold: keep score >= T (entropy: <= T; default 0.9); learned: P(correct) >= T."
        },
    )
    prior: str = field(
        default="uniform",
        metadata={"help": "balanced: target distribution: uniform, estimated, or shares like 0.3,0.7."},
    )
    fraction: float | None = field(
        default=None,
        metadata={
            "help": "balanced: fraction of all rows to keep (default 0.5 unless --size or --k-per-class); "
            "curriculum: fraction of each class."
        },
    )
    size: int | None = field(default=None, metadata={"help": "balanced: number of rows to keep."})
    k_per_class: int | None = field(default=None, metadata={"help": "balanced: rows to keep per class."})
    round: int | None = field(
        default=None,
        metadata={"help": "curriculum: self-training round (0-based); fraction from --schedule."},
    )
    schedule: list[float] = field(
        default_factory=lambda: [0.2, 0.2],
        metadata={"help": "curriculum: START,STEP[,STOP]: fraction = min(STOP, START + STEP * round)."},
    )
    calibration: str | None = field(
        default=None,
        metadata={
            "help": "conformal, learned: gold-labeled rows labeled by the same labeler (100-300 rows)."
        },
    )
    gold_field: str = field(
        default="gold",
        metadata={"help": "Gold label field (name or index) of --calibration; in LABELED, evaluation only."},
    )
    target_precision: float | None = field(
        default=None, metadata={"help": "conformal (and learned): precision to guarantee, e.g. 0.95."}
    )
    delta: float = field(default=0.1, metadata={"help": "The guarantee holds with probability >= 1 - delta."})
    test: TestMethod = field(
        default="multi-start",
        metadata={"help": "Learn-then-Test procedure: multi-start, fixed-sequence or bonferroni."},
    )
    conformal: ConformalMode = field(
        default="precision",
        metadata={
            "help": "conformal: precision (certified threshold) or lac/aps (keep singleton prediction sets)."
        },
    )
    coverage: float = field(default=0.9, metadata={"help": "lac/aps: coverage of the prediction sets."})
    min_agree: int | None = field(
        default=None,
        metadata={"help": "agreement: sources that must agree with the label (default: a majority)."},
    )
    sources_field: str = field(
        default="sources",
        metadata={"help": "agreement, learned: field of per-source labels (written by aggregate)."},
    )
    text_fields: list[str] | None = field(
        default=None,
        metadata={
            "help": "learned: text fields for the length feature; student-oof: the student's input "
            "(default: text)."
        },
    )
    embedding_field: str | None = field(
        default=None, metadata={"help": "learned: field holding an embedding vector, used as features."}
    )
    student: str = field(
        default="minilm-l6",
        metadata={"help": "student-oof: student trained on each K-1 folds (bundled name, folder, hub id)."},
    )
    folds: int = field(default=5, metadata={"help": "student-oof: number of folds."})
    student_epochs: float = field(
        default=2.0, metadata={"help": "student-oof: epochs of each fold's student."}
    )
    seed: int = field(
        default=0, metadata={"help": "learned: seed of the calibration split; student-oof: folds."}
    )
    plots: bool = field(default=True, metadata=stage.runtime("Write PNG plots next to the report."))

    def __post_init__(self) -> None:
        _check_choice(self.method, FILTER_METHODS, "--method")
        _check_choice(self.score, get_args(TrustScore), "--score")
        _check_choice(self.test, get_args(TestMethod), "--test")
        _check_choice(self.conformal, get_args(ConformalMode), "--conformal")
        if self.threshold is not None and self.method not in ("threshold", "learned"):
            raise ConfigError(
                f"--threshold does nothing with --method {self.method}",
                hint="add --method threshold (or learned); the default method is balanced",
            )
        self.prior = normalize_prior(self.prior)
        self.schedule = parse_floats(self.schedule, "--schedule") or []
        if len(self.schedule) not in (2, 3):
            raise ConfigError(
                "--schedule takes START,STEP or START,STEP,STOP", hint="e.g. --schedule 0.2,0.2"
            )
        start, step, *stop = self.schedule
        for option, value in (("start", start), ("stop", stop[0] if stop else 1.0)):
            check_unit(value, f"--schedule {option}")
        if step < 0:
            raise ConfigError(f"--schedule step must be >= 0; got {step}")
        self.text_fields = parse_names(self.text_fields, "--text-fields")
        check_unit(self.fraction, "--fraction")
        check_unit(self.target_precision, "--target-precision", open_interval=True)
        check_unit(self.delta, "--delta", open_interval=True)
        check_unit(self.coverage, "--coverage", open_interval=True)
        self._check_counts()
        self._check_method()

    @property
    def prior_value(self) -> str | list[float]:
        """`prior` as the selectors take it: "uniform", "estimated" or a list of shares."""
        return prior_shares(self.prior)

    def _check_counts(self) -> None:
        for option, value in (
            ("--size", self.size),
            ("--k-per-class", self.k_per_class),
            ("--round", self.round),
        ):
            if value is not None and value < 0:
                raise ConfigError(f"{option} must be >= 0; got {value}")
        if self.folds < 2:
            raise ConfigError(f"--folds must be >= 2; got {self.folds}")
        if self.student_epochs <= 0:
            raise ConfigError(f"--student-epochs must be > 0; got {self.student_epochs}")
        if self.min_agree is not None and self.min_agree < 1:
            raise ConfigError(f"--min-agree must be >= 1; got {self.min_agree}")

    def _check_method(self) -> None:
        method = self.method
        if method == "threshold" and self.threshold is None and self.score == "entropy":
            raise ConfigError(
                "an entropy threshold has no default", hint="give --threshold in nats, e.g. 0.3"
            )
        if method == "threshold" and self.threshold is not None:
            if self.score == "entropy" and self.threshold < 0:
                raise ConfigError(f"an entropy --threshold must be >= 0 (nats); got {self.threshold}")
            if self.score != "entropy":
                check_unit(self.threshold, "--threshold")
        if method == "learned":
            check_unit(self.threshold, "--threshold")
        if method == "balanced":
            if sum(x is not None for x in (self.fraction, self.size, self.k_per_class)) > 1:
                raise ConfigError("give at most one of --fraction, --size and --k-per-class")
            if self.k_per_class is not None and self.prior != "uniform":
                raise ConfigError(
                    "--k-per-class keeps the same number of every class; use --fraction or --size with --prior"
                )
        if method == "curriculum" and (self.fraction is None) == (self.round is None):
            raise ConfigError(
                "curriculum needs one of --fraction or --round", hint="e.g. --fraction 0.2 or --round 0"
            )
        if method in ("conformal", "learned") and not self.calibration:
            raise ConfigError(
                f"--method {method} needs a gold-labeled calibration set",
                hint="pass --calibration FILE --gold-field F (100-300 rows labeled by the same labeler)",
            )
        if method == "conformal" and self.conformal == "precision" and self.target_precision is None:
            raise ConfigError(
                "--method conformal needs --target-precision", hint="e.g. --target-precision 0.95 --delta 0.1"
            )


def _check_choice(value: Any, choices: tuple[str, ...], option: str) -> None:
    if value not in choices:
        raise ConfigError(f"{option}: unknown value {value!r}", hint=f"use one of {', '.join(choices)}")


def filter_signature(labeled: str | Path, config: FilterConfig) -> str:
    """The signature `run_filter(labeled, out, config)` records next to its output."""
    return stage.signature("filter", config, {"labeled": labeled, "calibration": config.calibration})
