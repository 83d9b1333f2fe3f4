"""`llmst train`: fit a student on labeled records with the transformers `Trainer`.

The Trainer brings what a training run needs on one CPU, one GPU or many (it runs on accelerate): DDP under
`torchrun` / `accelerate launch`, FSDP from an accelerate config, bf16, checkpoints and resume. llmst adds
the loss (soft labels, per-row weights, doubly robust), a batch plan that mixes gold rows in at a fixed share,
mask-based pooling for decoders, and a model folder with a card. A generative student goes to TRL's
SFTTrainer instead (`llmst.train.sft`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from llmst.errors import ConfigError
from llmst.models import resolve_model
from llmst.train.config import TrainConfig
from llmst.train.data import TrainingRows, batch_plan, label_names_of, load_gold, load_pseudo_labeled
from llmst.train.losses import DoublyRobustLoss, SoftCrossEntropyLoss
from llmst.train.model import (
    StudentClassifier,
    build_classifier,
    unwrap_for_saving,
    write_student_card,
)

CHECKPOINTS = "checkpoints"


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


class _PlannedRows(Dataset):
    """Items in batch-plan order: tokenized text, training target, labeler target (for DR), weight, gold flag."""

    def __init__(self, plan, pseudo: TrainingRows, gold: TrainingRows | None, encode):
        self.plan = plan
        self.pseudo_ids = encode(pseudo.texts)
        self.gold_ids = encode(gold.texts) if gold is not None else []
        self.pseudo, self.gold = pseudo, gold

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int) -> dict[str, Any]:
        is_gold, row = self.plan[index]
        if is_gold:
            rows, ids, labeler = self.gold, self.gold_ids[row], self.gold.pseudo[row]
        else:
            rows, ids, labeler = self.pseudo, self.pseudo_ids[row], self.pseudo.targets[row]
        return {
            "input_ids": ids,
            "target": rows.targets[row],
            "labeler_target": labeler,
            "weight": float(rows.weights[row]),
            "is_gold": float(is_gold),
        }


def _collate(tokenizer):
    def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = tokenizer.pad({"input_ids": [item["input_ids"] for item in items]}, return_tensors="pt")
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "target": torch.tensor(np.stack([i["target"] for i in items]), dtype=torch.float32),
            "labeler_target": torch.tensor(
                np.stack([i["labeler_target"] for i in items]), dtype=torch.float32
            ),
            "weight": torch.tensor([i["weight"] for i in items], dtype=torch.float32),
            "is_gold": torch.tensor([i["is_gold"] for i in items], dtype=torch.float32),
        }

    return collate


def _make_trainer_class():
    from transformers import Trainer

    class StudentTrainer(Trainer):
        """Trainer whose loss is llmst's (soft / weighted cross-entropy or doubly robust)."""

        def __init__(self, *args, doubly_robust: bool = False, **kwargs):
            super().__init__(*args, **kwargs)
            self.doubly_robust = doubly_robust

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            if self.doubly_robust:
                pseudo_weights = torch.where(inputs["is_gold"] > 0, 1.0, inputs["weight"])
                loss = DoublyRobustLoss().compute_loss_from_logits(
                    logits, inputs["labeler_target"], inputs["target"], inputs["is_gold"], pseudo_weights
                )
            else:
                loss = SoftCrossEntropyLoss().compute_loss_from_logits(
                    logits, inputs["target"], inputs["weight"]
                )
            return (loss, {"logits": logits}) if return_outputs else loss

    return StudentTrainer


def _use_bf16(config: TrainConfig) -> bool:
    if config.bf16 is not None:
        return config.bf16
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


RUN_MARKER = "llmst_run.json"


def _run_fingerprint(labeled: str | Path, config: TrainConfig) -> str:
    """Identity of a training run: the data file (path, size, mtime) and every option that changes training."""
    options = {
        k: v
        for k, v in config.to_json().items()
        if k not in ("overwrite", "resume", "eval", "eval_gold_field")
    }
    stat = Path(labeled).stat()
    payload = json.dumps([str(labeled), stat.st_size, stat.st_mtime_ns, options], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _prepare_output(out: Path, config: TrainConfig, fingerprint: str) -> str | None:
    """Refuse to clobber a finished model (unless --overwrite); return the checkpoint to resume from, if any.

    Checkpoints carry the run's fingerprint, so a rerun with other data or options never resumes from them.
    """
    from transformers.trainer_utils import get_last_checkpoint

    if (out / "config.json").exists() and not config.overwrite:
        raise ConfigError(f"{out} already holds a trained model", hint="pass --overwrite to replace it")
    checkpoints = out / CHECKPOINTS
    if config.overwrite:
        if _is_main_process() and out.exists():
            for child in out.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        return None
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
    if _is_main_process():
        (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        (out / CHECKPOINTS / RUN_MARKER).write_text(json.dumps({"fingerprint": fingerprint}) + "\n")


def _fsdp_requested() -> bool:
    """True under `accelerate launch` with an FSDP config (scripts/accelerate/fsdp.yaml)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def _check_distributed(config: TrainConfig) -> None:
    if config.lora and _fsdp_requested():
        raise ConfigError(
            "LoRA under FSDP is not supported yet (adapters would be merged from sharded weights)",
            hint="train LoRA students with DDP (torchrun / accelerate launch without the FSDP config)",
        )


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _teachers(path: str | Path) -> list[str]:
    from llmst.records import Row, read_records

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
    _check_distributed(config)
    fingerprint = _run_fingerprint(labeled, config)
    resume_from = _prepare_output(out, config, fingerprint)
    _mark_run(out, fingerprint)
    return PreparedRun(names, text_fields, pseudo, gold, plan, resume_from)


def training_arguments(out: Path, config: TrainConfig, planned: int, progress: bool) -> dict[str, Any]:
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
        bf16=_use_bf16(config),
        use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="sequential",
        dataloader_num_workers=0,
        disable_tqdm=not progress,
    )


def train(
    labeled: str | Path, out: str | Path, config: TrainConfig, *, progress: bool = True
) -> TrainSummary:
    """Train a student on `labeled` records and save it to `out` as an HF model folder with a model card."""
    if config.kind == "generative":
        from llmst.train.sft import train_generative

        return train_generative(labeled, out, config, progress=progress)
    from transformers import TrainingArguments

    out = Path(out)
    run = prepare_run(labeled, out, config)
    spec = resolve_model(config.student)
    model, tokenizer = build_classifier(
        spec.path,
        run.names,
        lora=config.lora,
        lora_options={
            "r": config.lora_r,
            "lora_alpha": config.lora_alpha,
            "lora_dropout": config.lora_dropout,
            "target": config.lora_target,
        },
    )

    def encode(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, truncation=True, max_length=config.max_length)["input_ids"]

    dataset = _PlannedRows(run.plan, run.pseudo, run.gold, encode)
    args = TrainingArguments(
        **training_arguments(out, config, len(run.plan), progress),
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,
        label_names=[],
    )
    trainer = _make_trainer_class()(
        model=StudentClassifier(model),
        args=args,
        train_dataset=dataset,
        data_collator=_collate(tokenizer),
        doubly_robust=config.loss == "doubly-robust",
    )
    meta = {
        "kind": "classifier",
        "base_model": spec.spec,
        "labels": run.names,
        "text_fields": run.text_fields,
        "max_length": config.max_length,
        "lora": config.lora,
        "soft_labels": config.soft_labels,
        "loss": config.loss,
    }
    return run_and_save(
        trainer,
        model,
        tokenizer,
        out,
        meta,
        config=config,
        labeled=labeled,
        rows=len(run.pseudo),
        gold_rows=len(run.gold) if run.gold else 0,
        planned=len(run.plan),
        resume_from=run.resume_from,
        progress=progress,
    )


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
    progress: bool,
    extra_files: dict[str, str] | None = None,
    state_prefix: str = "model.",
) -> TrainSummary:
    """Train (resuming if asked), then on the main process save the plain HF model, the card and
    `extra_files`, score `config.eval`, and drop the checkpoints."""
    if not progress:  # --quiet: keep stdout for the JSON summary
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    trainer.accelerator.wait_for_everyone()
    metrics: dict[str, Any] = {}
    state_dict = None
    if _fsdp_requested():  # gather the sharded weights on every rank; rank 0 saves them
        full = trainer.accelerator.get_state_dict(trainer.model_wrapped)
        if trainer.accelerator.is_main_process:
            state_dict = {k[len(state_prefix) :]: v for k, v in full.items() if k.startswith(state_prefix)}
    if trainer.accelerator.is_main_process:
        unwrap_for_saving(model).save_pretrained(out, state_dict=state_dict)
        tokenizer.save_pretrained(out)
        for name, text in (extra_files or {}).items():
            (out / name).write_text(text)
        meta.update(
            data=str(labeled),
            rows=rows,
            gold=config.gold,
            gold_share=config.gold_share,
            teachers=_teachers(labeled),
            filter=_filter_summary(labeled),
            config=config.to_json(),
            train_runtime_seconds=round(seconds, 1),
            samples_per_second=round(planned / seconds, 2) if seconds else None,
        )
        write_student_card(out, meta)
        if config.eval:
            from llmst.train.predict import evaluate_student

            metrics = evaluate_student(out, config.eval, gold_field=config.eval_gold_field)
            meta["metrics"] = {k: metrics[k] for k in ("accuracy", "macro_f1", "n") if k in metrics}
            write_student_card(out, meta)
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
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
