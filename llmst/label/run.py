"""`llmst label`: stream a corpus through an LLM, score every label, write labeled records.

Crash safety: output and rejects are append-only JSONL files, fsynced after each chunk, and a checkpoint
file (`OUT.progress.json`, replaced atomically) records how many input rows and output bytes are durable.
On rerun, both files are cut back to the checkpoint (dropping any half-written or unconfirmed line) and
the input resumes after the last confirmed row; rows scored before the crash come back from the cache.

A resume never mixes two jobs: the checkpoint records the job's identity (the input's content fingerprint,
the options that change records, the prompt, the model's fingerprint, dtype and device kind). A rerun whose
identity differs is refused (ConfigError) unless `overwrite`, which starts afresh. `limit` is not part of
it, so a rerun with a larger limit extends the output. When the output is complete, its signature
(`label_signature`) is written last (`OUT.signature.json`, see `llmst.stage`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from llmst import stage
from llmst.backends import backend_model_identity, make_backend, spec_model_identity
from llmst.backends.base import Backend
from llmst.cache import AnswerCache, cache_key
from llmst.errors import ConfigError
from llmst.label.calibrate import read_fitted_calibration, record_calibration, softmax
from llmst.label.config import LabelConfig
from llmst.label.fewshot import FewShotSelector, describe_selection, load_examples
from llmst.label.prior_fit import check_resumed_calibration, fit_calibration
from llmst.label.scoring import COMPUTED, FROM_CACHE, REUSED, Scorer
from llmst.label.task import Task
from llmst.models import llmst_home
from llmst.readers import Reject, Row, read_records
from llmst.records import (
    keep_input_fields,
    label_fields,
    record_id,
    record_text,
)
from llmst.resumable import ResumableOutput, ResumableRun, job_options
from llmst.shard import INPUT_LINE, RESERVED_FIELD, shard_filter

__all__ = [
    "ChunkLabeler",
    "LabelConfig",
    "LabelJob",
    "LabelSummary",
    "Labeler",
    "label_corpus",
    "label_signature",
    "prepare_label_job",
]

CANDIDATE_TOKEN_ALLOWANCE = 16  # context tokens kept free for the longest verbalizer
_Scorer = Scorer  # its name before it moved to llmst.label.scoring


@dataclass
class LabelSummary:
    """What a labeling run did. Row counts of the scoring are per labeled row of this run's main pass:

    - `from_cache`: answered by the persistent answer cache on disk (always 0 with `cache=False`);
    - `reused_from_prior_fit`: scored by the model earlier in this run, for `calibrate="prior"`;
    - `computed`: scored by the model in the main pass;
    so `from_cache + reused_from_prior_fit + computed` is the number of rows labeled by this run.
    `prior_fit_computed` counts the prior-fit rows the model scored. `docs_per_second` is the model's rows
    (`computed + prior_fit_computed`) over the run's `seconds`, and None when the model scored nothing
    (a rerun served from the cache, a finished job): a cached rerun never reports a speed.
    """

    output: str
    rejects: str
    rows_read: int = 0
    labeled: int = 0
    rejected: int = 0
    truncated: int = 0
    resumed_rows: int = 0
    other_shards: int = 0  # --shard: input rows of the other shards, skipped (rows_read counts them)
    shard: str | None = None
    from_cache: int = 0
    reused_from_prior_fit: int = 0
    computed: int = 0
    prior_fit_computed: int = 0
    seconds: float = 0.0
    docs_per_second: float | None = None
    label_counts: dict[str, int] = field(default_factory=dict)
    calibration: str = "none"
    calibration_bias: dict[str, float] | None = None
    prompt_hash: str = ""
    signature: str = ""
    prior_estimate: dict[str, dict[str, float]] | None = None  # --prior em: share, low, high
    members: dict[str, Any] | None = None  # an ensemble's member summaries (`llmst.label.ensemble`)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Prepared:
    """One valid input row, ready to score."""

    __slots__ = ("row", "text", "truncated", "prompt", "prefix_chars", "rid")

    def __init__(self, row: Row, text: str, truncated: bool, prompt: str, prefix_chars: int, rid: str):
        self.row, self.text, self.truncated = row, text, truncated
        self.prompt, self.prefix_chars, self.rid = prompt, prefix_chars, rid


class Labeler:
    """Turns input rows into prompts and labeled records (shared by the fit and write passes)."""

    def __init__(self, config: LabelConfig, task: Task, backend: Backend, fewshot: FewShotSelector | None):
        self.config, self.task, self.backend, self.fewshot = config, task, backend, fewshot
        self.instruction = task.instruction
        # tokens the template and demonstrations take, measured on an empty text
        empty_prompt = task.render({f: "" for f in task.text_fields}, "")
        overhead = backend.count_tokens(empty_prompt + self.instruction)
        if fewshot is not None:
            overhead += max(backend.count_tokens(b) for b in fewshot.blocks(["x"]))
        self.max_text_tokens = backend.max_context - overhead - CANDIDATE_TOKEN_ALLOWANCE
        if self.max_text_tokens < 8:
            raise ConfigError(
                f"the prompt template and few-shot examples take {overhead} of the model's "
                f"{backend.max_context} context tokens; use fewer --shots"
            )

    def prepare(self, rows: list[Row]) -> tuple[list[_Prepared], list[Reject]]:
        good: list[tuple[Row, str]] = []
        rejects: list[Reject] = []
        for row in rows:
            text = record_text(row.record, self.task.text_fields)
            if INPUT_LINE in row.record:  # in every engine, so sharded and Ray outputs equal the local one
                rejects.append(Reject(row.line, RESERVED_FIELD, json.dumps(row.record)))
            elif text is None:
                missing = [f for f in self.task.text_fields if row.record.get(f) is None]
                rejects.append(Reject(row.line, f"missing text field '{missing[0]}'", json.dumps(row.record)))
            elif not text.strip():
                rejects.append(Reject(row.line, "empty text", json.dumps(row.record)))
            else:
                good.append((row, text))
        blocks = self.fewshot.blocks([t for _, t in good]) if self.fewshot and good else [""] * len(good)
        prepared = []
        for (row, text), block in zip(good, blocks, strict=True):
            rid = record_id(row.record, text, self.config.id_field)
            cut = self.backend.truncate(text, self.max_text_tokens)
            variables = row.record if cut == text else self._cut_fields(row.record, text, cut)
            prefix = self.instruction + block
            prompt = prefix + self.task.render(variables, cut)
            prefix_chars = len(prefix) if self.config.select == "random" else 0
            prepared.append(_Prepared(row, cut, cut != text, prompt, prefix_chars, rid))
        return prepared, rejects

    def _cut_fields(self, record: dict[str, Any], text: str, cut: str) -> dict[str, Any]:
        """The record with its text fields cut so the rendered prompt fits: the one field, or else every
        field longer than a common cap (water-filling: short fields stay whole, long ones share the rest)."""
        fields = self.task.text_fields
        if len(fields) == 1:
            return {**record, fields[0]: cut}
        sizes = {name: self.backend.count_tokens(str(record[name])) for name in fields}
        separators = max(self.backend.count_tokens(text) - sum(sizes.values()), 0)
        cap = water_fill(list(sizes.values()), max(self.max_text_tokens - separators, len(fields)))
        return {
            **record,
            **{n: self.backend.truncate(str(record[n]), cap) for n in fields if sizes[n] > cap},
        }


def water_fill(sizes: list[int], budget: int) -> int:
    """The largest cap c with sum(min(size, c)) <= budget (every size when they fit)."""
    remaining, ordered = budget, sorted(sizes)
    for index, size in enumerate(ordered):
        share = remaining // (len(ordered) - index)
        if size > share:
            return share
        remaining -= size
    return ordered[-1] if ordered else 0


def _few_shot_examples(config: LabelConfig, task: Task):
    return load_examples(config.few_shot, task, config.few_shot_label_field) if config.few_shot else None


def _prompt_hash(task: Task, config: LabelConfig, examples) -> str:
    extra = ""
    if examples is not None:
        extra = describe_selection(examples, task, shots=config.shots, select=config.select, seed=config.seed)
    return task.prompt_hash(extra)


def _signature(source: str, config: LabelConfig, model: str, prompt_hash: str) -> str:
    inputs = {"input": source, "calibration_from": config.calibration_from}
    return stage.signature("label", config, inputs, model=model, prompt_hash=prompt_hash)


def label_signature(source: str | Path, config: LabelConfig) -> str:
    """The signature `label_corpus(source, out, config)` records for a complete output, without loading the
    model: the input's content, the options that change records, the prompt (with the few-shot
    demonstrations) and the model's fingerprint (hf, vllm: `llmst.models.model_fingerprint`; openai: model
    name and server URL). `llmst.stage.is_current(out, label_signature(source, config))` says whether `out`
    can be reused as is. A hub model not downloaded yet fingerprints as `NAME@unresolved` until it is.
    """
    if config.is_ensemble:
        from llmst.label.ensemble import ensemble_prompt_hash

        prompt_hash = ensemble_prompt_hash(config)
    else:
        prompt_hash = member_prompt_hash(config)
    return _signature(str(source), config, spec_model_identity(config.backend_spec()), prompt_hash)


def member_prompt_hash(config: LabelConfig) -> str:
    """The prompt hash of a single-prompt labeling job (template, labels, demonstrations)."""
    task = config.build_task()
    return _prompt_hash(task, config, _few_shot_examples(config, task))


def _job_identity(config: LabelConfig, source: str, prompt_hash: str, backend: Backend) -> dict[str, str]:
    """What a resumed output must share with the run that started it (see the module docstring)."""
    options = job_options(config)
    if config.calibration_from:  # the biases come from that file's content, not its name
        options["calibration_from"] = stage.fingerprint(config.calibration_from)
    shard = {"shard": config.shard} if config.shard else {}  # a resume with another shard is refused
    return {
        **shard,
        "input": stage.fingerprint(source),
        "job": cache_key(
            options=options,
            prompt_hash=prompt_hash,
            backend=backend.name,
            model_fingerprint=backend.fingerprint,
            dtype=getattr(backend, "dtype", None),
            device=getattr(backend, "device_kind", None),
        ),
    }


@dataclass
class LabelJob:
    """A single-prompt labeling job, ready to label rows: what every engine builds first, with
    `prepare_label_job` (this module's loop; the driver and each worker of `llmst.label.ray_engine`)."""

    source: str
    config: LabelConfig
    task: Task
    backend: Backend
    fewshot: FewShotSelector | None
    prompt_hash: str  # the template, labels and demonstrations
    labeler: Labeler
    scorer: Scorer

    @property
    def model(self) -> str:
        """The model's identity in the signature (`llmst.backends.backend_model_identity`)."""
        return backend_model_identity(self.backend)

    def signature(self, **changes: Any) -> str:
        """The signature of the job's complete output; `changes` replace options (shard=None: the unsharded
        job's)."""
        return _signature(self.source, replace(self.config, **changes), self.model, self.prompt_hash)

    def identity(self) -> dict[str, str]:
        """What a resumed output must share with the run that started it (no --limit; the module docstring)."""
        return _job_identity(self.config, self.source, self.prompt_hash, self.backend)

    def calibrate(self, summary: LabelSummary) -> tuple[str, np.ndarray]:
        """The calibration method and per-label biases (fitted here, or `--calibration-from`'s)."""
        return fit_calibration(
            self.source, self.config, self.task, self.fewshot, self.labeler, self.scorer, summary
        )

    def chunk_labeler(self, method: str, bias, *, input_line: bool) -> ChunkLabeler:
        """Labels chunks of reader items with this calibration (`input_line`: records carry their line)."""
        return ChunkLabeler(self.labeler, self.scorer, method, bias, self.prompt_hash, input_line=input_line)

    def open_cache(self) -> None:
        """Open the answer cache (unless --no-cache), in the calling thread (sqlite's rule)."""
        if self.config.cache and self.scorer.cache is None:
            path = self.config.cache_path
            self.scorer.cache = AnswerCache(Path(path) if path else llmst_home() / "cache.sqlite")

    def close_cache(self) -> None:
        if self.scorer.cache is not None:
            self.scorer.cache.close()
            self.scorer.cache = None


def prepare_label_job(
    source: str | Path, config: LabelConfig, backend: Backend, task: Task | None = None
) -> LabelJob:
    """The labeling job of `config` over `source` with `backend` (nothing is read from `source` yet): the task,
    the few-shot demonstrations, the prompt hash, the row preparation and the scorer (no cache open yet:
    `LabelJob.open_cache`). Both engines build their jobs here, so a Ray worker labels as the local loop does."""
    task = task or config.build_task()
    examples = _few_shot_examples(config, task)
    fewshot = None
    if examples is not None:
        fewshot = FewShotSelector(examples, task, shots=config.shots, select=config.select, seed=config.seed)
    prompt_hash = task.prompt_hash(fewshot.describe() if fewshot else "")
    labeler = Labeler(config, task, backend, fewshot)
    scorer = Scorer(backend, task, None)
    return LabelJob(str(source), config, task, backend, fewshot, prompt_hash, labeler, scorer)


def label_corpus(
    source: str | Path, output: str | Path, config: LabelConfig, backend: Backend | None = None
) -> LabelSummary:
    """Label every row of `source` into `output` (JSONL); see the module docstring for resume semantics.

    `backend` (optional) is used instead of building `config.backend_spec()`; the output's signature then
    names that backend's model, which `label_signature(source, config)` matches only when it is the one
    the config describes.
    """
    if config.is_ensemble:  # several prompts: each member is a job of this function
        from llmst.label.ensemble import label_ensemble

        return label_ensemble(source, output, config, backend)
    if config.engine == "ray":  # the same job, its parts labeled by Ray workers
        from llmst.label.ray_engine import label_with_ray

        return label_with_ray(source, output, config, backend)
    source, out = str(source), ResumableOutput(Path(output))
    task = config.build_task()
    rows_iter = read_records(source, config.encoding)  # validates the input path before any model is loaded
    if config.calibration_from:  # a bad --calibration-from fails before the model loads
        read_fitted_calibration(config.calibration_from, task.label_names)
    own_backend = backend is None
    if backend is None:
        backend = make_backend(config.backend_spec())
    job = None
    try:
        job = prepare_label_job(source, config, backend, task)
        job.open_cache()
        return _label(job, out, rows_iter)
    finally:
        if job is not None:
            job.close_cache()
        if own_backend:
            backend.close()


def _label(job: LabelJob, output: ResumableOutput, rows_iter) -> LabelSummary:
    started = time.perf_counter()
    config, source = job.config, job.source
    summary = LabelSummary(
        output=str(output.out), rejects=str(output.rejects), prompt_hash=job.prompt_hash, shard=config.shard
    )
    identity = job.identity()
    run = ResumableRun(
        source, output, identity, overwrite=config.overwrite, limit=config.limit, what="labeling"
    )
    stage.clear_marker(output.out)  # complete again only when this run finishes
    if config.limit is not None and run.skip > config.limit:
        raise ConfigError(
            f"{output.out} already holds the first {run.skip} input rows, more than --limit {config.limit}",
            hint="pass --overwrite to relabel only the first rows, or raise --limit",
        )
    summary.resumed_rows = run.resumed
    scorer = job.scorer
    method, bias = job.calibrate(summary)
    fitted = record_calibration(method, bias, job.task.label_names)
    if run.resumed:  # appended rows must be calibrated like the rows already written
        check_resumed_calibration(run.state.get("calibration"), fitted, output.out)
    scorer.counts.clear()  # the counts below are of the main pass (content-free prompts are not rows)
    counts: Counter[str] = Counter(run.state.get("label_counts", {}))
    chunks = job.chunk_labeler(method, bias, input_line=config.shard is not None)

    def process(chunk: list[Row | Reject]) -> tuple[list[dict[str, Any]], list[Reject]]:
        records, bad = chunks(chunk)
        counts.update(record["label"] for record in records)
        summary.truncated += sum(bool(record["truncated"]) for record in records)
        return records, bad

    state = run.run(
        process,
        rows=rows_iter,
        chunk_size=job.backend.chunk_size,
        progress=config.progress,
        rate=lambda done, elapsed: f"{done / elapsed:.1f} docs/s",
        extra_state=lambda: {"label_counts": dict(counts), "calibration": fitted},
        keep=shard_filter(config.shard, job.task.text_fields, config.id_field),
    )
    summary.rows_read = state["processed"]
    scorer.forget()
    summary.labeled = state["labeled"]
    summary.rejected = state["rejected"]
    summary.other_shards = state.get("other_shards", 0)
    summary.label_counts = dict(counts)
    summary.from_cache = scorer.counts[FROM_CACHE]
    summary.reused_from_prior_fit = scorer.counts[REUSED]
    summary.computed = scorer.counts[COMPUTED]
    summary.seconds = round(time.perf_counter() - started, 3)
    model_rows = summary.computed + summary.prior_fit_computed
    if model_rows and summary.seconds > 0:
        summary.docs_per_second = round(model_rows / summary.seconds, 2)
    summary.signature = job.signature()
    details = {}
    if config.shard is not None:  # what `llmst merge` checks: one job, every shard once
        details = shard_details(config.shard, job.signature(shard=None), output.rejects.name, summary)
    stage.write_marker(
        output.out, summary.signature, stage="label", rows=summary.labeled, input=source, **details
    )
    return summary


def shard_details(shard: str, job: str, rejects: Path | str, summary: LabelSummary) -> dict[str, Any]:
    """The marker details of a shard output that `llmst merge` checks (`llmst.label.merge`)."""
    return {
        "shard": shard,
        "partition": "hash",
        "job": job,
        "rejects": str(rejects),  # relative to the shard output's folder
        "rejected": summary.rejected,
        "calibration": summary.calibration,
        "calibration_bias": summary.calibration_bias,
    }


class ChunkLabeler:
    """Labels one chunk of reader items into (records, rejects): the scoring every engine runs (the local
    loop here, the Ray workers of `llmst.label.ray_engine`), with a calibration fitted beforehand."""

    def __init__(
        self, labeler: Labeler, scorer: Scorer, method: str, bias, prompt_hash: str, *, input_line=False
    ):
        self.labeler, self.scorer, self.prompt_hash = labeler, scorer, prompt_hash
        self.bias = np.asarray(bias)
        self.names = labeler.task.label_names
        self.calibration_fields = record_calibration(method, self.bias, self.names)
        self.input_line = input_line  # sharded records carry their input line (merge restores the order)

    def __call__(self, chunk: list[Row | Reject]) -> tuple[list[dict[str, Any]], list[Reject]]:
        labeler = self.labeler
        prepared, bad = labeler.prepare([item for item in chunk if isinstance(item, Row)])
        bad += [item for item in chunk if isinstance(item, Reject)]
        records = []
        if prepared:
            scores = self.scorer.label_logprobs(
                [p.prompt for p in prepared], [p.prefix_chars for p in prepared]
            )
            for item, row_probs in zip(prepared, softmax(scores + self.bias), strict=True):
                record = _labeled_record(
                    item, row_probs, self.names, labeler.task, labeler.backend, self.prompt_hash
                )
                record.update(self.calibration_fields)
                if self.input_line:
                    record[INPUT_LINE] = item.row.line
                records.append(record)
        return records, bad


def _labeled_record(item, row_probs, names, task, backend, prompt_hash) -> dict[str, Any]:
    record = keep_input_fields(item.row.record)
    record["id"] = item.rid
    record.update(label_fields(row_probs, names))
    record.update(
        model=backend.model_id,
        task=task.name,
        prompt_hash=prompt_hash,
        truncated=item.truncated,
    )
    return record
