"""`llmst train`: the plumbing every student kind shares, and the `{kind: fn}` registry that picks one.

The transformers `Trainer` brings what a training run needs on one CPU, one GPU or many (it runs on
accelerate): DDP under `torchrun` / `accelerate launch`, FSDP from an accelerate config, bf16, checkpoints and
resume. This module prepares a run (seed, checked rows, batch plan, a claimed output folder whose checkpoints
carry the run's fingerprint), builds the Trainer options both kinds use, and saves the result (plain HF folder,
model card, eval metrics, signature marker). Each kind lives in its own module and registers itself:
`classifier` (a sequence-classification head, `llmst.train.classifier`) and `generative` (TRL SFT,
`llmst.train.sft`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmst import stage
from llmst.distributed import is_main_process
from llmst.errors import ConfigError
from llmst.train.config import PAIR_KINDS, TrainConfig, train_signature
from llmst.train.data import TrainingRows, batch_plan, label_names_of, load_gold, load_pseudo_labeled
from llmst.train.model import unwrap_for_saving, write_student_card

CHECKPOINTS = "checkpoints"
# the eval metrics a model card shows (labels; pair correlation; retrieval)
CARD_METRICS = ("accuracy", "macro_f1", "spearman", "pearson", "map", "mrr@10", "ndcg@10", "n")
RUN_MARKER = "llmst_run.json"
# Modules that register the built-in kinds; imported by name on first use (they import this module).
BUILTIN_KIND_MODULES = ("llmst.train.classifier", "llmst.train.sft", "llmst.train.pair_students")

TrainFn = Callable[[str | Path, Path, TrainConfig], "TrainSummary"]
_KINDS: dict[str, TrainFn] = {}


@dataclass
class TrainSummary:
    output: str
    rows: int
    gold_rows: int
    steps: int
    seconds: float
    samples_per_second: float
    final_loss: float | None
    resumed_from: str | None
    metrics: dict[str, Any]


def register_student_kind(kind: str) -> Callable[[TrainFn], TrainFn]:
    """Decorator: `fn(labeled, out, config) -> TrainSummary` trains students of `kind` (`TrainConfig.kind`)."""

    def register(fn: TrainFn) -> TrainFn:
        _KINDS[kind] = fn
        return fn

    return register


def student_trainer(kind: str) -> TrainFn:
    """The registered training function of `kind`."""
    if kind not in _KINDS:
        for module in BUILTIN_KIND_MODULES:
            importlib.import_module(module)
    if kind not in _KINDS:
        raise ConfigError(f"unknown student kind '{kind}'", hint="use one of: " + ", ".join(sorted(_KINDS)))
    return _KINDS[kind]


def train(labeled: str | Path, out: str | Path, config: TrainConfig) -> TrainSummary:
    """Train a student on `labeled` records and save it to `out` as an HF model folder with a model card.

    `out` is complete when it holds `llmst_signature.json` (`train_signature(labeled, config)`), written last.
    """
    fn = student_trainer(config.kind)
    with quiet_libraries(not config.progress):
        return fn(labeled, Path(out), config)


@contextlib.contextmanager
def quiet_libraries(enabled: bool) -> Iterator[None]:
    """Under --quiet: no transformers warnings (the LOAD REPORT of a fresh head reads like an error, yet a new
    head is what a student starts from) and no transformers / datasets progress bars; restored afterwards."""
    if not enabled:
        yield
        return
    from datasets.utils import logging as datasets_logging
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled(), datasets_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars[0]:
            hf_logging.enable_progress_bar()
        if bars[1]:
            datasets_logging.enable_progress_bar()


# ------------------------------------------------------------------------------------------- preparing a run


def use_bf16(config: TrainConfig) -> bool:
    if config.bf16 is not None:
        return config.bf16
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def run_fingerprint(labeled: str | Path, config: TrainConfig) -> str:
    """Identity of a training run, kept with its checkpoints: the content of the data and gold files and every
    option that changes training (not --eval, which is only scored afterwards, nor the runtime options)."""
    options = {
        k: v for k, v in stage.signature_fields(config).items() if k not in ("eval", "eval_gold_field")
    }
    from llmst.models import model_fingerprint

    inputs = {"labeled": labeled, "gold": config.gold}
    return stage.signature("train-checkpoints", options, inputs, student=model_fingerprint(config.student))


def _prepare_output(labeled: str | Path, out: Path, config: TrainConfig, fingerprint: str) -> str | None:
    """Refuse to clobber a finished model (unless --overwrite); return the checkpoint to resume from, if any.

    Checkpoints carry the run's fingerprint, so a rerun with other data or options never resumes from them.
    """
    from transformers.trainer_utils import get_last_checkpoint

    if (out / "config.json").exists() and not config.overwrite:
        if stage.read_marker(out) == train_signature(labeled, config):
            raise ConfigError(
                f"{out} already holds a trained model of this data and these options",
                hint="nothing to redo; pass --overwrite to train it again",
            )
        raise ConfigError(f"{out} already holds a trained model", hint="pass --overwrite to replace it")
    checkpoints = out / CHECKPOINTS
    if config.overwrite:
        if is_main_process() and out.exists():
            for child in out.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        return None
    if is_main_process():
        stage.clear_marker(out)
    marker = checkpoints / RUN_MARKER
    if checkpoints.is_dir() and marker.exists() and config.resume:
        if json.loads(marker.read_text()).get("fingerprint") != fingerprint:
            raise ConfigError(
                f"{checkpoints} holds checkpoints of a different run (other data or options)",
                hint="rerun with the same data and options to resume, or pass --overwrite to start over",
            )
        return get_last_checkpoint(str(checkpoints))
    return None


def _mark_run(out: Path, fingerprint: str) -> None:
    if is_main_process():
        (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        (out / CHECKPOINTS / RUN_MARKER).write_text(json.dumps({"fingerprint": fingerprint}) + "\n")


def fsdp_requested() -> bool:
    """True under `accelerate launch` with an FSDP config (scripts/accelerate/fsdp.yaml)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def _check_distributed(config: TrainConfig) -> None:
    if config.kind in PAIR_KINDS and fsdp_requested():
        raise ConfigError(
            f"--kind {config.kind} under FSDP is not supported",
            hint="train pair students with DDP (torchrun)",
        )
    if config.lora and fsdp_requested():
        raise ConfigError(
            "LoRA under FSDP is not supported yet (adapters would be merged from sharded weights)",
            hint="train LoRA students with DDP (torchrun / accelerate launch without the FSDP config)",
        )


@dataclass
class PreparedRun:
    """A run's checked data and batch plan, and the checkpoint it resumes from (None: a fresh start)."""

    names: list[str]
    text_fields: list[str]
    pseudo: TrainingRows
    gold: TrainingRows | None
    plan: list[tuple[bool, int]]
    resume_from: str | None


def prepare_run(labeled: str | Path, out: Path, config: TrainConfig) -> PreparedRun:
    """Seed, load and check the training rows, plan the batches, then claim `out` (only once the inputs are
    known to be good, so a bad input never costs an existing model)."""
    from transformers import set_seed

    set_seed(config.seed)
    names = label_names_of(labeled, config.labels)
    text_fields = config.text_fields or ["text"]
    pseudo = load_pseudo_labeled(
        labeled,
        names,
        text_fields=text_fields,
        soft_labels=config.soft_labels,
        weight_field=config.weight_field,
        limit=config.limit,
    )
    gold = None
    if config.gold:
        gold = load_gold(
            config.gold,
            names,
            text_fields=text_fields,
            gold_field=config.gold_field,
            need_pseudo=config.loss == "doubly-robust",
        )
        if not config.soft_labels:  # the labeler's view of a gold row is hard too
            gold.pseudo = np.eye(len(names))[gold.pseudo.argmax(axis=1)]
    plan = batch_plan(
        len(pseudo),
        len(gold) if gold else 0,
        epochs=config.epochs,
        batch_size=config.batch_size,
        gold_share=config.gold_share,
        seed=config.seed,
    )
    return PreparedRun(names, text_fields, pseudo, gold, plan, claim_output(labeled, out, config))


def claim_output(labeled: str | Path, out: Path, config: TrainConfig) -> str | None:
    """Claim `out` for this run (refusing a finished model unless --overwrite); the checkpoint to resume from."""
    _check_distributed(config)
    fingerprint = run_fingerprint(labeled, config)
    resume_from = _prepare_output(labeled, out, config, fingerprint)
    _mark_run(out, fingerprint)
    return resume_from


def training_arguments(out: Path, config: TrainConfig, planned: int) -> dict[str, Any]:
    """Trainer options shared by the classifier (`TrainingArguments`) and SFT (`SFTConfig`) students."""
    steps = -(-planned // config.batch_size)
    return dict(
        output_dir=str(out / CHECKPOINTS),
        per_device_train_batch_size=config.batch_size,
        num_train_epochs=1,  # the batch plan already holds config.epochs passes
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # < 1: a ratio of the steps each rank runs
        lr_scheduler_type="linear",
        weight_decay=config.weight_decay,
        logging_steps=max(1, min(50, steps // 10)),
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        report_to="none",
        seed=config.seed,
        bf16=use_bf16(config),
        use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="sequential",
        dataloader_num_workers=0,
        disable_tqdm=not config.progress,
    )


# ------------------------------------------------------------------------------------------- saving a run


def _teachers(path: str | Path) -> list[str]:
    from llmst.readers import Row, read_records

    for item in read_records(path):
        if isinstance(item, Row):
            record = item.record
            parts = [str(record[k]) for k in ("model", "task", "calibration") if record.get(k) is not None]
            return [" / ".join(parts)] if parts else []
    return []


def _filter_summary(labeled: str | Path) -> str | None:
    """What `llmst filter` did to produce `labeled`, from the report it wrote next to it."""
    report_path = Path(f"{labeled}.report.json")
    if not report_path.exists():
        return None
    try:
        report = json.loads(report_path.read_text())
        text = f"{report['method']}: kept {report['n_kept']} of {report['n_input']} rows"
    except (ValueError, KeyError):
        return None
    guarantee = report.get("guarantee") or {}
    if guarantee.get("guaranteed_precision") is not None:
        text += f"; precision >= {guarantee['guaranteed_precision']} with probability >= {guarantee['probability']:.2f}"
    return text


def student_meta(
    kind: str, base_model: str, run: PreparedRun, config: TrainConfig, **extra: Any
) -> dict[str, Any]:
    """The student card fields every kind shares (`run_and_save` adds the data and timing ones)."""
    return {
        "kind": kind,
        "base_model": base_model,
        "labels": run.names,
        "text_fields": run.text_fields,
        "max_length": config.max_length,
        "lora": config.lora,
        **extra,
    }


def run_and_save(
    trainer,
    model,
    tokenizer,
    out: Path,
    meta: dict[str, Any],
    *,
    config: TrainConfig,
    labeled: str | Path,
    rows: int,
    gold_rows: int,
    planned: int,
    resume_from: str | None,
    extra_files: dict[str, str] | None = None,
    state_prefix: str = "model.",
    evaluate: Callable[[Path], dict[str, Any]] | None = None,
) -> TrainSummary:
    """Train (resuming if asked), then on the main process save the plain HF model, the card and
    `extra_files`, score `config.eval` (with `evaluate(out)`, default the label metrics of
    `evaluate_student`), drop the checkpoints and, last, write the signature marker."""
    if not config.progress:  # --quiet: keep stdout for the JSON summary
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    trainer.accelerator.wait_for_everyone()
    metrics: dict[str, Any] = {}
    state_dict = None
    if fsdp_requested():  # gather the sharded weights on every rank; rank 0 saves them
        full = trainer.accelerator.get_state_dict(trainer.model_wrapped)
        if trainer.accelerator.is_main_process:
            state_dict = {k[len(state_prefix) :]: v for k, v in full.items() if k.startswith(state_prefix)}
    if trainer.accelerator.is_main_process:
        saving = unwrap_for_saving(model)
        if state_dict is None:  # sentence-transformers models take no state_dict (and never run under FSDP)
            saving.save_pretrained(out)
        else:
            saving.save_pretrained(out, state_dict=state_dict)
        tokenizer.save_pretrained(out)
        for name, text in (extra_files or {}).items():
            (out / name).write_text(text)
        meta.update(
            data=str(labeled),
            rows=rows,
            gold=config.gold,
            gold_share=config.gold_share,
            teachers=meta.get("teachers") or _teachers(labeled),
            filter=_filter_summary(labeled),
            config=config.to_json(),
            train_runtime_seconds=round(seconds, 1),
            samples_per_second=round(planned / seconds, 2) if seconds else None,
            processes=trainer.accelerator.num_processes,  # ranks of torchrun / accelerate launch
            steps=result.global_step,  # optimiser steps of each rank
        )
        write_student_card(out, meta)
        if config.eval:
            if evaluate is None:
                from llmst.train.predict import evaluate_student

                metrics = evaluate_student(out, config.eval, gold_field=config.eval_gold_field)
            else:
                metrics = evaluate(out)
            meta["metrics"] = {k: metrics[k] for k in CARD_METRICS if k in metrics}
            write_student_card(out, meta)
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
        stage.write_marker(out, train_signature(labeled, config), stage="train", data=str(labeled))
        print(f"saved student to {out}", file=sys.stderr)
    trainer.accelerator.wait_for_everyone()
    return TrainSummary(
        output=str(out),
        rows=rows,
        gold_rows=gold_rows,
        steps=result.global_step,
        seconds=round(seconds, 2),
        samples_per_second=round(planned / seconds, 2) if seconds else 0.0,
        final_loss=round(losses[-1], 4) if losses else None,
        resumed_from=resume_from,
        metrics=metrics,
    )
