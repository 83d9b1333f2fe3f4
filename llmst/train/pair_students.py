"""Pair students: `kind: cross-encoder` (sentence-transformers `CrossEncoderTrainer`) and `kind: bi-encoder`
(`SentenceTransformerTrainer`), trained on pair records (`text_a, text_b` and a numeric target).

Both trainers are transformers Trainers, so `llmst train` runs them as it runs a classifier: on one CPU or GPU,
under `torchrun` / `accelerate launch`, with checkpoints that an interrupted run resumes from. The saved folder is
a plain sentence-transformers model (`CrossEncoder(folder)` / `SentenceTransformer(folder)`) plus llmst's card.

Losses (sentence-transformers' own): cross-encoder `bce` (BinaryCrossEntropyLoss; targets in [0, 1]) and `mse`
(MSE of the sigmoid score); bi-encoder `cosent` (CoSENTLoss: only the order of the scores matters), `angle`
(AnglELoss) and `mse` (CosineSimilarityLoss: MSE of the cosine against the score, targets in [0, 1]).

Retrieval distillation (bi-encoder, on query groups of pair records: `llmst.pairs.groups`): `marginmse`
(MarginMSELoss on cosines: the student's margin cos(q, p) - cos(q, n) fits the teacher's score margin),
`kldiv` (DistillKLDivLoss: the student's softmax over cosine / temperature fits the teacher's softmax over
score / teacher temperature, by default the student's for scores in [0, 1] and 1 for raw logits) and `cprd`
(llmst's PartialRankingDistillLoss: a contrastive loss for the positive plus the teacher's order among the hard
negatives, on batches without repeated texts, `BatchSamplers.NO_DUPLICATES`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from llmst.errors import ConfigError
from llmst.models import resolve_model
from llmst.pairs.data import ScoredPairs, read_scored_pairs
from llmst.train.config import IN_BATCH_NEGATIVE_LOSSES, LISTWISE_LOSSES, TrainConfig
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


def _load_groups(labeled: str | Path, config: TrainConfig):
    from transformers import set_seed

    from llmst.pairs.groups import read_query_groups

    set_seed(config.seed)
    groups = read_query_groups(
        labeled,
        config.text_fields,
        config.score_field,
        negatives=config.negatives,
        positive_field=config.positive_field,
        limit=config.limit,
    )
    if config.loss == "kldiv" and (warning := kldiv_teacher_temperature(config, groups.scores)[1]):
        print(f"warning: {warning}", file=sys.stderr)
    if config.loss == "marginmse" and (groups.scores.min() < 0 or groups.scores.max() > 1):
        raise ConfigError(
            f"--loss marginmse fits cosine margins to score margins, so it needs teacher scores in [0, 1]; "
            f"{config.score_field} spans [{groups.scores.min():g}, {groups.scores.max():g}]",
            hint="score with a one-label cross-encoder (sigmoid scores), rescale, or use --loss kldiv / cprd",
        )
    return groups


def scaled_pairwise_cos_sim(a, b, scale: float = 1.0):
    """Row-wise cosine of `a` and `b` (both (B, D) tensors) times `scale`: the student scores of the kldiv loss
    (`functools.partial(scaled_pairwise_cos_sim, scale=1 / temperature)`), so its loss is not shrunk by the
    squared student temperature as `DistillKLDivLoss(student_temperature=...)` would be."""
    from torch.nn import functional as F

    return F.cosine_similarity(a, b, dim=-1) * scale


# float32's softmax weight of a candidate underflows once (row max - score) / temperature exceeds about this
# (exp(-87.3) is its smallest normal number): the candidate then teaches nothing
UNDERFLOW = 87.0


def kldiv_teacher_temperature(config: TrainConfig, scores: np.ndarray | None) -> tuple[float, str | None]:
    """The kldiv teacher temperature (`--teacher-temperature`, else `--temperature` for teacher scores of shape
    (rows, 1 + negatives) in [0, 1] and 1.0 for any other, raw logits), and a warning when the teacher's
    softmax underflows at it."""
    temperature = config.teacher_temperature
    if temperature is None:
        unit = scores is None or (scores.min() >= 0 and scores.max() <= 1)
        temperature = config.temperature if unit else 1.0
    if scores is None or not scores.size:
        return temperature, None
    spread = float((scores.max(axis=1) - scores.min(axis=1)).max())
    if spread / temperature <= UNDERFLOW:
        return temperature, None
    return temperature, (
        f"--loss kldiv: teacher scores span [{scores.min():g}, {scores.max():g}] (up to {spread:g} within one "
        f"query); divided by --teacher-temperature {temperature:g} the teacher's softmax underflows to 0 for the "
        f"lowest candidates, which then teach nothing: pass --teacher-temperature {spread / UNDERFLOW:.3g} or "
        "more (about 1 for raw logits), or score with a one-label cross-encoder (sigmoid scores in [0, 1])"
    )


def retrieval_loss(model, config: TrainConfig, teacher_scores: np.ndarray | None = None):
    """The listwise loss of `config.loss` (marginmse, kldiv or cprd) for a SentenceTransformer `model`;
    `teacher_scores` (rows, 1 + negatives) set kldiv's default teacher temperature."""
    from functools import partial

    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.util import pairwise_cos_sim

    from llmst.train.partial_ranking import PartialRankingDistillLoss

    if config.loss == "marginmse":
        return losses.MarginMSELoss(model, similarity_fct=pairwise_cos_sim)
    if config.loss == "kldiv":
        return losses.DistillKLDivLoss(
            model,
            similarity_fct=partial(scaled_pairwise_cos_sim, scale=1.0 / config.temperature),
            temperature=1.0,
            teacher_temperature=kldiv_teacher_temperature(config, teacher_scores)[0],
        )
    return PartialRankingDistillLoss(model, temperature=config.temperature, rank_weight=config.rank_weight)


def _dataset(pairs: ScoredPairs):
    from datasets import Dataset

    return Dataset.from_dict({"sentence1": pairs.text_a, "sentence2": pairs.text_b, "score": pairs.scores})


def _arguments(args_cls, out: Path, config: TrainConfig, rows: int, **extra: Any):
    options = training_arguments(out, config, int(np.ceil(rows * config.epochs)))
    options.pop("train_sampling_strategy")  # sentence-transformers batches with its own seeded sampler
    options |= {"num_train_epochs": config.epochs, "batch_sampler": batch_sampler(config)}
    return args_cls(**(options | extra))


def batch_sampler(config: TrainConfig) -> str:
    """sentence-transformers' batch sampler for `config.loss`: `no_duplicates` (`BatchSamplers.NO_DUPLICATES`:
    no text twice in a batch) for losses with in-batch negatives, where a repeated text (a query's second
    positive, a passage that is one row's negative and another's positive) would be a false negative; else
    the default `batch_sampler`."""
    return "no_duplicates" if config.loss in IN_BATCH_NEGATIVE_LOSSES else "batch_sampler"


def _meta(kind: str, config: TrainConfig, pairs, loss: Any) -> dict[str, Any]:
    extra = {}
    if config.loss in LISTWISE_LOSSES:  # QueryGroups: what was left out, and the loss's settings
        extra = {"query_groups": pairs.counts, "negatives": config.negatives}
        extra["positive_field"] = config.positive_field
        extra["loss_config"] = loss.get_config_dict() if hasattr(loss, "get_config_dict") else None
        extra["batch_sampler"] = batch_sampler(config)
        if config.loss == "kldiv":
            extra["warnings"] = [w for w in [kldiv_teacher_temperature(config, pairs.scores)[1]] if w]
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
        **extra,
    }


def _train(kind: str, model, trainer, labeled: str | Path, out: Path, config: TrainConfig, pairs, resume):
    from llmst.pairs.evaluate import evaluate_pairs

    def evaluate(folder: Path) -> dict[str, Any]:
        if config.loss in LISTWISE_LOSSES:  # a retrieval student is scored as one: MAP, MRR@10, nDCG@10
            from llmst.pairs.evaluate import evaluate_retrieval

            return evaluate_retrieval(
                folder, config.eval, kind=kind, fields=config.text_fields, gold_field=config.eval_gold_field
            )
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
        # Under DDP the Trainer's default find_unused_parameters=True fails on a CrossEncoder ("classifier.bias
        # marked as ready twice": DDP does not see the logits the loss uses in the model's output and marks the
        # head unused before its gradient arrives); every parameter of a cross-encoder is used, so turn it off.
        args=_arguments(
            CrossEncoderTrainingArguments, out, config, len(pairs), ddp_find_unused_parameters=False
        ),
        train_dataset=_dataset(pairs),
        loss=loss,
    )
    return _train("cross-encoder", model, trainer, labeled, out, config, pairs, resume)


@register_student_kind("bi-encoder")
def train_bi_encoder(labeled: str | Path, out: Path, config: TrainConfig) -> TrainSummary:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer import losses

    if config.loss in LISTWISE_LOSSES:
        pairs = _load_groups(labeled, config)
        dataset = Dataset.from_dict(pairs.columns())
    else:
        pairs = _load(labeled, config)
        dataset = _dataset(pairs)
    resume = claim_output(labeled, out, config)
    model = SentenceTransformer(resolve_model(config.student).path)
    model.max_seq_length = config.max_length
    if config.loss in LISTWISE_LOSSES:
        loss = retrieval_loss(model, config, pairs.scores)
    else:
        loss = {"cosent": losses.CoSENTLoss, "angle": losses.AnglELoss, "mse": losses.CosineSimilarityLoss}[
            config.loss
        ](model)
    trainer = SentenceTransformerTrainer(
        model=model,
        args=_arguments(SentenceTransformerTrainingArguments, out, config, len(pairs)),
        train_dataset=dataset,
        loss=loss,
    )
    return _train("bi-encoder", model, trainer, labeled, out, config, pairs, resume)
