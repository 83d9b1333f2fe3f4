"""`llmst label`: stream a corpus through an LLM, score every label, write labeled records.

Crash safety: output and rejects are append-only JSONL files, fsynced after each chunk, and a checkpoint
file (`OUT.progress.json`, replaced atomically) records how many input rows and output bytes are durable.
On rerun, both files are cut back to the checkpoint (dropping any half-written or unconfirmed line) and
the input resumes after the last confirmed row; rows scored before the crash come back from the cache.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np

from llmst.backends import make_backend
from llmst.backends.base import Backend, ScoreRequest
from llmst.cache import AnswerCache, cache_key
from llmst.errors import ConfigError
from llmst.label.calibrate import contextual_bias, prior_bias, softmax
from llmst.label.fewshot import FewShotSelector, load_examples
from llmst.label.task import Task, adhoc_task, load_task
from llmst.models import DEFAULT_LABELER, llmst_home
from llmst.records import (
    JsonlAppender,
    Reject,
    Row,
    chunked,
    keep_input_fields,
    label_fields,
    read_records,
    record_id,
    record_text,
    write_json_atomic,
)

CANDIDATE_TOKEN_ALLOWANCE = 16  # context tokens kept free for the longest verbalizer


@dataclass
class LabelConfig:
    """Options of `llmst label` (the CLI fills this; Python users can too)."""

    task: str | None = field(default=None, metadata={"help": "Shipped task name or a task YAML file."})
    labels: list[str] | None = field(default=None, metadata={"help": "Ad-hoc label names (instead of task)."})
    model: str = field(
        default=DEFAULT_LABELER, metadata={"help": "Model spec (bundled, folder, .gguf, hub)."}
    )
    backend: Literal["hf", "openai", "vllm"] = "hf"
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible server URL."})
    text_fields: list[str] | None = field(default=None, metadata={"help": "Fields that feed the prompt."})
    id_field: str = "id"
    few_shot: str | None = field(default=None, metadata={"help": "Labeled file of demonstrations."})
    few_shot_label_field: str = "label"
    shots: int = 4
    select: Literal["random", "knn"] = "random"
    calibrate: Literal["none", "contextual", "prior"] = "none"
    prior: list[float] | None = field(
        default=None, metadata={"help": "Target label prior (default uniform)."}
    )
    prior_fit_rows: int = field(default=5000, metadata={"help": "Rows used to fit the prior calibration."})
    batch_size: int = 32
    concurrency: int = 32
    limit: int | None = None
    seed: int = 0
    dtype: str = "auto"
    cache: bool = field(default=True, metadata={"help": "Use the persistent answer cache."})
    cache_path: str | None = None
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if (self.task is None) == (self.labels is None):
            if self.task is None:
                self.task = "sentiment"
            else:
                raise ConfigError("give either --task or --labels, not both")
        if self.backend not in ("hf", "openai", "vllm"):
            raise ConfigError(f"unknown backend '{self.backend}'", hint="use hf, openai or vllm")
        if self.calibrate not in ("none", "contextual", "prior"):
            raise ConfigError(f"unknown calibration '{self.calibrate}'", hint="use none, contextual or prior")
        if self.batch_size < 1 or self.concurrency < 1:
            raise ConfigError("--batch-size and --concurrency must be >= 1")
        if self.limit is not None and self.limit < 0:
            raise ConfigError("--limit must be >= 0")

    def build_task(self) -> Task:
        if self.labels is not None:
            return adhoc_task(self.labels, (self.text_fields or ["text"])[0])
        task = load_task(self.task or "sentiment")
        if self.text_fields:
            task.text_fields = list(self.text_fields)
        return task


@dataclass
class LabelSummary:
    output: str
    rejects: str
    rows_read: int = 0
    labeled: int = 0
    rejected: int = 0
    truncated: int = 0
    resumed_rows: int = 0
    from_cache: int = 0
    computed: int = 0
    seconds: float = 0.0
    docs_per_second: float = 0.0
    label_counts: dict[str, int] = field(default_factory=dict)
    calibration: str = "none"
    calibration_bias: dict[str, float] | None = None
    prompt_hash: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Scorer:
    """Cache-aware scoring of prompts into per-label log-probs."""

    def __init__(self, backend: Backend, task: Task, cache: AnswerCache):
        self.backend = backend
        self.cache = cache
        self.candidates, self.owner = task.candidates()
        self.n_labels = len(task.labels)
        self.hits = 0
        self.misses = 0

    def _key(self, prompt: str, prefix_chars: int) -> str:
        return cache_key(
            kind="score",
            backend=self.backend.name,
            model=self.backend.model_id,
            fingerprint=self.backend.fingerprint,
            prompt=prompt,
            prefix_chars=prefix_chars,  # the hf backend tokenizes the prefix on its own
            candidates=self.candidates,
        )

    def label_logprobs(self, prompts: list[str], prefix_chars: list[int]) -> np.ndarray:
        """Per-label log-probs of shape (N, K): verbalizers of one label pooled by log-sum-exp."""
        keys = [self._key(p, c) for p, c in zip(prompts, prefix_chars, strict=True)]
        found = self.cache.get_many(list(dict.fromkeys(keys)))
        missing = [i for i, key in enumerate(keys) if key not in found]
        unique_missing = list({keys[i]: i for i in missing}.values())
        self.hits += len(prompts) - len(missing)
        self.misses += len(missing)
        if unique_missing:
            requests = [ScoreRequest(prompts[i], self.candidates, prefix_chars[i]) for i in unique_missing]
            answers = self.backend.score(requests)
            fresh = {keys[i]: answer for i, answer in zip(unique_missing, answers, strict=True)}
            self.cache.put_many(fresh)  # only successful answers reach this line
            found.update(fresh)
        out = np.full((len(prompts), self.n_labels), -np.inf)
        for row, key in enumerate(keys):
            values = np.asarray(found[key], dtype=np.float64)
            for label in range(self.n_labels):
                picks = values[[j for j, owner in enumerate(self.owner) if owner == label]]
                out[row, label] = np.logaddexp.reduce(picks)
        return out


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
            if text is None:
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
            variables = row.record
            if cut != text and len(self.task.text_fields) == 1:
                variables = {**row.record, self.task.text_fields[0]: cut}
            prefix = self.instruction + block
            prompt = prefix + self.task.render(variables, cut)
            prefix_chars = len(prefix) if self.config.select == "random" else 0
            prepared.append(_Prepared(row, cut, cut != text, prompt, prefix_chars, rid))
        return prepared, rejects


def _job_fingerprint(config: LabelConfig, source: str, task: Task, prompt_hash: str, backend: Backend) -> str:
    relevant = {
        k: v
        for k, v in asdict(config).items()
        if k not in ("batch_size", "concurrency", "progress", "cache", "cache_path", "overwrite", "limit")
    }
    return cache_key(
        source=str(Path(source).resolve()) if not source.startswith("hf:") else source,
        config=relevant,
        task=task.name,
        prompt_hash=prompt_hash,
        model_fingerprint=backend.fingerprint,
    )


def _progress(enabled: bool, total: int | None):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]labeling"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} docs/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        disable=not enabled,
        transient=False,
    )


def _count_lines(source: str) -> int | None:
    path = Path(source)
    if not path.is_file() or path.suffix not in (".jsonl", ".json", ".ndjson", ".csv", ".tsv"):
        return None
    with open(path, "rb") as handle:
        count = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    return count - (1 if path.suffix in (".csv", ".tsv") else 0)


def label_corpus(
    source: str | Path, output: str | Path, config: LabelConfig, backend: Backend | None = None
) -> LabelSummary:
    """Label every row of `source` into `output` (JSONL); see the module docstring for resume semantics."""
    source, out_path = str(source), Path(output)
    rejects_path = out_path.with_name(out_path.name + ".rejects.jsonl")
    checkpoint_path = out_path.with_name(out_path.name + ".progress.json")
    task = config.build_task()
    rows_iter = read_records(source)  # validates the input path before any model is loaded
    own_backend = backend is None
    if backend is None:
        backend = make_backend(config)
    cache = (
        AnswerCache(Path(config.cache_path) if config.cache_path else llmst_home() / "cache.sqlite")
        if config.cache
        else AnswerCache(None)
    )
    try:
        return _label(
            source, out_path, rejects_path, checkpoint_path, task, rows_iter, config, backend, cache
        )
    finally:
        cache.close()
        if own_backend:
            backend.close()


def _label(source, out_path, rejects_path, checkpoint_path, task, rows_iter, config, backend, cache):
    started = time.perf_counter()
    fewshot = None
    if config.few_shot:
        examples = load_examples(config.few_shot, task, config.few_shot_label_field)
        fewshot = FewShotSelector(examples, task, shots=config.shots, select=config.select, seed=config.seed)
    prompt_hash = task.prompt_hash(fewshot.describe() if fewshot else "")
    job = _job_fingerprint(config, source, task, prompt_hash, backend)
    summary = LabelSummary(output=str(out_path), rejects=str(rejects_path), prompt_hash=prompt_hash)
    summary.calibration = config.calibrate

    checkpoint = _open_checkpoint(out_path, rejects_path, checkpoint_path, job, config.overwrite)
    skip = checkpoint["rows_consumed"]
    summary.resumed_rows = checkpoint["labeled"]
    labeler = Labeler(config, task, backend, fewshot)
    scorer = _Scorer(backend, task, cache)
    names = task.label_names

    bias = np.zeros(len(names))
    if config.calibrate == "contextual":
        block = fewshot.blocks(["N/A"])[0] if fewshot else ""
        prompts = [
            task.instruction + block + task.render({f: cf for f in task.text_fields}, cf)
            for cf in task.content_free
        ]
        bias = contextual_bias(scorer.label_logprobs(prompts, [0] * len(prompts)))
    elif config.calibrate == "prior":
        bias = _fit_prior(source, labeler, scorer, config)
    if config.calibrate != "none":
        summary.calibration_bias = {n: float(b) for n, b in zip(names, bias, strict=True)}
    scorer.hits = scorer.misses = 0  # report only the main pass

    total = _count_lines(source)
    if config.limit is not None:
        total = min(total, config.limit) if total is not None else config.limit
    rows = islice(rows_iter, config.limit) if config.limit is not None else rows_iter
    rows = islice(rows, skip, None)
    writer, reject_writer = JsonlAppender(out_path), JsonlAppender(rejects_path)
    chunk_size = backend.chunk_size
    counts: Counter[str] = Counter(checkpoint.get("label_counts", {}))
    try:
        with _progress(config.progress, total) as bar:
            bar_task = bar.add_task("label", total=total, completed=skip, rate="-")
            for chunk in chunked(rows, chunk_size):
                valid = [item for item in chunk if isinstance(item, Row)]
                prepared, bad = labeler.prepare(valid)
                bad += [item for item in chunk if isinstance(item, Reject)]
                if prepared:
                    logprobs = scorer.label_logprobs(
                        [p.prompt for p in prepared], [p.prefix_chars for p in prepared]
                    )
                    probs = softmax(logprobs + bias)
                    for item, row_probs in zip(prepared, probs, strict=True):
                        record = _labeled_record(item, row_probs, names, task, backend, prompt_hash, config)
                        counts[record["label"]] += 1
                        summary.truncated += int(item.truncated)
                        writer.write(record)
                for reject in sorted(bad, key=lambda r: r.line):
                    reject_writer.write(reject.to_json())
                checkpoint["rows_consumed"] += len(chunk)
                checkpoint["labeled"] += len(prepared)
                checkpoint["rejected"] += len(bad)
                checkpoint["label_counts"] = dict(counts)
                checkpoint["output_bytes"] = writer.flush()
                checkpoint["rejects_bytes"] = reject_writer.flush()
                write_json_atomic(checkpoint_path, checkpoint)
                summary.rows_read += len(chunk)
                elapsed = time.perf_counter() - started
                bar.update(bar_task, advance=len(chunk), rate=f"{summary.rows_read / elapsed:.1f}")
    finally:
        writer.close()
        reject_writer.close()
    checkpoint["complete"] = True
    write_json_atomic(checkpoint_path, checkpoint)
    summary.labeled = checkpoint["labeled"]
    summary.rejected = checkpoint["rejected"]
    summary.label_counts = dict(counts)
    summary.from_cache, summary.computed = scorer.hits, scorer.misses
    summary.seconds = round(time.perf_counter() - started, 3)
    summary.docs_per_second = round(summary.rows_read / summary.seconds, 2) if summary.seconds else 0.0
    return summary


def _labeled_record(item, row_probs, names, task, backend, prompt_hash, config) -> dict[str, Any]:
    record = keep_input_fields(item.row.record)
    record["id"] = item.rid
    record.update(label_fields(row_probs, names))
    record.update(
        model=backend.model_id,
        task=task.name,
        prompt_hash=prompt_hash,
        calibration=config.calibrate,
        truncated=item.truncated,
    )
    return record


def _fit_prior(source: str, labeler: Labeler, scorer: _Scorer, config: LabelConfig) -> np.ndarray:
    """Score the first `prior_fit_rows` rows (answers land in the cache) and fit the prior biases."""
    limit = config.prior_fit_rows if config.limit is None else min(config.prior_fit_rows, config.limit)
    rows = [r for r in islice(read_records(source), limit) if isinstance(r, Row)]
    prepared, _ = labeler.prepare(rows)
    if not prepared:
        raise ConfigError("prior calibration found no valid rows to fit on")
    logprobs = []
    step = labeler.backend.chunk_size
    for start in range(0, len(prepared), step):
        part = prepared[start : start + step]
        logprobs.append(scorer.label_logprobs([p.prompt for p in part], [p.prefix_chars for p in part]))
    prior = np.asarray(config.prior) if config.prior else None
    try:
        return prior_bias(np.concatenate(logprobs), prior)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _truncate_to(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as handle:
            handle.truncate(size)


def _open_checkpoint(out_path: Path, rejects_path: Path, checkpoint_path: Path, job: str, overwrite: bool):
    fresh = {
        "job": job,
        "rows_consumed": 0,
        "labeled": 0,
        "rejected": 0,
        "output_bytes": 0,
        "rejects_bytes": 0,
        "label_counts": {},
        "complete": False,
    }
    if overwrite:
        for path in (out_path, rejects_path, checkpoint_path):
            path.unlink(missing_ok=True)
        return fresh
    if checkpoint_path.exists():
        state = json.loads(checkpoint_path.read_text())
        if state.get("job") != job:
            raise ConfigError(
                f"{out_path} was written by a different labeling job (other input, model, task or options)",
                hint="pass --overwrite to replace it, or choose another -o",
            )
        _truncate_to(out_path, state["output_bytes"])
        _truncate_to(rejects_path, state["rejects_bytes"])
        state["complete"] = False
        return state
    if out_path.exists() and out_path.stat().st_size > 0:
        raise ConfigError(f"{out_path} already exists", hint="pass --overwrite to replace it")
    for path in (out_path, rejects_path):
        path.unlink(missing_ok=True)
    return fresh
