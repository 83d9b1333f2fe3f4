"""Reading pair records for training and evaluation: two texts and a target per row (a number, or a relevance
marker), strictly.

A model trained or scored on a pair file must not silently lose rows, so a row that cannot be read (bad JSON,
a missing or empty text, a target that is not a number) is an error naming its line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from llmst import stage
from llmst.errors import ConfigError
from llmst.readers import Reject, read_records
from llmst.records import PendingOutputs, record_id


@dataclass
class ScoredPairs:
    """Rows of a pair file: ids, both texts and the target of each pair."""

    ids: list[str]
    text_a: list[str]
    text_b: list[str]
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def number(value: Any) -> float | None:
    """A finite number from a number or a numeric string; None otherwise (booleans too: true is no score)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        parsed = float(value)
    except ValueError:
        return None
    return parsed if math.isfinite(parsed) else None


def relevance(value: Any) -> bool | None:
    """Whether a relevance or positive marker says yes: a bool as is (`positive` of `llmst pairs sample
    --method hard-negatives`), a number (or numeric string) when > 0 (a gold label such as 1 / 0 or a 0-3
    grade); None when it is neither."""
    if isinstance(value, bool):
        return value
    parsed = number(value)
    return None if parsed is None else parsed > 0


RELEVANCE = "true/false or a number"  # what `relevance` reads, for error messages


class PairRow(NamedTuple):
    """One readable row of a pair file: its line, both texts, its parsed target and the whole record."""

    line: int
    text_a: str
    text_b: str
    target: Any
    record: dict[str, Any]


def read_pair_rows(
    path: str | Path,
    fields: Sequence[str],
    target_field: str,
    *,
    target: Callable[[Any], Any] = number,
    expected: str = "a number",
    limit: int | None = None,
) -> Iterator[PairRow]:
    """Each row of the pair file `path` as a `PairRow`, `target` parsing the row's
    `target_field` (`number` by default, `relevance` for relevance labels). A row that cannot be read (bad
    JSON, a missing or empty text, a target `target` returns None for) is a ConfigError naming its line, and
    so is a file without rows."""
    first, second = fields
    rows = 0
    for item in read_records(path):
        if limit is not None and rows == limit:
            break
        if isinstance(item, Reject):
            raise ConfigError(f"{path}, line {item.line}: {item.reason}")
        record = item.record
        texts = record.get(first), record.get(second)
        if any(not isinstance(t, str) or not t.strip() for t in texts):
            raise ConfigError(
                f"{path}, line {item.line}: no text in field(s) {list(fields)}",
                hint="every pair needs both texts (text_a, text_b by default; see --text-field)",
            )
        value = target(record.get(target_field))
        if value is None:
            raise ConfigError(
                f"{path}, line {item.line}: {target_field} {record.get(target_field)!r} is not {expected}",
                hint="score the pairs first (llmst pairs score), or name the field that holds the target "
                "(--score-field, --gold-field)",
            )
        rows += 1
        yield PairRow(item.line, texts[0], texts[1], value, record)
    if not rows:
        raise ConfigError(f"{path} holds no pairs")


def read_scored_pairs(
    path: str | Path,
    fields: Sequence[str] = ("text_a", "text_b"),
    score_field: str = "score",
    limit: int | None = None,
) -> ScoredPairs:
    """The pairs of `path` with their `score_field` targets; any unreadable row is a ConfigError."""
    ids, text_a, text_b, scores = [], [], [], []
    for row in read_pair_rows(path, fields, score_field, limit=limit):
        ids.append(record_id(row.record, f"{row.text_a}\n{row.text_b}"))  # as teachers and `llmst label` do
        text_a.append(row.text_a)
        text_b.append(row.text_b)
        scores.append(row.target)
    return ScoredPairs(ids, text_a, text_b, np.asarray(scores, dtype=float))


def write_pair_outputs(
    out: Path,
    records: list[dict[str, Any]],
    rejects: list[dict[str, Any]],
    report: dict[str, Any],
    signature: str,
    stage_name: str,
) -> None:
    """A pair stage's outputs: OUT, OUT.rejects.jsonl and OUT.report.json, committed together, then OUT's
    signature marker (written last: OUT counts as complete only with it)."""
    stage.clear_marker(out)
    with PendingOutputs() as pending:
        pending.write_jsonl(out, records)
        pending.write_jsonl(out.with_name(out.name + ".rejects.jsonl"), rejects)
        pending.write_json(out.with_name(out.name + ".report.json"), report)
        pending.commit()
    stage.write_marker(out, signature, stage=stage_name)
