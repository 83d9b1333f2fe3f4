"""`llmst pairs sample --method hard-negatives`: for each (query, positive) pair, the passages a bi-encoder ranks
highest for the query that are not its positives (`sentence_transformers.util.mine_hard_negatives`), written as
ordinary pair records so `llmst pairs score` can score them with a teacher and `llmst train --loss marginmse |
kldiv | cprd` can learn from the groups they form (`llmst.pairs.groups`).

The positives are INPUT's pairs (all, or those whose `--positive-field` is true or > 0:
`llmst.pairs.data.relevance`); a row whose marker is false only adds its passage to the candidates (it is not
written, and the report counts it as `non_positive_rows`). The corpus of candidate negatives is every side-b
passage of INPUT (so a question's own wrong answers compete) plus `--corpus FILE`.
The leak guard of `pairs sample` holds: a pair of an `--exclude` file (either order) never comes out, as a
positive or as a mined negative, nor with `--exclude-sentences` any pair with one of its sentences. A mined
negative is never one of the query's positives or the query itself, in any spelling: passages are deduplicated
after collapsing whitespace and case (first spelling kept), and a candidate equal to the query or a positive in
that form is dropped. Every drop is counted.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from llmst.errors import ConfigError
from llmst.pairs.config import SampleConfig
from llmst.pairs.data import RELEVANCE, relevance
from llmst.pairs.sample import LeakGuard, PairKey, normalize, pair_id, pair_key
from llmst.readers import Reject, read_records


def _read(
    source: str | Path, config: SampleConfig
) -> tuple[list[tuple[str, str]], list[str], list[dict[str, Any]], Counter[str]]:
    """INPUT's positive pairs, every passage (INPUT side b, then --corpus) deduplicated, rejects, and the
    counts of rows read and of rows whose --positive-field is false."""
    query_field, passage_field = config.text_fields
    positives, passages, seen, rejects, counts = [], [], set(), [], Counter()

    def add(passage: str) -> None:
        if normalize(passage) not in seen:
            seen.add(normalize(passage))
            passages.append(passage)

    for item in read_records(source):
        if config.limit is not None and counts["rows"] == config.limit:
            break
        counts["rows"] += 1
        if isinstance(item, Reject):
            rejects.append(item.to_json())
            continue
        query, passage = item.record.get(query_field), item.record.get(passage_field)
        if any(not isinstance(t, str) or not t.strip() for t in (query, passage)):
            rejects.append({"line": item.line, "reason": f"no text in field(s) {config.text_fields}"})
            continue
        is_positive = True
        if config.positive_field:
            is_positive = relevance(item.record.get(config.positive_field))
            if is_positive is None:
                value = item.record.get(config.positive_field)
                rejects.append(
                    {"line": item.line, "reason": f"{config.positive_field} {value!r} is not {RELEVANCE}"}
                )
                continue
        add(passage)
        if is_positive:
            positives.append((query, passage))
        else:  # a candidate passage only: neither written nor a query of its own
            counts["non_positive_rows"] += 1
    for item in read_records(config.corpus) if config.corpus else []:
        text = None if isinstance(item, Reject) else item.record.get(passage_field, item.record.get("text"))
        if not isinstance(text, str) or not text.strip():
            rejects.append({"file": config.corpus, "line": item.line, "reason": "no passage text"})
            continue
        add(text)
    return positives, passages, rejects, counts


def mine(
    source: str | Path, config: SampleConfig, guard: LeakGuard
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Pair records (each query's positives, then its mined negatives), rejects, and the report's method and
    counts; `guard` drops (and counts) what the leak guard forbids."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from llmst.models import resolve_model

    positives, passages, rejects, counts = _read(source, config)
    kept = [(query, passage) for query, passage in positives if guard.admit(pair_key(query, passage))]
    if not kept:
        raise ConfigError(
            f"pairs sample --method hard-negatives: {source} holds no usable positive pair",
            hint=f"fields {config.text_fields}; --positive-field {config.positive_field}; see the rejects",
        )
    encoder = SentenceTransformer(resolve_model(config.encoder).path)
    # a few more than asked: some mined candidates may be dropped by the leak guard below
    asked = min(2 * config.negatives, max(1, len(passages) - 1))
    with contextlib.redirect_stdout(sys.stderr):  # the library prints statistics; stdout holds our report
        mined = mine_hard_negatives(
            Dataset.from_dict({"query": [q for q, _ in kept], "positive": [p for _, p in kept]}),
            encoder,
            corpus=passages,
            num_negatives=asked,
            sampling_strategy="top",
            output_format="labeled-list",
            output_scores=True,
            batch_size=config.batch_size,
            verbose=config.progress,
        )
    candidates: dict[str, list[tuple[str, float]]] = {}
    positive_scores: dict[PairKey, float] = {}
    for row in mined:
        documents, scores = row["positive"], row["scores"]
        positive_scores[pair_key(row["query"], documents[0])] = scores[0]
        candidates.setdefault(normalize(row["query"]), list(zip(documents[1:], scores[1:], strict=True)))
    by_query: dict[str, list[tuple[str, str]]] = {}
    for query, passage in kept:
        by_query.setdefault(normalize(query), []).append((query, passage))
    records = []
    for pairs in by_query.values():
        query = pairs[0][0]
        own = {normalize(p) for _, p in pairs}
        for _, passage in pairs:
            records.append(_record(query, passage, 0, positive_scores.get(pair_key(query, passage)), True))
        rank = 0
        for passage, score in candidates.get(normalize(query), []):
            if rank == config.negatives:
                break
            key = pair_key(query, passage)
            if normalize(passage) in own or key[0] == key[1]:
                guard.dropped["positive_or_query"] += 1  # the query's positive, or the query, respelled
                continue
            if not guard.admit(key):
                continue
            rank += 1
            records.append(_record(query, passage, rank, score, False))
    per_query = Counter(normalize(r["text_a"]) for r in records if not r["positive"])
    extras = {
        "method": config.method,
        "rows": counts["rows"],
        "non_positive_rows": counts["non_positive_rows"],
        "positives": len(kept),
        "negatives": sum(per_query.values()),
        "corpus": len(passages),
        "queries_short_of_negatives": sum(1 for q in by_query if per_query[q] < config.negatives),
    }
    return records, rejects, extras


def _record(query: str, passage: str, rank: int, score: float | None, positive: bool) -> dict[str, Any]:
    return {
        "id": pair_id(query, passage),
        "text_a": query,
        "text_b": passage,
        "positive": positive,
        "sampler": "hard-negatives",
        "sampler_rank": rank,  # 0: the positive; 1..k: mined negatives, hardest first
        "sampler_score": None if score is None else round(float(score), 6),
    }
