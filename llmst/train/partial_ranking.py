"""Partial-ranking distillation for bi-encoders, in the spirit of CPRD (Chen et al., CVPR 2024, "How to Make
Cross Encoder a Good Teacher for Efficient Image-Text Retrieval?").

Their observation: a cross-encoder's scores are distributed unlike a bi-encoder's, so matching them (MSE,
MarginMSE, KL over all candidates) transfers the wrong thing; what does transfer is the teacher's *relative
order among hard negatives*. So the student learns (1) the usual contrastive loss for the positive and (2) only
that order, contrastively: each hard negative is a "positive" against the negatives the teacher ranked below it.

This implementation is ours: the paper has no public code, and it is for image-text retrieval, so the details
(one temperature for both terms, in-batch passages in the contrastive term but not copies of the row's
positives, ties in the teacher's order left out, a mean over all ranking terms) are our choices, not a port.
Written like sentence-transformers' losses: `forward` embeds the columns, `compute_loss_from_embeddings` is
testable on fixed embeddings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def same_passages(features: list[dict[str, Tensor]]) -> Tensor | None:
    """Which in-batch passages are no negatives for a row: booleans of shape (batch, batch * (1 + n)) over the
    tokenized columns (query, positive, negative_1..n), true where a passage has the same tokens as a positive
    of the row's query (its own positive repeated in another row, or another positive of the same query),
    except the row's own positive. None when a column carries no (batch, length) `input_ids`.

    `BatchSamplers.NO_DUPLICATES` keeps exact repeats of a text out of one batch; this also catches a passage
    in another spelling that the tokenizer reads alike (e.g. re-cased for an uncased model), and covers a
    batch that no such sampler built."""
    keys = [_token_keys(column) for column in features]
    if any(column is None for column in keys):
        return None
    queries, positives = keys[0], keys[1]
    relevant: dict[tuple[int, ...], set[tuple[int, ...]]] = {}
    for query, positive in zip(queries, positives, strict=True):
        relevant.setdefault(query, set()).add(positive)
    candidates = [passage for column in keys[1:] for passage in column]
    same = torch.tensor([[c in relevant[q] for c in candidates] for q in queries], dtype=torch.bool)
    rows = torch.arange(len(queries))
    same[rows, rows] = False
    return same


def _token_keys(column: dict[str, Tensor]) -> list[tuple[int, ...]] | None:
    ids = column.get("input_ids")
    if not isinstance(ids, Tensor) or ids.ndim != 2:
        return None
    mask = column.get("attention_mask")
    rows = ids.tolist()
    if mask is None:
        return [tuple(row) for row in rows]
    return [
        tuple(t for t, m in zip(row, keep, strict=True) if m)
        for row, keep in zip(rows, mask.tolist(), strict=True)
    ]


class PartialRankingDistillLoss(nn.Module):
    """Contrastive loss for the positive plus the teacher's order among the hard negatives.

    Scores are cosines divided by `temperature`. With query q_i, positive p_i and negatives n_i1..n_iN:

    - contrastive: -log softmax over every passage of the batch (all positives and negatives) at p_i
      (MultipleNegativesRankingLoss with hard negatives), leaving out in-batch copies of q_i's positives, which
      are no negatives (`same_passages`; train with `BatchSamplers.NO_DUPLICATES`, as llmst does);
    - ranking: for each negative n_ik that the teacher scores above at least one other negative of q_i,
      -log( exp(s_ik) / (exp(s_ik) + sum over n_im the teacher scores below n_ik of exp(s_im)) ), averaged over
      all such terms of the batch. Only the order of the teacher's scores matters (not their scale), and the
      positive's teacher score is not used at all.

    loss = contrastive + rank_weight * ranking.

    Args:
        model: the SentenceTransformer student.
        temperature: the scores are cosine / temperature (0.05: a scale of 20, as MNRL's default).
        rank_weight: weight of the ranking term.

    References:
        Chen et al., "How to Make Cross Encoder a Good Teacher for Efficient Image-Text Retrieval?", CVPR 2024
        (Contrastive Partial Ranking Distillation).

    Inputs:
        (query, positive, negative_1, ..., negative_n) columns; labels: the teacher's scores of shape
        (batch, 1 + n), the positive's first (`llmst.pairs.groups.QueryGroups.columns`).

    Example:
        loss = PartialRankingDistillLoss(model, temperature=0.05)
        SentenceTransformerTrainer(model=model, train_dataset=groups_dataset, loss=loss).train()
    """

    def __init__(self, model, temperature: float = 0.05, rank_weight: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0 or rank_weight < 0:
            raise ValueError("PartialRankingDistillLoss: temperature must be > 0 and rank_weight >= 0")
        self.model = model
        self.temperature = temperature
        self.rank_weight = rank_weight

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        features = list(sentence_features)
        same = same_passages(features)  # before embedding: token ids as the tokenizer wrote them
        return self.compute_loss_from_embeddings(embed_columns(self.model, features), labels, same)

    def compute_loss_from_embeddings(
        self, embeddings: list[Tensor], labels: Tensor, same: Tensor | None = None
    ) -> Tensor:
        """The loss of embedded columns (query, positive, negative_1..n), each (batch, D); `same`, optional
        (batch, batch * (1 + n)) booleans, marks in-batch passages left out of a row's contrastive term
        (`same_passages`)."""
        if len(embeddings) < 3:
            raise ValueError(
                "PartialRankingDistillLoss expects (query, positive, negative_1, ...) columns, "
                f"got {len(embeddings)} column(s)"
            )
        query, passages = embeddings[0], embeddings[1:]
        batch, width = query.shape[0], len(passages)
        if labels.shape != (batch, width):
            raise ValueError(
                f"PartialRankingDistillLoss expects teacher scores of shape (batch, 1 + negatives) = "
                f"({batch}, {width}), got {tuple(labels.shape)}"
            )
        return self.contrastive(query, passages, same) + self.rank_weight * self.ranking(
            query, passages[1:], labels[:, 1:]
        )

    def contrastive(self, query: Tensor, passages: list[Tensor], same: Tensor | None = None) -> Tensor:
        """-log softmax at each query's positive over all passages of the batch (positives first), without the
        passages `same` marks for that row (never its own positive)."""
        candidates = torch.cat(passages, dim=0)  # (batch * (1 + n), D): the positives are rows 0..batch-1
        scores = F.normalize(query, dim=-1) @ F.normalize(candidates, dim=-1).T / self.temperature
        target = torch.arange(query.shape[0], device=query.device)
        if same is not None:
            if same.shape != scores.shape:
                raise ValueError(
                    f"PartialRankingDistillLoss: `same` must have shape {tuple(scores.shape)}, got "
                    f"{tuple(same.shape)}"
                )
            same = same.to(scores.device).clone()
            same[target, target] = False
            scores = scores.masked_fill(same, float("-inf"))
        return F.cross_entropy(scores, target)

    def ranking(self, query: Tensor, negatives: list[Tensor], teacher: Tensor) -> Tensor:
        """The mean over (query, negative k) of -log(exp(s_k) / (exp(s_k) + sum_{t_m < t_k} exp(s_m)))."""
        scores = (
            torch.stack([F.cosine_similarity(query, negative, dim=-1) for negative in negatives], dim=1)
            / self.temperature
        )  # (batch, n)
        teacher = teacher.detach()
        below = teacher.unsqueeze(2) > teacher.unsqueeze(1)  # below[b, k, m]: the teacher puts m below k
        terms = below.any(dim=2)  # negatives ranked above at least one other
        if not terms.any():
            return scores.sum() * 0.0
        others = scores.unsqueeze(1).expand(-1, scores.shape[1], -1).masked_fill(~below, float("-inf"))
        denominator = torch.logsumexp(torch.cat([scores.unsqueeze(2), others], dim=2), dim=2)
        return (denominator - scores)[terms].mean()

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "rank_weight": self.rank_weight}

    @property
    def citation(self) -> str:
        return """
@inproceedings{chen2024cprd,
    title={How to Make Cross Encoder a Good Teacher for Efficient Image-Text Retrieval?},
    author={Chen, Yuxin and others},
    booktitle={CVPR},
    year={2024}
}
"""
