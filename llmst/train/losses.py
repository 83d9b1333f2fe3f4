"""Student losses on classifier logits: soft-label cross-entropy and the doubly robust self-training loss.

Each loss has a `compute_loss_from_logits` (testable without a model), and `get_config_dict` and `citation`
(both written to the model card), like sentence-transformers' losses.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def _check(logits: torch.Tensor, targets: torch.Tensor, owner: str) -> None:
    if logits.ndim != 2 or targets.shape != logits.shape:
        raise ValueError(
            f"{owner}: logits and targets must both have shape (batch, labels); got "
            f"{tuple(logits.shape)} and {tuple(targets.shape)}"
        )


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of `values` (B,) weighted by `weights` (B,); 0 when the weights sum to 0 (an empty group)."""
    if weights is None:
        return values.mean() if values.numel() else values.sum()
    total = weights.sum()
    return (values * weights).sum() / total.clamp_min(1e-12)


class SoftCrossEntropyLoss:
    """Cross-entropy against a target distribution per row: -sum_k t_k log softmax(z)_k.

    Hard labels are one-hot targets; soft labels (the labeler's `probs`) keep its uncertainty. Optional per-row
    weights (e.g. the labeler's confidence) give a weighted mean over the batch.
    """

    citation: str | None = None

    def compute_loss_from_logits(
        self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check(logits, targets, type(self).__name__)
        per_row = -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1)
        return weighted_mean(per_row, weights)

    def get_config_dict(self) -> dict[str, Any]:
        return {"loss": "cross-entropy"}


class DoublyRobustLoss:
    """Doubly robust self-training loss (Zhu et al., NeurIPS 2023, arXiv:2306.00265).

    On a batch with pseudo-labeled rows P and gold rows G (gold rows carry both the pseudo target and the gold
    target):

        L = mean_{P u G} l(pseudo)  -  mean_G l(pseudo)  +  mean_G l(gold)

    With perfect pseudo-labels the last two terms cancel and L is cross-entropy on all rows; with useless
    pseudo-labels the first two terms cancel in expectation and L falls back to the gold rows alone.
    `weights` (optional) weight the pseudo terms only.
    """

    citation = (
        "@inproceedings{zhu2023doubly, title={Doubly Robust Self-Training}, author={Zhu, Banghua and Ding, "
        "Mingyu and Jacobson, Philip and Wu, Ming and Zhan, Wei and Jordan, Michael and Jiao, Jiantao}, "
        "booktitle={NeurIPS}, year={2023}}"
    )

    def compute_loss_from_logits(
        self,
        logits: torch.Tensor,
        pseudo_targets: torch.Tensor,
        gold_targets: torch.Tensor,
        is_gold: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        _check(logits, pseudo_targets, type(self).__name__)
        _check(logits, gold_targets, type(self).__name__)
        log_probs = F.log_softmax(logits.float(), dim=-1)
        pseudo = -(pseudo_targets * log_probs).sum(dim=-1)
        gold = -(gold_targets * log_probs).sum(dim=-1)
        mask = is_gold.to(log_probs.dtype)
        if mask.sum() == 0:
            raise ValueError("DoublyRobustLoss: a batch needs at least one gold row (set a gold share > 0)")
        return weighted_mean(pseudo, weights) - weighted_mean(pseudo, mask) + weighted_mean(gold, mask)

    def get_config_dict(self) -> dict[str, Any]:
        return {"loss": "doubly-robust"}


def ramped_weight(weight: float, warmup: float, progress: float) -> float:
    """`weight * min(1, progress / warmup)`: a linear ramp from 0 over the first `warmup` share of training.

    Burns et al.'s released code set the coefficient to `progress` during warm-up and then jumped to 1 (times
    the weight); this ramp is continuous at the end of warm-up. `warmup == 0` means the full weight at once.
    """
    if warmup <= 0:
        return weight
    return weight * min(1.0, max(0.0, progress) / warmup)


def harden(probs: torch.Tensor, weak_targets: torch.Tensor) -> torch.Tensor:
    """One-hot hardened predictions. Binary: thresholded so that the batch's share of class 1 matches the weak
    targets' mean share (Burns et al. 2023, so that confident self-training cannot collapse onto one class);
    more classes: the argmax."""
    size = probs.shape[-1]
    if size == 2:
        share = float(weak_targets[:, 1].mean())
        threshold = torch.quantile(probs[:, 0], min(max(share, 0.0), 1.0))
        first = probs[:, 0] >= threshold
        return torch.stack([first, ~first], dim=1).to(probs.dtype)
    return F.one_hot(probs.argmax(dim=-1), size).to(probs.dtype)


class LogConfidenceLoss:
    """The auxiliary confidence loss of weak-to-strong generalization (Burns et al. 2023, "logconf").

    Cross-entropy against `(1 - a) * weak + a * hardened(strong)`, where `hardened` is the student's own
    prediction made one-hot (`harden`, no gradient) and `a = weight * min(1, progress / warmup)` grows linearly
    over the first `warmup` share of the training steps. The strong student may so disagree with the weak
    labels where it is confident.
    """

    citation = (
        "@article{burns2023weak, title={Weak-to-Strong Generalization: Eliciting Strong Capabilities With Weak "
        "Supervision}, author={Burns, Collin and Izmailov, Pavel and Kirchner, Jan Hendrik and Baker, Bowen "
        "and Gao, Leo and Aschenbrenner, Leopold and Chen, Yining and Ecoffet, Adrien and Joglekar, Manas "
        "and Leike, Jan and Sutskever, Ilya and Wu, Jeff}, journal={arXiv:2312.09390}, year={2023}}"
    )

    def __init__(self, weight: float = 0.75, warmup: float = 0.2):
        self.weight, self.warmup = weight, warmup

    def targets(self, logits: torch.Tensor, weak_targets: torch.Tensor, progress: float) -> torch.Tensor:
        """The mixed target distribution at training `progress` (0 at the first step, 1 at the last)."""
        a = ramped_weight(self.weight, self.warmup, progress)
        hardened = harden(torch.softmax(logits.detach().float(), dim=-1), weak_targets)
        return (1.0 - a) * weak_targets + a * hardened

    def compute_loss_from_logits(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor | None = None,
        progress: float = 1.0,
    ) -> torch.Tensor:
        _check(logits, targets, type(self).__name__)
        mixed = self.targets(logits, targets.float(), progress)
        per_row = -(mixed * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1)
        return weighted_mean(per_row, weights)

    def get_config_dict(self) -> dict[str, Any]:
        return {"loss": "logconf", "weight": self.weight, "warmup": self.warmup}
