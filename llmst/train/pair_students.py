"""Pair students: `kind: cross-encoder` (sentence-transformers `CrossEncoderTrainer`) and `kind: bi-encoder`
(`SentenceTransformerTrainer`), trained on pair records (`text_a, text_b` and a numeric target).

Both trainers are transformers Trainers, so `llmst train` runs them as it runs a classifier: on one CPU or GPU,
under `torchrun` / `accelerate launch`, with checkpoints that an interrupted run resumes from. The saved folder is
a plain sentence-transformers model (`CrossEncoder(folder)` / `SentenceTransformer(folder)`) plus llmst's card.

Losses (sentence-transformers' own): cross-encoder `bce` (BinaryCrossEntropyLoss; targets in [0, 1]) and `mse`
(MSE of the sigmoid score); bi-encoder `cosent` (CoSENTLoss: only the order of the scores matters), `angle`
(AnglELoss) and `mse` (CosineSimilarityLoss: MSE of the cosine against the score, targets in [0, 1]).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmst.errors import ConfigError
from llmst.models import resolve_model
from llmst.pairs.data import ScoredPairs, read_scored_pairs
from llmst.train.config import TrainConfig
from llmst.train.run import (
    TrainSummary,
    claim_output,
    register_student_kind,
    run_and_save,
    training_arguments,
)

# Losses whose targets must lie in [0, 1] (a probability, or a cosine it is compared with).
UNIT_TARGETS = {"bce", "mse"}


def _load(labeled: str | Path, config: TrainConfig) -> ScoredPairs:
    from transformers import set_seed

    set_seed(config.seed)
    pairs = read_scored_pairs(labeled, config.text_fields, config.score_field, config.limit)
    if config.loss in UNIT_TARGETS and (pairs.scores.min() < 0 or pairs.scores.max() > 1):
        raise ConfigError(
            f"--loss {config.loss} needs targets in [0, 1]; {config.score_field} spans "
            f"[{pairs.scores.min():g}, {pairs.scores.max():g}]",
            hint="rescale the scores (e.g. STS 0-5 divided by 5) or train a bi-encoder with --loss cosent",
        )
    return pairs


def _dataset(pairs: ScoredPairs):
    from datasets import Dataset

    return Dataset.from_dict({"sentence1": pairs.text_a, "sentence2": pairs.text_b, "score": pairs.scores})


def _arguments(args_cls, out: Path, config: TrainConfig, rows: int):
    options = training_arguments(out, config, int(np.ceil(rows * config.epochs)))
    options.pop("train_sampling_strategy")  # sentence-transformers batches with its own seeded sampler
    return args_cls(**{**options, "num_train_epochs": config.epochs})


def _meta(kind: str, config: TrainConfig, pairs: ScoredPairs, loss: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "base_model": resolve_model(config.student).spec,
        "text_fields": config.text_fields,
        "score_field": config.score_field,
        "max_length": config.max_length,
        "lora": False,
        "loss": f"{config.loss} ({type(loss).__name__})",
        "score_range": [float(pairs.scores.min()), float(pairs.scores.max())],
        "citation": getattr(loss, "citation", None),
    }


def _train(kind: str, model, trainer, labeled: str | Path, out: Path, config: TrainConfig, pairs, resume):
    from llmst.pairs.evaluate import evaluate_pairs

    def evaluate(folder: Path) -> dict[str, Any]:
        return evaluate_pairs(
            folder, config.eval, kind=kind, fields=config.text_fields, score_field=config.eval_gold_field
        )

    return run_and_save(
        trainer,
        model,
        model.tokenizer,
        out,
        _meta(kind, config, pairs, trainer.loss if not isinstance(trainer.loss, dict) else None),
        config=config,
        labeled=labeled,
        rows=len(pairs),
        gold_rows=0,
        planned=int(np.ceil(len(pairs) * config.epochs)),
        resume_from=resume,
        state_prefix="",
        evaluate=evaluate,
    )


@register_student_kind("cross-encoder")
def train_cross_encoder(labeled: str | Path, out: Path, config: TrainConfig) -> TrainSummary:
    import torch
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
        losses,
    )

    pairs = _load(labeled, config)
    resume = claim_output(labeled, out, config)
    model = CrossEncoder(resolve_model(config.student).path, num_labels=1, max_length=config.max_length)
    if config.loss == "bce":
        loss = losses.BinaryCrossEntropyLoss(model)
    else:  # the sigmoid score, as CrossEncoder.predict returns it, against the target
        loss = losses.MSELoss(model, activation_fn=torch.nn.Sigmoid())
    trainer = CrossEncoderTrainer(
        model=model,
        args=_arguments(CrossEncoderTrainingArguments, out, config, len(pairs)),
        train_dataset=_dataset(pairs),
        loss=loss,
    )
    return _train("cross-encoder", model, trainer, labeled, out, config, pairs, resume)


@register_student_kind("bi-encoder")
def train_bi_encoder(labeled: str | Path, out: Path, config: TrainConfig) -> TrainSummary:
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer import losses

    pairs = _load(labeled, config)
    resume = claim_output(labeled, out, config)
    model = SentenceTransformer(resolve_model(config.student).path)
    model.max_seq_length = config.max_length
    loss = {"cosent": losses.CoSENTLoss, "angle": losses.AnglELoss, "mse": losses.CosineSimilarityLoss}[
        config.loss
    ](model)
    trainer = SentenceTransformerTrainer(
        model=model,
        args=_arguments(SentenceTransformerTrainingArguments, out, config, len(pairs)),
        train_dataset=_dataset(pairs),
        loss=loss,
    )
    return _train("bi-encoder", model, trainer, labeled, out, config, pairs, resume)
