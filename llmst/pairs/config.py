"""Options of `llmst pairs sample` (the CLI is generated from them). Nothing here imports torch."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from llmst import stage
from llmst.engine_options import check_ray_options, num_workers_field, ray_address_field
from llmst.errors import ConfigError
from llmst.option_values import check_choices, parse_names

SampleMethod = Literal["bm25", "semantic", "random", "recombine", "hard-negatives"]


@dataclass
class SampleConfig:
    """How candidate pairs are drawn from a corpus of sentences (or of query/passage rows).

    With one `--field` the sentences of that field form one pool; with two (`text_a,text_b`, the default) the
    pool is both sides' sentences together, except for `recombine`, which pairs each side-a sentence with the
    side-b sentences ranked highest for it (by `--rank-by`).
    """

    method: SampleMethod = field(
        default="bm25",
        metadata={
            "help": "bm25 (lexical top-k, bm25s), semantic (bi-encoder top-k), random, recombine (each "
            "side-a sentence with its top-k side-b sentences), or hard-negatives (each query/positive pair "
            "plus the query's --negatives passages ranked highest by --encoder that are not its positives: "
            "mine_hard_negatives)."
        },
    )
    text_fields: list[str] | None = field(
        default=None,
        metadata={
            "help": "Sentence field(s) of INPUT, comma-separated: one pool, or two sides (default text_a,text_b)."
        },
    )
    top_k: int = field(
        default=3,
        metadata=stage.only_if(
            "bm25, semantic, random, recombine: partners per sentence (top-k neighbours, or k random ones).",
            "method",
            ("bm25", "semantic", "random", "recombine"),
        ),
    )
    negatives: int = field(
        default=3,
        metadata=stage.only_if(
            "hard-negatives: mined negatives per query (as llmst train --negatives).",
            "method",
            "hard-negatives",
        ),
    )
    rank_by: Literal["semantic", "bm25"] = field(
        default="semantic",
        metadata=stage.only_if(
            "recombine: how side-b sentences are ranked for a side-a one.", "method", "recombine"
        ),
    )
    encoder: str = field(
        default="minilm-l6",
        metadata=stage.only_if(
            "semantic, recombine, hard-negatives: bi-encoder (bundled name, sentence-transformers folder or "
            "hub id).",
            "method",
            ("semantic", "recombine", "hard-negatives"),
        ),
    )
    positive_field: str | None = field(
        default=None,
        metadata=stage.only_if(
            "hard-negatives: field marking INPUT's positive pairs (true or > 0, e.g. a gold label); the "
            "other rows' passages only join the corpus (not written; counted as non_positive_rows). "
            "Default: every row is a positive pair.",
            "method",
            "hard-negatives",
        ),
    )
    corpus: str | None = field(
        default=None,
        metadata=stage.only_if(
            "hard-negatives: more candidate passages, a file with the passage field (or text), besides "
            "INPUT's own.",
            "method",
            "hard-negatives",
        ),
    )
    exclude: list[str] | None = field(
        default=None,
        metadata={
            "help": "Evaluation pair file(s), comma-separated: their pairs never come out, in either order "
            "(the leak guard; fields text_a,text_b or --text-field)."
        },
    )
    exclude_sentences: bool = field(
        default=False,
        metadata={"help": "Also drop every pair with a sentence of an --exclude file (stricter guard)."},
    )
    new_only: bool = field(
        default=True,
        metadata=stage.only_if(
            "Drop candidates that are already a pair of INPUT (e.g. its gold pairs).",
            "method",
            ("bm25", "semantic", "random", "recombine"),
        ),
    )
    seed: int = field(default=0, metadata=stage.only_if("Seed of random sampling.", "method", "random"))
    limit: int | None = field(default=None, metadata={"help": "Only the first N rows of INPUT."})
    batch_size: int = field(default=64, metadata=stage.runtime("semantic: sentences per encoder batch."))
    progress: bool = field(default=True, metadata=stage.runtime("Progress bars."))

    def __post_init__(self) -> None:
        self.text_fields = parse_names(self.text_fields, "--text-field") or ["text_a", "text_b"]
        self.exclude = parse_names(self.exclude, "--exclude")
        check_choices(self)
        if len(self.text_fields) > 2 or len(set(self.text_fields)) != len(self.text_fields):
            raise ConfigError("--text-field takes one sentence field or two distinct ones (side a, side b)")
        if self.method in ("recombine", "hard-negatives") and len(self.text_fields) != 2:
            raise ConfigError(
                f"--method {self.method} needs two sides: --text-field text_a,text_b (query,passage)"
            )
        if self.corpus and not Path(self.corpus).exists():
            raise ConfigError(f"--corpus file not found: {self.corpus}")
        # an explicit --top-k with hard-negatives keeps its old meaning (negatives per query) until llmst 0.2
        if self.method == "hard-negatives" and self.top_k != 3:
            if self.negatives not in (3, self.top_k):
                raise ConfigError("--method hard-negatives takes --negatives N (not --top-k as well)")
            warnings.warn(
                "--top-k with --method hard-negatives is deprecated and will be removed in llmst 0.2: "
                f"use --negatives {self.top_k}",
                FutureWarning,
                stacklevel=2,
            )
            self.negatives = self.top_k
        for option, value in (("--top-k", self.top_k), ("--negatives", self.negatives)):
            if value < 1:
                raise ConfigError(f"{option} must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("--limit must be >= 1")
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be >= 1")
        for path in self.exclude or []:
            if not Path(path).exists():
                raise ConfigError(f"--exclude file not found: {path}")

    def uses_encoder(self) -> bool:
        return self.method in ("semantic", "hard-negatives") or (
            self.method == "recombine" and self.rank_by == "semantic"
        )


TEACHER_KINDS = ("cross-encoder", "bi-encoder", "llm")


def parse_teacher(spec: str) -> tuple[str, str]:
    """`cross-encoder:PATH|HUB_ID`, `bi-encoder:PATH|HUB_ID` or `llm:MODEL` as (kind, model)."""
    kind, _, model = str(spec).partition(":")
    if kind not in TEACHER_KINDS or not model:
        raise ConfigError(
            f"--teacher {spec!r}: expected cross-encoder:PATH|HUB_ID, bi-encoder:PATH|HUB_ID or llm:MODEL",
            hint="e.g. --teacher cross-encoder:models/stsb-ce or --teacher llm:qwen2.5-coder-0.5b-instruct",
        )
    return kind, model


def teacher_name(spec: str) -> str:
    """A teacher's key in `scores`: the last part of its model path or id."""
    return Path(parse_teacher(spec)[1].rstrip("/")).name


@dataclass
class ScoreConfig:
    """How teachers score text pairs (`llmst pairs score`): cross-encoders or LLM judges, optionally mapped onto
    a gold scale, combined into `score`."""

    teachers: list[str] | None = field(
        default=None,
        metadata={
            "help": "Teacher(s), comma-separated: cross-encoder:PATH|HUB_ID (sentence-transformers CrossEncoder), "
            "bi-encoder:PATH|HUB_ID (a SentenceTransformer: the cosine of the two embeddings clipped to [0, 1]) "
            "or llm:MODEL (an LLM judge on --backend; P(Yes), or the expected grade of a graded --judge-task)."
        },
    )
    judge_task: str = field(
        default="pair-similarity",
        metadata={
            "help": "llm teachers: task YAML over text_a/text_b: pair-similarity (Yes/No), "
            "pair-similarity-scale (0-5) or a file; labels yes/no or numbers."
        },
    )
    backend: Literal["hf", "openai", "vllm"] = field(
        default="hf",
        metadata={
            "help": "Where llm and cross-encoder teachers run: hf (in-process), openai (a vLLM server at "
            "--base-url: llm:NAME and cross-encoder:NAME are served names; a cross-encoder is scored "
            "through the server's score API) or vllm (in-process; llm teachers only)."
        },
    )
    base_url: str | None = field(
        default=None, metadata={"help": "Server URL for --backend openai, e.g. http://127.0.0.1:8000/v1."}
    )
    calibrate_on: str | None = field(
        default=None,
        metadata={
            "help": "Gold pairs (text_a, text_b, --gold-field): each teacher is mapped onto their scale."
        },
    )
    calibration: Literal["isotonic", "linear"] = field(
        default="isotonic",
        metadata={"help": "With --calibrate-on: how a teacher is mapped onto the gold scale."},
    )
    gold_field: str = field(default="label", metadata={"help": "Gold score field of --calibrate-on."})
    text_fields: list[str] | None = field(
        default=None,
        metadata={"help": "The two text fields of PAIRS, comma-separated (default text_a,text_b)."},
    )
    max_length: int = field(
        default=256,
        metadata={"help": "cross-encoder teachers: tokens per pair at most; bi-encoder teachers: per text."},
    )
    limit: int | None = field(default=None, metadata={"help": "Only the first N pairs."})
    batch_size: int = field(default=32, metadata=stage.runtime("Pairs per forward pass."))
    cache: bool = field(default=True, metadata=stage.runtime("Cache teacher scores (sqlite)."))
    cache_path: str | None = field(default=None, metadata=stage.runtime("Cache file (default: LLMST_HOME)."))
    overwrite: bool = field(default=False, metadata=stage.runtime("Replace OUT instead of resuming it."))
    progress: bool = field(default=True, metadata=stage.runtime("Progress bars."))
    engine: Literal["local", "ray"] = field(
        default="local",
        metadata=stage.runtime(
            "local (this process) or ray: each cross-/bi-encoder teacher scores the shards `I/N` of the pairs "
            "as --num-workers Ray tasks of one CPU each (under its file's .parts/, resumable), joined into "
            "the same scores as one local run; an llm teacher runs `llmst label --engine ray`. "
            'Needs pip install "llmst[ray]".'
        ),
    )
    ray_address: str | None = ray_address_field()
    num_workers: int | None = num_workers_field("--engine ray: Ray workers (default: the cluster's CPUs).")

    def __post_init__(self) -> None:
        self.teachers = parse_names(self.teachers, "--teacher")
        self.text_fields = parse_names(self.text_fields, "--text-field") or ["text_a", "text_b"]
        check_choices(self)
        check_ray_options(self, ("ray_address", "num_workers"))
        if not self.teachers:
            raise ConfigError(
                "pairs score needs --teacher", hint="e.g. --teacher cross-encoder:models/stsb-ce"
            )
        names = [teacher_name(t) for t in self.teachers]
        if len(set(names)) != len(names):
            raise ConfigError(f"two teachers share the name {names}: give them distinct folders or ids")
        if len(self.text_fields) != 2:
            raise ConfigError("--text-field takes the two text fields of a pair")
        if self.calibrate_on and not Path(self.calibrate_on).exists():
            raise ConfigError(f"--calibrate-on file not found: {self.calibrate_on}")
        if self.backend == "openai" and not self.base_url:
            raise ConfigError("--backend openai needs --base-url", hint="e.g. http://127.0.0.1:8000/v1")
        if self.backend == "vllm" and any(parse_teacher(t)[0] == "cross-encoder" for t in self.teachers):
            raise ConfigError(
                "--backend vllm runs llm teachers only",
                hint="serve the cross-encoder (vllm serve CE_FOLDER) and use --backend openai --base-url URL, "
                "or score it in-process with --backend hf",
            )
        if self.max_length < 8 or self.batch_size < 1 or (self.limit is not None and self.limit < 1):
            raise ConfigError("--max-length must be >= 8, --batch-size and --limit >= 1")


def sample_signature(source: str | Path, config: SampleConfig) -> str:
    """The signature `sample_pairs(source, out, config)` records for `out` (cheap: no torch)."""
    from llmst.models import model_fingerprint

    inputs = {"input": source, **{f"exclude{i}": path for i, path in enumerate(config.exclude or [])}}
    if config.method == "hard-negatives" and config.corpus:
        inputs["corpus"] = config.corpus
    encoder = model_fingerprint(config.encoder) if config.uses_encoder() else None
    return stage.signature("pairs-sample", config, inputs, encoder=encoder)


@dataclass
class EvaluatePairsConfig:
    """How a pair model is scored against gold pairs (`llmst evaluate-pairs`): correlation with gold scores,
    or retrieval metrics over query/passage pairs."""

    metrics: Literal["correlation", "retrieval"] = field(
        default="correlation",
        metadata={
            "help": "correlation (Spearman, Pearson with --gold-field) or retrieval (MAP, MRR@10, nDCG@10: "
            "pairs sharing text_a are one query, a passage is relevant when --gold-field is true or > 0)."
        },
    )
    ranking: Literal["all", "candidates"] = field(
        default="all",
        metadata=stage.only_if(
            "retrieval: rank all passages of PAIRS for every query (bi-encoders), or only each query's own "
            "candidates (re-ranking; bi- and cross-encoders).",
            "metrics",
            "retrieval",
        ),
    )

    kind: Literal["bi-encoder", "cross-encoder"] | None = field(
        default=None,
        metadata={
            "help": "bi-encoder (cosine of embeddings) or cross-encoder; default: from the model folder."
        },
    )
    text_fields: list[str] | None = field(
        default=None, metadata={"help": "The two text fields, comma-separated (default text_a,text_b)."}
    )
    gold_field: str = field(default="label", metadata={"help": "Gold score field of PAIRS."})
    report_dir: str | None = field(
        default=None,
        metadata={"help": "Write report.json and a plot here (scatter.png; retrieval: metrics.png)."},
    )
    batch_size: int = field(default=64, metadata=stage.runtime("Pairs (or texts) per forward pass."))

    def __post_init__(self) -> None:
        self.text_fields = parse_names(self.text_fields, "--text-field") or ["text_a", "text_b"]
        check_choices(self)
        if len(self.text_fields) != 2:
            raise ConfigError("--text-field takes the two text fields of a pair")
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be >= 1")
