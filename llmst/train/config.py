"""Options of `llmst train` and `llmst predict` (the CLI is generated from these; Python users fill them too).

Nothing here imports torch: `train_signature` and `predict_signature` tell an orchestration whether a student
(or a student's predictions) on disk is current without loading a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from llmst import stage
from llmst.engine_options import check_ray_options, num_workers_field, ray_address_field
from llmst.errors import ConfigError
from llmst.option_values import parse_names

StudentKind = Literal["classifier", "generative", "cross-encoder", "bi-encoder"]
Loss = Literal[
    "ce", "doubly-robust", "logconf", "bce", "mse", "cosent", "angle", "marginmse", "kldiv", "cprd"
]
STUDENT_KINDS = get_args(StudentKind)
LOSSES = get_args(Loss)
PAIR_KINDS = ("cross-encoder", "bi-encoder")
# Bi-encoder losses over query groups (query, positive, negatives) with teacher scores (llmst.pairs.groups).
LISTWISE_LOSSES = ("marginmse", "kldiv", "cprd")
# Losses that take the batch's other passages as negatives: trained on batches without repeated texts.
IN_BATCH_NEGATIVE_LOSSES = ("cprd",)
# The losses each kind trains with; the first is its default.
KIND_LOSSES = {
    "classifier": ("ce", "doubly-robust", "logconf"),
    "generative": ("ce",),
    "cross-encoder": ("bce", "mse"),
    "bi-encoder": ("cosent", "angle", "mse", *LISTWISE_LOSSES),
}


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(
            f"--limit must be a whole number >= 1, not {limit!r}", hint="leave it out for all rows"
        )


@dataclass
class TrainConfig:
    """How a student is trained on labeled records.

    Parameters that choose the student: `student`, `kind`, `lora*`. Parameters that choose the targets:
    `text_fields`, `labels`, `soft_labels`, `weight_field`, `loss`, `gold*`, `limit`. Optimisation: `epochs`
    ... `bf16`. Scoring after training: `eval`, `eval_gold_field`. Runtime only (left out of the signature):
    `save_steps`, `resume`, `overwrite`, `progress`.
    """

    student: str = field(
        default="minilm-l6",
        metadata={"help": "Student: bundled name (minilm-l6, smollm2-135m-instruct, ...), folder or hub id."},
    )
    kind: StudentKind = field(
        default="classifier",
        metadata={
            "help": "classifier (sequence classification head), generative (TRL SFT), or for text pairs "
            "cross-encoder (sentence-transformers CrossEncoder) or bi-encoder (SentenceTransformer)."
        },
    )
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (merged into the saved model)."})
    lora_r: int = field(default=8, metadata=stage.only_if("LoRA rank.", "lora", True))
    lora_alpha: int = field(
        default=16, metadata=stage.only_if("LoRA alpha (scale of the adapters).", "lora", True)
    )
    lora_dropout: float = field(default=0.05, metadata=stage.only_if("LoRA dropout.", "lora", True))
    lora_target: str = field(
        default="all-linear",
        metadata=stage.only_if("LoRA targets: all-linear or module names.", "lora", True),
    )
    text_fields: list[str] | None = field(
        default=None, metadata={"help": "Text field(s), comma-separated (default: text)."}
    )
    labels: list[str] | None = field(
        default=None, metadata={"help": "Label names in order (default: keys of probs)."}
    )
    soft_labels: bool = field(default=False, metadata={"help": "Fit the labeler's probs."})
    weight_field: str | None = field(
        default=None, metadata={"help": "Per-row loss weight field, e.g. confidence."}
    )
    loss: Loss | None = field(
        default=None,
        metadata={
            "help": "classifier: ce (default), doubly-robust (needs --gold and --gold-share) or logconf "
            "(weak-to-strong: also fit the student's own hardened predictions); cross-encoder: bce (default) "
            "or mse on --score-field; bi-encoder: cosent (default), angle, or mse (cosine vs score), or on query "
            "groups (pairs sharing text_a) with teacher scores: marginmse, kldiv, or cprd (the teacher's order "
            "among hard negatives plus a contrastive loss for the positive)."
        },
    )
    score_field: str = field(
        default="score",
        metadata=stage.only_if(
            "cross-encoder, bi-encoder: the pair's target field (a teacher's score; label for gold pairs).",
            "kind",
            PAIR_KINDS,
        ),
    )
    negatives: int = field(
        default=3,
        metadata=stage.only_if(
            "marginmse, kldiv, cprd: negatives per query, the teacher's highest-scored of its other pairs "
            "(as many as pairs sample --method hard-negatives --negatives mined; queries with fewer are left "
            "out and counted).",
            "loss",
            LISTWISE_LOSSES,
        ),
    )
    positive_field: str | None = field(
        default=None,
        metadata=stage.only_if(
            "marginmse, kldiv, cprd: field marking a query's positive pair(s) (true or > 0: positive from "
            "pairs sample --method hard-negatives, or a gold label); default: each query's teacher-best pair.",
            "loss",
            LISTWISE_LOSSES,
        ),
    )
    temperature: float = field(
        default=0.05,
        metadata=stage.only_if(
            "kldiv, cprd: the student's score of a passage is cosine / temperature.",
            "loss",
            ("kldiv", "cprd"),
        ),
    )
    teacher_temperature: float | None = field(
        default=None,
        metadata=stage.only_if(
            "kldiv: the teacher's softmax is over score / teacher temperature. Default: --temperature when "
            "the teacher scores lie in [0, 1] (probabilities, e.g. a one-label cross-encoder's sigmoid), else 1 "
            "(raw logits: divided by 0.05 their softmax underflows to one-hot). A warning (stderr and the card) "
            "says when it underflows anyway.",
            "loss",
            "kldiv",
        ),
    )
    rank_weight: float = field(
        default=1.0,
        metadata=stage.only_if(
            "cprd: weight of the ranking term (teacher order among negatives) next to the contrastive one.",
            "loss",
            "cprd",
        ),
    )
    logconf_weight: float = field(
        default=0.75,
        metadata=stage.only_if(
            "logconf: final weight of the student's hardened predictions.", "loss", "logconf"
        ),
    )
    logconf_warmup: float = field(
        default=0.2,
        metadata=stage.only_if(
            "logconf: share of the steps over which that weight ramps up from 0.", "loss", "logconf"
        ),
    )
    gold: str | None = field(
        default=None, metadata={"help": "Small gold-labeled file mixed into every batch."}
    )
    gold_field: str = field(default="gold", metadata={"help": "Gold label field of --gold."})
    gold_share: float = field(default=0.0, metadata={"help": "Share of each batch taken from --gold."})
    eval: str | None = field(
        default=None, metadata={"help": "Gold-labeled file scored after training (in the model card)."}
    )
    eval_gold_field: str = field(default="gold", metadata={"help": "Gold field of --eval."})
    epochs: float = field(default=2.0, metadata={"help": "Passes over the pseudo-labeled rows."})
    learning_rate: float | None = field(
        default=None, metadata={"help": "Peak learning rate (default 5e-5, LoRA 2e-4)."}
    )
    batch_size: int = field(default=16, metadata={"help": "Rows per batch per process."})
    max_length: int = field(default=128, metadata={"help": "Tokens per input at most."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Linear warm-up share of the steps."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    seed: int = field(default=0, metadata={"help": "Seed (head init, data order, dropout)."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast (default: on for bf16 GPUs)."})
    limit: int | None = field(default=None, metadata={"help": "Train on the first N rows only."})
    prompt: str = field(
        default="{{ text }}\nLabel:",
        metadata={"help": "generative: Jinja prompt template; the target is ' <label>'."},
    )
    save_steps: int = field(default=200, metadata=stage.runtime("Checkpoint every N steps (resume point)."))
    resume: bool = field(
        default=True, metadata=stage.runtime("Resume an interrupted run from its last checkpoint.")
    )
    overwrite: bool = field(default=False, metadata=stage.runtime("Replace an existing model folder."))
    progress: bool = field(default=True, metadata=stage.runtime("Progress bars and training logs."))

    def __post_init__(self) -> None:
        self.text_fields = parse_names(self.text_fields, "--text-field")
        self.labels = parse_names(self.labels, "--labels")
        if self.kind not in STUDENT_KINDS:
            raise ConfigError(
                f"unknown student kind '{self.kind}'", hint="use one of: " + ", ".join(STUDENT_KINDS)
            )
        if self.loss is None:
            self.loss = KIND_LOSSES[self.kind][0]
        if self.loss not in KIND_LOSSES[self.kind]:
            raise ConfigError(
                f"--kind {self.kind} does not train with --loss {self.loss}",
                hint="use one of: " + ", ".join(KIND_LOSSES[self.kind]),
            )
        if self.kind in PAIR_KINDS:
            self._check_pair_options()
        if self.negatives < 1 or self.temperature <= 0 or self.rank_weight < 0:
            raise ConfigError("--negatives must be >= 1, --temperature > 0 and --rank-weight >= 0")
        if self.teacher_temperature is not None and self.teacher_temperature <= 0:
            raise ConfigError("--teacher-temperature must be > 0")
        if not 0.0 <= self.gold_share < 1.0:
            raise ConfigError("--gold-share must be in [0, 1)")
        if self.gold_share > 0 and not self.gold:
            raise ConfigError("--gold-share needs --gold FILE")
        if self.loss == "doubly-robust" and (not self.gold or self.gold_share <= 0):
            raise ConfigError(
                "--loss doubly-robust needs gold rows in every batch",
                hint="pass --gold FILE (labeled by the same labeler, with a gold field) and --gold-share, e.g. 0.25",
            )
        if not 0.0 <= self.logconf_weight <= 1.0 or not 0.0 <= self.logconf_warmup <= 1.0:
            raise ConfigError("--logconf-weight and --logconf-warmup must be in [0, 1]")
        if self.kind == "generative" and (self.soft_labels or self.weight_field or self.loss != "ce"):
            raise ConfigError("a generative student trains on hard labels with plain cross-entropy")
        if self.epochs <= 0 or self.batch_size < 1 or self.max_length < 8:
            raise ConfigError("--epochs must be > 0, --batch-size >= 1 and --max-length >= 8")
        if self.lora_r < 1 or not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError("--lora-r must be >= 1 and --lora-dropout in [0, 1)")
        if not 0.0 <= self.warmup_ratio < 1.0 or self.weight_decay < 0:
            raise ConfigError("--warmup-ratio must be in [0, 1) and --weight-decay >= 0")
        if self.save_steps < 1:
            raise ConfigError("--save-steps must be >= 1")
        _check_limit(self.limit)
        if self.eval and not Path(self.eval).exists():
            raise ConfigError(f"--eval file not found: {self.eval}")
        if self.gold and not Path(self.gold).exists():
            raise ConfigError(f"--gold file not found: {self.gold}")
        if self.learning_rate is None:
            self.learning_rate = 2e-4 if self.lora else 5e-5
        if self.learning_rate <= 0:
            raise ConfigError("--learning-rate must be > 0")

    def _check_pair_options(self) -> None:
        self.text_fields = self.text_fields or ["text_a", "text_b"]
        if len(self.text_fields) != 2:
            raise ConfigError(f"--kind {self.kind} reads two text fields, not {self.text_fields}")
        given = [
            option
            for option, value in (
                ("--labels", self.labels),
                ("--soft-labels", self.soft_labels),
                ("--weight-field", self.weight_field),
                ("--gold", self.gold),
                ("--lora", self.lora),
            )
            if value
        ]
        if given:
            raise ConfigError(
                f"--kind {self.kind} trains on pair scores: {', '.join(given)} do not apply",
                hint="the target of each pair is --score-field (default score)",
            )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PredictConfig:
    """How a trained student relabels a corpus (`llmst predict`). Only `text_fields`, `id_field`, `encoding`,
    `limit` and `shard` change the output; the rest is runtime."""

    text_fields: list[str] | None = field(
        default=None,
        metadata={"help": "Text field(s), comma-separated (default: those the student was trained on)."},
    )
    id_field: str = field(default="id", metadata={"help": "Input field holding a stable id."})
    encoding: str = field(
        default="utf-8",
        metadata={"help": "Text encoding of CSV, TSV and .txt inputs (JSON is always UTF-8)."},
    )
    limit: int | None = field(default=None, metadata={"help": "Only the first N rows."})
    shard: str | None = field(
        default=None,
        metadata=stage.only_if_set(
            "I/N (0 <= I < N): relabel only the rows whose id hashes to shard I of N (the partition of "
            "llmst label --shard), for job arrays; `llmst merge` joins the N outputs."
        ),
    )
    batch_size: int = field(default=64, metadata=stage.runtime("Rows per forward pass."))
    overwrite: bool = field(default=False, metadata=stage.runtime("Replace OUT."))
    progress: bool = field(default=True, metadata=stage.runtime("Progress bars."))
    engine: Literal["local", "ray"] = field(
        default="local",
        metadata=stage.runtime(
            "local (this process) or ray: --num-workers Ray tasks of one CPU each run the shards "
            "`--shard I/N` of the input (under OUT.parts/), then `llmst merge` joins them into OUT: the same "
            'records as one local run; a rerun skips finished shards. Needs pip install "llmst[ray]".'
        ),
    )
    ray_address: str | None = ray_address_field()
    num_workers: int | None = num_workers_field(
        "--engine ray: shards, one Ray task of one CPU each (default: the cluster's CPUs)."
    )

    def __post_init__(self) -> None:
        from llmst.shard import normalize_shard

        self.text_fields = parse_names(self.text_fields, "--text-field")
        self.shard = normalize_shard(self.shard)
        stage.check_encoding(self.encoding)
        _check_limit(self.limit)
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be >= 1")
        if check_ray_options(self, ("ray_address", "num_workers")) and self.shard is not None:
            raise ConfigError(
                "--engine ray runs its own shards: it does not take --shard",
                hint="drop --shard (Ray splits the input among its workers), or use --engine local",
            )


def train_signature(labeled: str | Path, config: TrainConfig) -> str:
    """The signature `train(labeled, out, config)` records in `out` when it completes (cheap: no torch).

    The base student counts by its weights (`llmst.models.model_fingerprint`), not its name, so a local
    folder retrained in place, a reinstalled bundled model or a new hub snapshot changes the signature.
    """
    from llmst.models import model_fingerprint

    return stage.signature(
        "train",
        config,
        {"labeled": labeled, "gold": config.gold, "eval": config.eval},
        student=model_fingerprint(config.student),
    )


def predict_signature(model_dir: str | Path, source: str | Path, config: PredictConfig | None = None) -> str:
    """The signature `predict_file(model_dir, source, out, config)` records for `out` (cheap: no torch)."""
    return stage.signature("predict", config or PredictConfig(), {"model": model_dir, "source": source})
