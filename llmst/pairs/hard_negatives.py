"""`llmst pairs sample --method hard-negatives`: for each (query, positive) pair, the passages a bi-encoder ranks
highest for the query that are not its positives (`sentence_transformers.util.mine_hard_negatives`), written as
ordinary pair records so `llmst pairs score` can score them with a teacher and `llmst train --loss marginmse |
kldiv | cprd` can learn from the groups they form (`llmst.pairs.groups`).

The positives are INPUT's pairs (all, or those whose `--positive-field` is true or > 0); the corpus of candidate
negatives is every side-b passage of INPUT (so a question's own wrong answers compete) plus `--corpus FILE`.
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
from llmst.pairs.sample import PairKey, normalize, pair_id, pair_key
from llmst.readers import Reject, read_records


def _marker(value: Any) -> bool | None:
    from llmst.pairs.groups import _positive

    return _positive(value)


def _read(
    source: str | Path, config: SampleConfig
) -> tuple[list[tuple[str, str]], list[str], list[dict[str, Any]], int]:
    """INPUT's positive pairs, every passage (INPUT side b, then --corpus) deduplicated, rejects, rows read."""
    query_field, passage_field = config.text_fields
    positives, passages, seen, rejects, rows = [], [], set(), [], 0

    def add(passage: str) -> None:
        if normalize(passage) not in seen:
            seen.add(normalize(passage))
            passages.append(passage)

    for item in read_records(source):
        if config.limit is not None and rows == config.limit:
            break
        rows += 1
        if isinstance(item, Reject):
            rejects.append(item.to_json())
            continue
        query, passage = item.record.get(query_field), item.record.get(passage_field)
        if any(not isinstance(t, str) or not t.strip() for t in (query, passage)):
            rejects.append({"line": item.line, "reason": f"no text in field(s) {config.text_fields}"})
            continue
        is_positive = True
        if config.positive_field:
            is_positive = _marker(item.record.get(config.positive_field))
            if is_positive is None:
                value = item.record.get(config.positive_field)
                rejects.append(
                    {
                        "line": item.line,
                        "reason": f"{config.positive_field} {value!r} is not true/false or a number",
                    }
                )
                continue
        add(passage)
        if is_positive:
            positives.append((query, passage))
    for item in read_records(config.corpus) if config.corpus else []:
        text = None if isinstance(item, Reject) else item.record.get(passage_field, item.record.get("text"))
        if not isinstance(text, str) or not text.strip():
            rejects.append({"file": config.corpus, "line": item.line, "reason": "no passage text"})
            continue
        add(text)
    return positives, passages, rejects, rows


def mine(
    source: str | Path,
    config: SampleConfig,
    excluded_pairs: set[PairKey],
    excluded_sentences: set[str],
) -> tuple[list[dict[str, Any]], Counter[str], list[dict[str, Any]], dict[str, Any]]:
    """Pair records (each query's positives, then its mined negatives), drop counts, rejects, report extras."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from llmst.models import resolve_model

    positives, passages, rejects, rows = _read(source, config)
    dropped: Counter[str] = Counter()
    kept, seen = [], set()
    for query, passage in positives:
        key = pair_key(query, passage)
        reason = None
        if key in seen:
            reason = "duplicate"
        elif key in excluded_pairs:
            reason = "excluded_pair"
        elif config.exclude_sentences and (key[0] in excluded_sentences or key[1] in excluded_sentences):
            reason = "excluded_sentence"
        if reason:
            dropped[reason] += 1
            continue
        seen.add(key)
        kept.append((query, passage))
    if not kept:
        raise ConfigError(
            f"pairs sample --method hard-negatives: {source} holds no usable positive pair",
            hint=f"fields {config.text_fields}; --positive-field {config.positive_field}; see the rejects",
        )
    encoder = SentenceTransformer(resolve_model(config.encoder).path)
    # a few more than asked: some mined candidates may be dropped by the leak guard below
    asked = min(2 * config.top_k, max(1, len(passages) - 1))
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
            if rank == config.top_k:
                break
            key = pair_key(query, passage)
            if normalize(passage) in own or key[0] == key[1]:
                dropped["positive_or_query"] += 1  # the query's positive, or the query, in another spelling
                continue
            reason = None
            if key in seen:
                reason = "duplicate"
            elif key in excluded_pairs:
                reason = "excluded_pair"
            elif config.exclude_sentences and (key[0] in excluded_sentences or key[1] in excluded_sentences):
                reason = "excluded_sentence"
            if reason:
                dropped[reason] += 1
                continue
            seen.add(key)
            rank += 1
            records.append(_record(query, passage, rank, score, False))
    per_query = Counter(normalize(r["text_a"]) for r in records if not r["positive"])
    extras = {
        "rows": rows,
        "positives": len(kept),
        "negatives": sum(per_query.values()),
        "corpus": len(passages),
        "queries_short_of_negatives": sum(1 for q in by_query if per_query[q] < config.top_k),
    }
    return records, dropped, rejects, extras


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
