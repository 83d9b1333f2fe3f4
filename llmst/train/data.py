"""Training rows from labeled records, and the batch plan that mixes in gold rows at a fixed share.

Not `records.read_labeled`: a student also trains on records that carry only a `label` (gold files, hand
labels) and on texts joined from several fields, which the probs-only reader of filter/aggregate refuses.
Both read rows through `records.iter_checked`, so a bad row is the same error everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmst.errors import ConfigError
from llmst.readers import iter_checked, position
from llmst.records import label_index, record_text


@dataclass
class TrainingRows:
    """Arrays for one set of rows. `targets` (N, K) are the training targets (soft or one-hot); for gold rows
    `pseudo` (N, K) holds the labeler's targets, which the doubly robust loss needs."""

    texts: list[str]
    targets: np.ndarray
    weights: np.ndarray
    pseudo: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.texts)


def label_names_of(path: str | Path, labels: list[str] | None) -> list[str]:
    """Label names: given, else the keys of the first record's `probs`."""
    if labels:
        return list(labels)
    for _line, record in iter_checked(path):
        probs = record.get("probs")
        if isinstance(probs, dict) and len(probs) >= 2:
            return list(probs)
        break
    raise ConfigError(
        f"cannot tell the label set of {path}: its first record has no probs",
        hint="pass --labels a,b,c",
    )


def _probs_vector(record: dict, names: list[str], where: str) -> np.ndarray | None:
    probs = record.get("probs")
    if probs is None:
        return None
    if not isinstance(probs, dict) or set(probs) != set(names):
        raise ConfigError(f"{where}: probs must have exactly the labels {names}")
    try:
        vector = np.array([float(probs[n]) for n in names], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: probs must be numbers") from error
    if not np.all(np.isfinite(vector)) or vector.min() < 0 or vector.sum() <= 0:
        raise ConfigError(f"{where}: probs are not a distribution")
    return vector / vector.sum()


def _text(record: dict, text_fields: list[str], where: str) -> str:
    """The record's text, or a ConfigError naming the first missing (or empty) text field."""
    for name in text_fields:
        value = record.get(name)
        if value is None or str(value).strip() == "":
            present = ", ".join(sorted(map(str, record))[:8]) or "none"
            raise ConfigError(
                f"{where}: no text in field '{name}' (fields present: {present})",
                hint="set --text-field to the field(s) holding the text",
            )
    return record_text(record, text_fields) or ""


def _one_hot(index: int, size: int) -> np.ndarray:
    vector = np.zeros(size)
    vector[index] = 1.0
    return vector


def load_pseudo_labeled(
    path: str | Path,
    names: list[str],
    *,
    text_fields: list[str],
    soft_labels: bool,
    weight_field: str | None,
    limit: int | None = None,
) -> TrainingRows:
    """Texts, targets and weights of a labeled file (records with `probs`, or at least `label`)."""
    texts, targets, weights = [], [], []
    for line, record in iter_checked(path):
        if limit is not None and len(texts) >= limit:
            break
        where = f"{path}, {position(path, line)}"
        text = _text(record, text_fields, where)
        probs = _probs_vector(record, names, where)
        if soft_labels:
            if probs is None:
                raise ConfigError(f"{where}: no field 'probs' (--soft-labels needs probs on every record)")
            target = probs
        else:
            index = label_index(record.get("label"), names)  # what the filter saw (aggregate: the vote)
            if index < 0 and probs is not None:
                index = int(np.argmax(probs))
            if index < 0:
                value = record.get("label")
                found = "no field 'label'" if value is None else f"field 'label' is {value!r}"
                raise ConfigError(
                    f"{where}: no field 'probs' and {found}, not one of {names}",
                    hint="train on the output of llmst label / filter / aggregate (or pass --labels)",
                )
            target = _one_hot(index, len(names))
        weight = 1.0
        if weight_field:
            value = record.get(weight_field)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{where}: weight field '{weight_field}' must be a number >= 0")
            weight = float(value)
        texts.append(text)
        targets.append(target)
        weights.append(weight)
    if not texts:
        raise ConfigError(f"{path} has no rows to train on")
    return TrainingRows(texts, np.array(targets), np.array(weights))


def load_gold(
    path: str | Path, names: list[str], *, text_fields: list[str], gold_field: str, need_pseudo: bool
) -> TrainingRows:
    """Gold rows: one-hot gold targets, plus the labeler's probs when the loss needs them."""
    texts, targets, pseudo = [], [], []
    for line, record in iter_checked(path):
        where = f"{path}, {position(path, line)}"
        text = _text(record, text_fields, where)
        value = record.get(gold_field)
        index = label_index(value, names)
        if index < 0:
            found = f"no field '{gold_field}'" if value is None else f"field '{gold_field}' is {value!r}"
            raise ConfigError(
                f"{where}: {found}, not one of {names} (or their index)", hint="set --gold-field"
            )
        probs = _probs_vector(record, names, where)
        if need_pseudo and probs is None:
            raise ConfigError(
                f"{where}: the doubly robust loss needs the labeler's probs on gold rows too",
                hint="label the gold file with `llmst label` first (its gold field is kept)",
            )
        texts.append(text)
        targets.append(_one_hot(index, len(names)))
        pseudo.append(probs if probs is not None else np.full(len(names), 1.0 / len(names)))
    if not texts:
        raise ConfigError(f"gold file {path} has no rows")
    return TrainingRows(texts, np.array(targets), np.ones(len(texts)), np.array(pseudo))


def batch_plan(
    n_pseudo: int, n_gold: int, *, epochs: float, batch_size: int, gold_share: float, seed: int
) -> list[tuple[bool, int]]:
    """The training order: (is_gold, row index) items, grouped in consecutive batches of `batch_size`.

    Pseudo-labeled rows are shuffled each epoch; `round(gold_share * batch_size)` places of every batch
    (at least one when the share is > 0) are filled from the gold rows, cycled in shuffled order.
    """
    rng = np.random.default_rng(seed)
    n_gold_per_batch = max(1, round(gold_share * batch_size)) if gold_share > 0 and n_gold else 0
    if n_gold_per_batch >= batch_size:
        raise ConfigError("--gold-share leaves no room for pseudo-labeled rows in a batch")
    per_batch = batch_size - n_gold_per_batch
    total = int(round(epochs * n_pseudo))
    order: list[int] = []
    while len(order) < total:
        order.extend(rng.permutation(n_pseudo).tolist())
    order = order[:total]
    gold_order: list[int] = []
    plan: list[tuple[bool, int]] = []
    for start in range(0, len(order), per_batch):
        plan.extend((False, i) for i in order[start : start + per_batch])
        for _ in range(n_gold_per_batch):
            if not gold_order:
                gold_order = rng.permutation(n_gold).tolist()
            plan.append((True, gold_order.pop()))
    return plan
