"""Options of `llmst debate` (the CLI is generated from them). Nothing here imports torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from llmst import stage
from llmst.backends.base import BackendSpec
from llmst.errors import ConfigError
from llmst.models import DEFAULT_LABELER
from llmst.option_values import check_choices, parse_names

Protocol = Literal["debate", "consultancy"]


@dataclass
class DebateConfig:
    """How debate (or consultancy) transcripts are generated for questions with two candidate answers."""

    model: str = field(
        default=DEFAULT_LABELER,
        metadata={"help": "Debater model: bundled name, folder, .gguf, hub id, or a served model name."},
    )
    backend: Literal["hf", "openai", "vllm"] = field(
        default="hf", metadata={"help": "hf (transformers), openai (a vLLM server) or vllm (in-process)."}
    )
    base_url: str | None = field(default=None, metadata={"help": "Server URL for --backend openai."})
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = field(
        default="auto", metadata={"help": "Weights dtype (hf, vllm)."}
    )
    protocol: Protocol = field(
        default="debate",
        metadata={"help": "debate (two debaters, alternating turns) or consultancy (one consultant)."},
    )
    turns: int = field(default=3, metadata={"help": "Turns: A argues, B rebuts and lists flaws, A counters."})
    prompts: str = field(
        default="debate", metadata={"help": "Prompt file: shipped name (debate) or a YAML path."}
    )
    question_field: str = field(default="question", metadata={"help": "Input field holding the question."})
    answers_field: str = field(
        default="answers", metadata={"help": "Input field holding the two candidate answers (a list)."}
    )
    context_fields: list[str] | None = field(
        default=None, metadata={"help": "Optional context field(s), comma-separated (e.g. passage)."}
    )
    id_field: str = field(default="id", metadata={"help": "Input field holding a stable id."})
    chat: bool = field(
        default=False,
        metadata=stage.only_if(  # in the signature only when on: outputs made before the option stay current
            "Send each turn's prompt as one user message in the model's chat template (hf, vllm) or "
            "through /v1/chat/completions (openai), the reply being the turn: for instruct debaters. Off: "
            "the prompt is plain text the model continues.",
            "chat",
            True,
        ),
    )
    max_tokens: int = field(default=128, metadata={"help": "Tokens generated per turn at most."})
    max_context_tokens: int = field(
        default=384, metadata={"help": "The context is cut to this many tokens (the question never is)."}
    )
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature (0: greedy)."})
    seed: int = field(default=0, metadata={"help": "Seed of which debater defends which answer."})
    limit: int | None = field(default=None, metadata={"help": "Only the first N rows."})
    batch_size: int = field(default=16, metadata=stage.runtime("hf: sequences per generate call."))
    concurrency: int = field(default=16, metadata=stage.runtime("openai: requests in flight."))
    cache: bool = field(default=True, metadata=stage.runtime("Cache generations (sqlite)."))
    cache_path: str | None = field(default=None, metadata=stage.runtime("Cache file (default: LLMST_HOME)."))
    overwrite: bool = field(default=False, metadata=stage.runtime("Replace OUT instead of resuming it."))
    progress: bool = field(default=True, metadata=stage.runtime("Progress bar."))

    def __post_init__(self) -> None:
        self.context_fields = parse_names(self.context_fields, "--context-field")
        check_choices(self)
        if self.turns < 1 or self.max_tokens < 1 or self.max_context_tokens < 1:
            raise ConfigError("--turns, --max-tokens and --max-context-tokens must be >= 1")
        if self.temperature < 0:
            raise ConfigError("--temperature must be >= 0")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("--limit must be >= 1")
        if self.batch_size < 1 or self.concurrency < 1:
            raise ConfigError("--batch-size and --concurrency must be >= 1")
        if self.backend == "openai" and not self.base_url:
            raise ConfigError("--backend openai needs --base-url", hint="e.g. http://127.0.0.1:8000/v1")
        if self.prompts.endswith((".yaml", ".yml")) and not Path(self.prompts).is_file():
            raise ConfigError(f"debate prompts file not found: {self.prompts}")

    def backend_spec(self) -> BackendSpec:
        """The backend these options ask for."""
        return BackendSpec.from_options(self)
