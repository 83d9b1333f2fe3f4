"""Label-issue detection with out-of-fold student probabilities (confident learning, Northcutt et al. 2021).

K students are each trained on K-1 folds of the pseudo-labeled rows and predict the held-out fold, so no row
is scored by a model that saw its label. cleanlab's `find_label_issues` then flags rows whose pseudo-label
disagrees with what the students learned from the rest of the data.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from llmst.errors import ConfigError
from llmst.readers import Reject, read_records
from llmst.records import record_text
from llmst.train.config import TrainConfig


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index (N,) with every label spread evenly over the folds."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(labels)
    if counts[counts > 0].min() < folds:
        raise ConfigError(
            f"every label needs at least {folds} rows for {folds}-fold out-of-fold scoring",
            hint="lower --folds",
        )
    fold_of = np.zeros(len(labels), dtype=int)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold_of[held_out] = fold
    return fold_of


def out_of_fold_probs(
    labeled: str | Path,
    labels: np.ndarray,
    config: TrainConfig,
    *,
    folds: int = 5,
    progress: bool = False,
) -> np.ndarray:
    """Student probabilities (N, K) for every row of `labeled`, each from a student that did not train on it."""
    from llmst.train.predict import load_student, predict_probs
    from llmst.train.run import train

    if folds < 2:
        raise ConfigError("--folds must be >= 2")
    records = []
    for item in read_records(labeled):
        if isinstance(item, Reject):
            raise ConfigError(f"{labeled}, line {item.line}: {item.reason}")
        records.append(item.record)
    if len(records) != len(labels):
        raise ConfigError(f"{labeled}: {len(records)} records but {len(labels)} labels")
    fields = config.text_fields or ["text"]
    texts = [record_text(r, fields) or "" for r in records]
    fold_of = stratified_folds(labels, folds, config.seed)
    probs: np.ndarray | None = None
    with tempfile.TemporaryDirectory(prefix="llmst-oof-") as tmp:
        for fold in range(folds):
            train_file = Path(tmp) / f"fold{fold}.jsonl"
            with open(train_file, "w", encoding="utf-8") as handle:
                for record, owner in zip(records, fold_of, strict=True):
                    if owner != fold:
                        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            model_dir = Path(tmp) / f"student{fold}"
            train(train_file, model_dir, replace(config, overwrite=True, eval=None, progress=progress))
            student, tokenizer, meta = load_student(model_dir)
            held_out = np.flatnonzero(fold_of == fold)
            fold_probs = predict_probs(
                student, tokenizer, [texts[i] for i in held_out], max_length=meta["max_length"]
            )
            if probs is None:
                probs = np.zeros((len(records), fold_probs.shape[1]))
            probs[held_out] = fold_probs
    assert probs is not None
    return probs


def find_label_issues(labels: np.ndarray, oof_probs: np.ndarray) -> np.ndarray:
    """Boolean mask (N,) of likely wrong labels (cleanlab, prune by noise rate)."""
    from cleanlab.filter import find_label_issues as cleanlab_find

    return cleanlab_find(labels=labels, pred_probs=oof_probs, filter_by="prune_by_noise_rate")
