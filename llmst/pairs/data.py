"""Reading pair records for training and evaluation: two texts and a numeric target per row, strictly.

A model trained or scored on a pair file must not silently lose rows, so a row that cannot be read (bad JSON,
a missing or empty text, a target that is not a number) is an error naming its line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmst.errors import ConfigError
from llmst.readers import Reject, read_records
from llmst.records import record_id


@dataclass
class ScoredPairs:
    """Rows of a pair file: ids, both texts and the target of each pair."""

    ids: list[str]
    text_a: list[str]
    text_b: list[str]
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def read_scored_pairs(
    path: str | Path,
    fields: Sequence[str] = ("text_a", "text_b"),
    score_field: str = "score",
    limit: int | None = None,
) -> ScoredPairs:
    """The pairs of `path` with their `score_field` targets; any unreadable row is a ConfigError."""
    ids, text_a, text_b, scores = [], [], [], []
    first, second = fields
    for item in read_records(path):
        if limit is not None and len(ids) == limit:
            break
        if isinstance(item, Reject):
            raise ConfigError(f"{path}, line {item.line}: {item.reason}")
        record = item.record
        texts = [record.get(first), record.get(second)]
        if any(not isinstance(t, str) or not t.strip() for t in texts):
            raise ConfigError(
                f"{path}, line {item.line}: no text in field(s) {list(fields)}",
                hint="every pair needs both texts (text_a, text_b by default; see --text-field)",
            )
        score = _number(record.get(score_field))
        if score is None:
            raise ConfigError(
                f"{path}, line {item.line}: {score_field} {record.get(score_field)!r} is not a number",
                hint="score the pairs first (llmst pairs score), or name the target field (--score-field)",
            )
        ids.append(record_id(record, "\n".join(texts)))  # as every teacher and `llmst label` name the row
        text_a.append(texts[0])
        text_b.append(texts[1])
        scores.append(score)
    if not ids:
        raise ConfigError(f"{path} holds no pairs")
    return ScoredPairs(ids, text_a, text_b, np.asarray(scores, dtype=float))
