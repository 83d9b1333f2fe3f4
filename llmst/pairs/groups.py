"""Query groups: the (query, positive, negatives) rows that listwise distillation losses train on, built from
ordinary pair records.

No new record type: pair records (`text_a, text_b, score`, as `llmst pairs score` writes them) that share a
`text_a` (compared after collapsing whitespace and case, as the leak guard compares texts) form one query's
group. Its positive is every pair whose `positive_field` is true or > 0 (e.g. `positive` from `llmst pairs
sample --method hard-negatives`, or a gold `label`), or, without a positive field, the pair the teacher scored
highest. Its negatives are the teacher's `negatives` highest-scored other pairs (the hardest ones). Each
positive gives one row: `query, positive, negative_1..N` and the teacher scores `[positive, negative_1..N]`,
the input `MarginMSELoss`, `DistillKLDivLoss` and `PartialRankingDistillLoss` take. Queries without a
positive or with fewer than `negatives` negatives are left out and counted.

A row that cannot be read (bad JSON, a missing text, a score that is not a number, a positive marker that is
not true/false or a number: `llmst.pairs.data.relevance`) is an error naming its line, as in `llmst.pairs.data`:
a training set must not silently lose rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmst.errors import ConfigError
from llmst.pairs.data import RELEVANCE, read_pair_rows, relevance
from llmst.pairs.sample import normalize


@dataclass
class QueryGroups:
    """One row per (query, positive): texts, `negatives` negatives each, and the teacher scores of shape
    (rows, 1 + negatives), the positive's first."""

    queries: list[str]
    positives: list[str]
    negatives: list[list[str]]
    scores: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.queries)

    def columns(self) -> dict[str, Any]:
        """The columns of a sentence-transformers training dataset (`label` holds the teacher scores)."""
        width = self.scores.shape[1] - 1
        data: dict[str, Any] = {"query": self.queries, "positive": self.positives}
        for j in range(width):
            data[f"negative_{j + 1}"] = [row[j] for row in self.negatives]
        data["label"] = self.scores.tolist()
        return data


def read_query_groups(
    path: str | Path,
    fields: Sequence[str] = ("text_a", "text_b"),
    score_field: str = "score",
    *,
    negatives: int = 3,
    positive_field: str | None = None,
    limit: int | None = None,
) -> QueryGroups:
    """The query groups of the pair file `path` (see the module docstring); a bad row is a ConfigError."""
    if negatives < 1:
        raise ConfigError("negatives must be >= 1")
    groups: dict[str, tuple[str, list[tuple[str, float, bool]]]] = {}
    seen: set[tuple[str, str]] = set()
    counts: Counter[str] = Counter()
    rows = 0
    for row in read_pair_rows(path, fields, score_field, limit=limit):
        rows += 1
        query, passage, score, record = row.text_a, row.text_b, row.target, row.record
        is_positive = False
        if positive_field is not None:
            marker = relevance(record.get(positive_field))
            if marker is None:
                raise ConfigError(
                    f"{path}, line {row.line}: {positive_field} {record.get(positive_field)!r} is not "
                    f"{RELEVANCE}",
                    hint="mark positives with true or 1 (or leave out --positive-field: the teacher-best pair)",
                )
            is_positive = marker
        key = (normalize(query), normalize(passage))
        if key in seen:
            counts["duplicate_pairs"] += 1
            continue
        seen.add(key)
        groups.setdefault(key[0], (query, []))[1].append((passage, score, is_positive))
    out_queries, out_positives, out_negatives, out_scores = [], [], [], []
    for query, pairs in groups.values():
        if positive_field is None:
            best = max(range(len(pairs)), key=lambda i: pairs[i][1])  # the first of tied best
            pairs = [(p, s, i == best) for i, (p, s, _) in enumerate(pairs)]
        positives = [(p, s) for p, s, is_pos in pairs if is_pos]
        others = sorted(((p, s) for p, s, is_pos in pairs if not is_pos), key=lambda x: -x[1])
        if not positives:
            counts["queries_without_positive"] += 1
            continue
        if len(others) < negatives:
            counts["queries_with_too_few_negatives"] += 1
            continue
        hardest = others[:negatives]
        for passage, score in positives:
            out_queries.append(query)
            out_positives.append(passage)
            out_negatives.append([p for p, _ in hardest])
            out_scores.append([score, *(s for _, s in hardest)])
    counts["pairs"] = rows
    counts["queries"] = len(groups)
    counts["rows"] = len(out_queries)
    if not out_queries:
        raise ConfigError(
            f"{path}: no query has a positive and {negatives} negatives "
            f"({counts['queries']} queries, {dict(counts)})",
            hint="lower --negatives, mine more with llmst pairs sample --method hard-negatives, or check "
            "--positive-field",
        )
    return QueryGroups(
        out_queries, out_positives, out_negatives, np.asarray(out_scores, dtype=float), dict(counts)
    )
