"""Classifier students (`kind: classifier`): a sequence-classification head trained with the HF `Trainer`.

llmst adds the loss (soft labels, per-row weights, doubly robust), a batch plan that mixes gold rows in at a
fixed share, and mask-based pooling for decoders (`llmst.train.model`). The shared plumbing (prepare, Trainer
options, save, card, marker) is `llmst.train.run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from llmst.models import resolve_model
from llmst.train.config import TrainConfig
from llmst.train.data import TrainingRows
from llmst.train.losses import DoublyRobustLoss, LogConfidenceLoss, SoftCrossEntropyLoss
from llmst.train.model import StudentClassifier, build_classifier
from llmst.train.run import (
    TrainSummary,
    prepare_run,
    register_student_kind,
    run_and_save,
    student_meta,
    training_arguments,
)

StudentLoss = SoftCrossEntropyLoss | DoublyRobustLoss | LogConfidenceLoss


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


def student_loss(config: TrainConfig) -> StudentLoss:
    if config.loss == "doubly-robust":
        return DoublyRobustLoss()
    if config.loss == "logconf":
        return LogConfidenceLoss(config.logconf_weight, config.logconf_warmup)
    return SoftCrossEntropyLoss()


def _make_trainer_class():
    from transformers import Trainer

    class StudentTrainer(Trainer):
        """Trainer whose loss is llmst's (soft / weighted cross-entropy, doubly robust or logconf)."""

        def __init__(self, *args, loss: StudentLoss, **kwargs):
            super().__init__(*args, **kwargs)
            self.student_loss = loss

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            if isinstance(self.student_loss, DoublyRobustLoss):
                pseudo_weights = torch.where(inputs["is_gold"] > 0, 1.0, inputs["weight"])
                loss = self.student_loss.compute_loss_from_logits(
                    logits, inputs["labeler_target"], inputs["target"], inputs["is_gold"], pseudo_weights
                )
            elif isinstance(self.student_loss, LogConfidenceLoss):
                progress = self.state.global_step / max(self.state.max_steps, 1)
                loss = self.student_loss.compute_loss_from_logits(
                    logits, inputs["target"], inputs["weight"], progress=progress
                )
            else:
                loss = self.student_loss.compute_loss_from_logits(logits, inputs["target"], inputs["weight"])
            return (loss, {"logits": logits}) if return_outputs else loss

    return StudentTrainer


@register_student_kind("classifier")
def train_classifier(labeled: str | Path, out: Path, config: TrainConfig) -> TrainSummary:
    from transformers import TrainingArguments

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
        **training_arguments(out, config, len(run.plan)),
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,
        label_names=[],
    )
    loss = student_loss(config)
    trainer = _make_trainer_class()(
        model=StudentClassifier(model),
        args=args,
        train_dataset=dataset,
        data_collator=_collate(tokenizer),
        loss=loss,
    )
    meta = student_meta(
        "classifier",
        spec.spec,
        run,
        config,
        soft_labels=config.soft_labels,
        loss=config.loss,
        loss_config=loss.get_config_dict(),
        citation=loss.citation,
    )
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
    )
