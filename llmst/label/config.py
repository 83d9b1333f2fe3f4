"""`LabelConfig`: every option of `llmst label`, typed and documented at the field (the CLI is built from it).

Fields with `runtime` metadata (batch size, concurrency, progress, cache, cache path, overwrite) change how
fast or where a run goes, never its records, so they stay out of the stage's signature. Importing this
module is cheap: no torch, no model code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from llmst.backends.base import BackendSpec
from llmst.backends.hf import BF16_CPU_BATCH_SIZE, DEFAULT_BATCH_SIZE
from llmst.engine_options import check_ray_options, ray_address_field
from llmst.errors import ConfigError
from llmst.models import DEFAULT_LABELER
from llmst.option_values import check_choices, normalize_prior, parse_names, prior_shares
from llmst.shard import normalize_shard
from llmst.stage import check_encoding, only_if_set, runtime

if TYPE_CHECKING:
    from llmst.label.task import Task

DEFAULT_PART_ROWS = 1000  # --engine ray: input rows per part
RAY_ONLY = ("ray_address", "num_workers", "part_rows", "num_gpus_per_worker")  # options of --engine ray
TASK_HINT = "see `llmst tasks list` for the shipped tasks, or pass --labels a,b for an ad-hoc task"


_DESCRIPTION = re.compile(r"""\s*([^=,"']+?)\s*=\s*("([^"]*)"|'([^']*)'|([^,"'][^,]*|))\s*(,|$)""")


def parse_label_descriptions(value: str | None, labels: list[str]) -> dict[str, str] | None:
    """`a="...",b="..."` (or a YAML file of `label: description`) as {label: description}; every label of
    `labels` exactly once, else a ConfigError that names the problem."""
    if value is None:
        return None
    hint = 'e.g. --label-descriptions spam="unsolicited ads",ham="a normal message", or a YAML file'
    if value.strip().endswith((".yaml", ".yml")):
        import yaml

        from llmst.label.task import TaskYamlLoader

        try:
            data = yaml.load(open(value, encoding="utf-8"), Loader=TaskYamlLoader)  # a SafeLoader
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"--label-descriptions: cannot read {value}: {err}", hint=hint) from None
        if not isinstance(data, dict):
            raise ConfigError(
                f"--label-descriptions: {value} must map each label to a description", hint=hint
            )
        pairs = {str(k): str(v) for k, v in data.items()}
    else:
        pairs, position = {}, 0
        while position < len(value):
            match = _DESCRIPTION.match(value, position)
            if match is None or match.end() == position:
                raise ConfigError(f"--label-descriptions: cannot read {value[position:]!r}", hint=hint)
            name = match.group(1).strip()
            if name in pairs:
                raise ConfigError(f"--label-descriptions: '{name}' is described twice", hint=hint)
            pairs[name] = next(g for g in match.groups()[2:5] if g is not None).strip()
            position = match.end()
    unknown = [name for name in pairs if name not in labels]
    missing = [name for name in labels if name not in pairs]
    if unknown or missing:
        problem = f"unknown label(s) {unknown}" if unknown else f"no description for {missing}"
        raise ConfigError(f"--label-descriptions: {problem}; the labels are {labels}", hint=hint)
    return {name: pairs[name] for name in labels}


@dataclass
class LabelConfig:
    """Options of `llmst label` (the CLI is generated from these fields; Python users fill it too)."""

    task: str | None = field(
        default=None, metadata={"help": "Task name (llmst tasks list) or a task YAML file."}
    )
    labels: list[str] | None = field(default=None, metadata={"help": "Ad-hoc task: label names."})
    instruction: str | None = field(
        default=None,
        metadata={
            "help": "Ad-hoc task: what to decide, placed first in the prompt (e.g. 'Is this SMS spam?')."
        },
    )
    label_descriptions: str | None = field(
        default=None,
        metadata={
            "help": "Ad-hoc task: what each label means, listed in the prompt: "
            'name="description",name="description" (every label once), or a YAML file of name: description.'
        },
    )
    model: str = field(
        default=DEFAULT_LABELER,
        metadata={"help": "Bundled name, model folder, .gguf file, hub id, or served name."},
    )
    backend: Literal["hf", "openai", "vllm"] = field(
        default="hf", metadata={"help": "hf (in-process), openai (vLLM/OpenAI server), vllm."}
    )
    base_url: str | None = field(default=None, metadata={"help": "Server URL for --backend openai."})
    text_fields: list[str] | None = field(
        default=None,
        metadata={"help": "Field(s) that feed the prompt.", "cli": ["--text-field"]},
    )
    id_field: str = field(
        default="id", metadata={"help": "Input field holding a stable id (else a text hash)."}
    )
    encoding: str = field(
        default="utf-8",
        metadata={"help": "Text encoding of CSV, TSV and .txt inputs (JSON is always UTF-8)."},
    )
    few_shot: str | None = field(
        default=None, metadata={"help": "Labeled file of demonstrations (text + label)."}
    )
    few_shot_label_field: str = field(default="label", metadata={"help": "Label field in the few-shot file."})
    shots: int = field(default=4, metadata={"help": "Demonstrations per prompt."})
    select: Literal["random", "knn"] = field(
        default="random", metadata={"help": "Demonstration choice: random (fixed, stratified) or knn."}
    )
    templates: list[str] | None = field(
        default=None,
        metadata={
            "help": "More tasks (shipped names or YAML files with the labels of --task) whose prompts join a "
            "prompt ensemble: every prompt is labeled and calibrated, and their probabilities are averaged.",
            "cli": ["--template"],
        },
    )
    orders: int = field(
        default=1,
        metadata={
            "help": "With --few-shot: each prompt with K seeded orders of its demonstrations (members)."
        },
    )
    zero_shot_member: bool = field(
        default=False,
        metadata={"help": "With --few-shot: the zero-shot prompt of --task joins the ensemble as a member."},
    )
    calibrate: Literal["none", "contextual", "prior"] = field(
        default="prior",
        metadata={
            "help": "prior (default: fit per-label biases on the corpus so the mean prediction matches "
            "--prior), contextual (content-free inputs) or none (raw model scores)."
        },
    )
    prior: str = field(
        default="uniform",
        metadata={
            "help": "--calibrate prior: the label distribution to match: uniform, em (the corpus's prior "
            "estimated by EM, Saerens et al. 2002, over posteriors freed of the model's own bias by "
            "content-free inputs), or shares in label order, e.g. 0.3,0.7."
        },
    )
    prior_fit_rows: int = field(default=5000, metadata={"help": "Rows used to fit --calibrate prior."})
    calibration_from: str | None = field(
        default=None,
        metadata={
            "help": "Labeled file whose fitted calibration (method and biases) to apply instead of fitting "
            "one; label a gold calibration set with the pool's calibration this way (overrides --calibrate)."
        },
    )
    batch_size: int | None = field(
        default=None,
        metadata=runtime(
            "Sequences per forward pass at most (hf; on a CPU split by length into smaller ones). Default: "
            f"{BF16_CPU_BATCH_SIZE} on a CPU with AMX or AVX512_BF16 running bfloat16 (fast bf16 matmuls: "
            "bigger batches pay there), "
            f"else {DEFAULT_BATCH_SIZE}."
        ),
    )
    concurrency: int = field(default=32, metadata=runtime("Requests in flight (openai)."))
    limit: int | None = field(
        default=None, metadata={"help": "Label only the first N input rows (default: all)."}
    )
    shard: str | None = field(
        default=None,
        metadata=only_if_set(
            "I/N (0 <= I < N): label only the input rows whose id hashes to shard I of N, for job arrays; "
            "the other rows are skipped (counted as other_shards) and `llmst merge` joins the N outputs. "
            "--calibrate prior still fits on the first --prior-fit-rows rows of the whole input, so every "
            "shard applies the same calibration."
        ),
    )
    seed: int = field(default=0, metadata={"help": "Seed for few-shot sampling."})
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = field(
        default="auto", metadata={"help": "auto, bfloat16, float16 or float32 (hf, vllm)."}
    )
    compile: bool = field(
        default=False,
        metadata={
            "help": "hf: torch.compile the decoder (dynamic shapes; on a CPU with the weights frozen into the "
            "graph). Pays a one-time compile (60-95 s for the default model on 2 CPU cores) for ~17% more "
            "docs/s on 2 EPYC cores with AVX512_BF16 and ~28% on 2 AMX vCPUs: for corpora of tens of "
            "thousands of rows. Scores differ from eager ones within the dtype's rounding (a few "
            "labels near 0.5 flip in bfloat16), so compiled answers have their own cache keys and signature."
        },
    )
    cache: bool = field(default=True, metadata=runtime("Do not read or write the answer cache."))
    cache_path: str | None = field(
        default=None, metadata=runtime("sqlite cache file (default ~/.cache/llmst).")
    )
    overwrite: bool = field(
        default=False, metadata=runtime("Replace an existing output instead of resuming.")
    )
    progress: bool = field(default=True, metadata=runtime("No progress bar."))
    engine: Literal["local", "ray"] = field(
        default="local",
        metadata=runtime(
            "local (this process) or ray (Ray Data: each worker an actor holding one backend; the input is "
            "labeled in parts, written under OUT.parts/ with a manifest and merged into OUT; needs "
            'pip install "llmst[ray]"). The same records either way (up to which rows share a batch).'
        ),
    )
    ray_address: str | None = ray_address_field()
    num_workers: int | None = field(
        default=None,
        metadata=runtime(
            "--engine ray: workers (actors), one CPU each (default: the cluster's CPUs, or with "
            "--num-gpus-per-worker as many as its GPUs allow)."
        ),
    )
    part_rows: int | None = field(
        default=None,
        metadata=runtime(
            f"--engine ray: input rows per part (the unit of work and of resume; default {DEFAULT_PART_ROWS})."
        ),
    )
    num_gpus_per_worker: float | None = field(
        default=None,
        metadata=runtime(
            "--engine ray: GPUs each worker holds (e.g. 1, or 0.5 to share one; needs GPUs on the Ray cluster, "
            "and --backend vllm needs it); default: none, the workers label on CPUs."
        ),
    )

    def __post_init__(self) -> None:
        self.labels = parse_names(self.labels, "--labels")
        self.text_fields = parse_names(self.text_fields, "--text-field")
        check_encoding(self.encoding)
        self.shard = normalize_shard(self.shard)
        self.prior = normalize_prior(self.prior, ("uniform", "em"))
        if self.task is None and self.labels is None:
            raise ConfigError("give --task or --labels (what to label the corpus with)", hint=TASK_HINT)
        if self.task is not None and self.labels is not None:
            raise ConfigError("give either --task or --labels, not both", hint=TASK_HINT)
        check_choices(self)
        if self.compile and self.backend != "hf":
            raise ConfigError(
                f"--compile is an option of --backend hf, not {self.backend}",
                hint="vLLM compiles its own graphs; drop --compile",
            )
        for name in ("batch_size", "concurrency", "shots", "prior_fit_rows", "part_rows"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(
                f"--limit must be >= 1, got {self.limit}", hint="leave --limit out to label every row"
            )
        shares = prior_shares(self.prior)
        if isinstance(shares, list) and min(shares) <= 0:
            raise ConfigError(
                f"--prior {self.prior}: every label needs a share > 0 (calibration cannot reach a zero share)",
                hint="e.g. --prior 0.05,0.95",
            )
        if isinstance(shares, list) and self.labels is not None and len(shares) != len(self.labels):
            raise ConfigError(
                f"--prior has {len(shares)} values for {len(self.labels)} labels",
                hint="give one share per label, in label order",
            )
        self.templates = parse_names(self.templates, "--template")
        if self.orders > 1 and self.select == "knn":
            raise ConfigError(
                "--orders varies the order of one fixed sample of demonstrations: it needs --select random",
                hint="kNN demonstrations are chosen per row and ordered by similarity",
            )
        if self.orders < 1:
            raise ConfigError(f"--orders must be >= 1, got {self.orders}")
        if (self.orders > 1 or self.zero_shot_member) and not self.few_shot:
            raise ConfigError(
                "--orders and --zero-shot-member vary the few-shot demonstrations: they need --few-shot",
                hint="give --few-shot FILE, or ensemble zero-shot prompts with --template",
            )
        if (self.instruction or self.label_descriptions) and self.labels is None:
            raise ConfigError(
                "--instruction and --label-descriptions describe an ad-hoc task: they need --labels",
                hint="a task YAML has its own instruction and prompt",
            )
        if self.label_descriptions is not None:
            parse_label_descriptions(self.label_descriptions, self.labels or [])
        if self.templates and self.labels is not None:
            raise ConfigError("--template needs --task (the ensemble's labels come from it), not --labels")
        self._check_engine()
        if self.backend == "openai" and not self.base_url:
            raise ConfigError("--backend openai needs --base-url", hint="e.g. http://127.0.0.1:8000/v1")

    def _check_engine(self) -> None:
        if not check_ray_options(self, RAY_ONLY):
            return
        if self.num_gpus_per_worker is not None and self.num_gpus_per_worker <= 0:
            raise ConfigError(
                f"--num-gpus-per-worker must be > 0, got {self.num_gpus_per_worker}",
                hint="leave it out to label on CPUs",
            )
        if self.shard is not None or self.is_ensemble:
            raise ConfigError(
                "--engine ray labels one prompt over the whole input: it does not take --shard, --template, "
                "--orders or --zero-shot-member",
                hint="Ray already splits the input among its workers; label prompt ensembles with --engine local",
            )
        if self.backend == "vllm" and not self.num_gpus_per_worker:
            raise ConfigError(
                "--engine ray --backend vllm: each worker runs vLLM, which needs a GPU, and a worker holds none "
                "without --num-gpus-per-worker",
                hint="add --num-gpus-per-worker 1 (the Ray cluster needs GPUs), or serve the model with vLLM "
                "and use --backend openai",
            )

    def backend_spec(self) -> BackendSpec:
        """The backend these options ask for (`llmst.backends.make_backend(config.backend_spec())`)."""
        return BackendSpec.from_options(self)

    @property
    def is_ensemble(self) -> bool:
        """Whether these options label with several prompts (`llmst.label.ensemble`)."""
        return bool(self.templates) or self.orders > 1 or self.zero_shot_member

    def build_task(self) -> Task:
        """The task to label with: a shipped/YAML task, or an ad-hoc one from `labels`."""
        from llmst.label.task import adhoc_task, load_task

        if self.labels is not None:
            descriptions = parse_label_descriptions(self.label_descriptions, self.labels)
            return adhoc_task(self.labels, self.text_fields, self.instruction, descriptions)
        task = load_task(self.task)  # type: ignore[arg-type]  # __post_init__: task or labels is set
        if self.text_fields:
            task.text_fields = list(self.text_fields)
        return task
