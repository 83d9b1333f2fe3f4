"""Options of `llmst pairs sample` (the CLI is generated from them). Nothing here imports torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from llmst import stage
from llmst.errors import ConfigError
from llmst.option_values import check_choices, parse_names

SampleMethod = Literal["bm25", "semantic", "random", "recombine"]


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
            "help": "bm25 (lexical top-k, bm25s), semantic (bi-encoder top-k), random, or recombine (each "
            "side-a sentence with its top-k side-b sentences)."
        },
    )
    fields: list[str] | None = field(
        default=None,
        metadata={
            "help": "Sentence field(s) of INPUT, comma-separated: one pool, or two sides (default text_a,text_b)."
        },
    )
    top_k: int = field(default=3, metadata={"help": "Partners per sentence (top-k, or k random ones)."})
    rank_by: Literal["semantic", "bm25"] = field(
        default="semantic",
        metadata=stage.only_if(
            "recombine: how side-b sentences are ranked for a side-a one.", "method", "recombine"
        ),
    )
    encoder: str = field(
        default="minilm-l6",
        metadata=stage.only_if(
            "semantic, recombine: bi-encoder (bundled name, sentence-transformers folder or hub id).",
            "method",
            ("semantic", "recombine"),
        ),
    )
    exclude: list[str] | None = field(
        default=None,
        metadata={
            "help": "Evaluation pair file(s), comma-separated: their pairs never come out, in either order "
            "(the leak guard; fields text_a,text_b or --fields)."
        },
    )
    exclude_sentences: bool = field(
        default=False,
        metadata={"help": "Also drop every pair with a sentence of an --exclude file (stricter guard)."},
    )
    new_only: bool = field(
        default=True,
        metadata={"help": "Drop candidates that are already a pair of INPUT (e.g. its gold pairs)."},
    )
    seed: int = field(default=0, metadata=stage.only_if("Seed of random sampling.", "method", "random"))
    limit: int | None = field(default=None, metadata={"help": "Only the first N rows of INPUT."})
    batch_size: int = field(default=64, metadata=stage.runtime("semantic: sentences per encoder batch."))
    progress: bool = field(default=True, metadata=stage.runtime("Progress bars."))

    def __post_init__(self) -> None:
        self.fields = parse_names(self.fields, "--fields") or ["text_a", "text_b"]
        self.exclude = parse_names(self.exclude, "--exclude")
        check_choices(self)
        if len(self.fields) > 2 or len(set(self.fields)) != len(self.fields):
            raise ConfigError("--fields takes one sentence field or two distinct ones (side a, side b)")
        if self.method == "recombine" and len(self.fields) != 2:
            raise ConfigError("--method recombine needs two sides: --fields text_a,text_b (query,passage)")
        if self.top_k < 1:
            raise ConfigError("--top-k must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("--limit must be >= 1")
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be >= 1")
        for path in self.exclude or []:
            if not Path(path).exists():
                raise ConfigError(f"--exclude file not found: {path}")

    def uses_encoder(self) -> bool:
        return self.method == "semantic" or (self.method == "recombine" and self.rank_by == "semantic")


def sample_signature(source: str | Path, config: SampleConfig) -> str:
    """The signature `sample_pairs(source, out, config)` records for `out` (cheap: no torch)."""
    from llmst.models import model_fingerprint

    inputs = {"input": source, **{f"exclude{i}": path for i, path in enumerate(config.exclude or [])}}
    encoder = model_fingerprint(config.encoder) if config.uses_encoder() else None
    return stage.signature("pairs-sample", config, inputs, encoder=encoder)
