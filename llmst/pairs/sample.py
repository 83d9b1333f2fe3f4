"""`llmst pairs sample`: candidate pairs from a sentence or query/passage corpus, with a leak guard.

Methods (Thakur et al. 2021, Augmented SBERT): `bm25` (lexical top-k by bm25s, no server), `semantic` (top-k by
cosine of a bi-encoder, `sentence_transformers.util.semantic_search`), `random` (k random partners), and
`recombine` (each side-a sentence with the side-b sentences ranked highest for it); and for retrieval
distillation `hard-negatives` (each query's positives plus its mined hard negatives, `llmst.pairs.hard_negatives`).
The leak guard drops every candidate that is a pair of an `--exclude` file in either order (and, with
`--exclude-sentences`, every pair with one of its sentences); the report counts each reason a candidate was dropped. Texts are compared after
whitespace collapsing and case folding, so a re-spaced or re-cased copy of an evaluation pair is caught too.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from llmst import stage
from llmst.errors import ConfigError
from llmst.pairs.config import SampleConfig, sample_signature
from llmst.readers import Reject, read_records
from llmst.records import PendingOutputs, check_output

PairKey = tuple[str, str]


def normalize(text: str) -> str:
    """The form texts are compared in: whitespace collapsed, case folded."""
    return " ".join(str(text).split()).casefold()


def pair_key(a: str, b: str) -> PairKey:
    """The same key for (a, b) and (b, a)."""
    x, y = normalize(a), normalize(b)
    return (x, y) if x <= y else (y, x)


def pair_id(a: str, b: str) -> str:
    """A stable id of an unordered pair of texts."""
    return hashlib.sha256("\x00".join(pair_key(a, b)).encode("utf-8")).hexdigest()[:16]


def _texts(record: dict[str, Any], fields: Sequence[str]) -> list[str] | None:
    values = [record.get(name) for name in fields]
    if any(not isinstance(v, str | int | float) or isinstance(v, bool) or not str(v).strip() for v in values):
        return None
    return [str(v) for v in values]


class Corpus:
    """The sentences of INPUT per side (deduplicated in normalized form, first spelling kept), its own pairs
    and its bad rows."""

    def __init__(self, source: str | Path, config: SampleConfig):
        self.sides: list[list[str]] = [[] for _ in config.text_fields]
        seen: list[set[str]] = [set() for _ in config.text_fields]
        self.pairs: set[PairKey] = set()
        self.rejects: list[dict[str, Any]] = []
        rows = read_records(source)
        if config.limit is not None:
            rows = islice(rows, config.limit)
        for item in rows:
            if isinstance(item, Reject):
                self.rejects.append(item.to_json())
                continue
            texts = _texts(item.record, config.text_fields)
            if texts is None:
                self.rejects.append(
                    {"line": item.line, "reason": f"no text in field(s) {config.text_fields}"}
                )
                continue
            for side, text in enumerate(texts):
                if normalize(text) not in seen[side]:
                    seen[side].add(normalize(text))
                    self.sides[side].append(text)
            if len(texts) == 2:
                self.pairs.add(pair_key(*texts))

    def pool(self) -> list[str]:
        """Every side's sentences as one list (a sentence on both sides once)."""
        seen, out = set(), []
        for text in (t for side in self.sides for t in side):
            if normalize(text) not in seen:
                seen.add(normalize(text))
                out.append(text)
        return out


def read_exclusions(paths: Sequence[str], fields: Sequence[str]) -> tuple[set[PairKey], set[str]]:
    """The pairs and sentences of evaluation files. A row whose pair cannot be read is an error: a leak guard
    that skipped rows would let them through."""
    names = list(fields) if len(fields) == 2 else ["text_a", "text_b"]
    pairs, sentences = set(), set()
    for path in paths:
        for item in read_records(path):
            if isinstance(item, Reject):
                raise ConfigError(f"--exclude {path}, line {item.line}: {item.reason}")
            texts = _texts(item.record, names) or _texts(item.record, ["text_a", "text_b"])
            if texts is None:
                raise ConfigError(
                    f"--exclude {path}, line {item.line}: no pair in fields {names}",
                    hint="an excluded file holds pairs in the same fields as INPUT, or text_a,text_b",
                )
            pairs.add(pair_key(*texts))
            sentences.update(normalize(t) for t in texts)
    return pairs, sentences


def _bm25(queries: list[str], corpus: list[str], k: int, progress: bool) -> Iterator[list[tuple[int, float]]]:
    import bm25s

    index = bm25s.BM25()
    index.index(bm25s.tokenize(corpus, stopwords="en", show_progress=progress), show_progress=progress)
    # queries as token strings, mapped through the index's own vocabulary
    tokens = bm25s.tokenize(queries, stopwords="en", return_ids=False, show_progress=False)
    found, scores = index.retrieve(tokens, k=min(k, len(corpus)), show_progress=progress)
    for row, row_scores in zip(found, scores, strict=True):
        # a zero score shares no term with the query: not a lexical neighbour at all
        yield [(int(j), float(s)) for j, s in zip(row, row_scores, strict=True) if s > 0]


def _semantic(
    queries: list[str], corpus: list[str], k: int, config: SampleConfig
) -> Iterator[list[tuple[int, float]]]:
    from sentence_transformers import SentenceTransformer, util

    from llmst.models import resolve_model

    encoder = SentenceTransformer(resolve_model(config.encoder).path)

    def embed(texts: list[str]):
        return encoder.encode(
            texts,
            batch_size=config.batch_size,
            normalize_embeddings=True,
            convert_to_tensor=True,
            show_progress_bar=config.progress,
        )

    corpus_embeddings = embed(corpus)
    query_embeddings = corpus_embeddings if queries is corpus else embed(queries)
    hits = util.semantic_search(query_embeddings, corpus_embeddings, top_k=min(k, len(corpus)))
    for row in hits:
        yield [(int(hit["corpus_id"]), float(hit["score"])) for hit in row]


def _random(n_queries: int, n_corpus: int, k: int, seed: int) -> Iterator[list[tuple[int, None]]]:
    rng = np.random.default_rng(seed)
    for _ in range(n_queries):
        chosen = rng.choice(n_corpus, size=min(k + 1, n_corpus), replace=False)
        yield [(int(j), None) for j in chosen]


def _candidates(corpus: Corpus, config: SampleConfig) -> tuple[list[str], list[str], Iterator, str]:
    """Queries, the sentences they are matched against, each query's ranked partners, and the sampler name."""
    if config.method == "recombine":
        queries, targets = corpus.sides[0], corpus.sides[1]
        ranker, k, name = config.rank_by, config.top_k, f"recombine-{config.rank_by}"
    else:
        queries = targets = corpus.pool()
        ranker, k, name = config.method, config.top_k + 1, config.method  # one more: a sentence finds itself
    if not queries or not targets:
        raise ConfigError(
            "pairs sample: INPUT holds no usable sentences", hint=f"fields {config.text_fields}"
        )
    if ranker == "bm25":
        ranked = _bm25(queries, targets, k, config.progress)
    elif ranker == "semantic":
        ranked = _semantic(queries, targets, k, config)
    else:
        ranked = _random(len(queries), len(targets), config.top_k, config.seed)
    return queries, targets, ranked, name


def sample_pairs(source: str | Path, out: str | Path, config: SampleConfig) -> dict[str, Any]:
    """Write candidate pairs of `source` to OUT (plus OUT.rejects.jsonl and OUT.report.json, atomically),
    then the signature marker; returns the report."""
    started = time.perf_counter()
    out = Path(out)
    check_output(out, [source, *(config.exclude or []), config.corpus])
    excluded_pairs, excluded_sentences = read_exclusions(config.exclude or [], config.text_fields)
    if config.method == "hard-negatives":
        from llmst.pairs.hard_negatives import mine

        records, dropped, rejects, extras = mine(source, config, excluded_pairs, excluded_sentences)
        report = {
            "input": str(source),
            "out": str(out),
            "method": config.method,
            **extras,
            "candidates": len(records) + sum(dropped.values()),
            "written": len(records),
            "dropped": {reason: dropped[reason] for reason in sorted(dropped)},
            "rejected": len(rejects),
            "excluded_pairs": len(excluded_pairs),
            "seconds": round(time.perf_counter() - started, 2),
        }
        _write(out, records, rejects, report, source, config)
        return report
    corpus = Corpus(source, config)
    queries, targets, ranked, sampler = _candidates(corpus, config)
    dropped: Counter[str] = Counter()
    records, seen = [], set()
    for query, partners in zip(queries, ranked, strict=True):
        kept = 0
        for index, score in partners:
            text = targets[index]
            key = pair_key(query, text)
            if key[0] == key[1]:
                continue  # the query itself (not a candidate, not counted)
            if kept == config.top_k:
                break
            kept += 1
            reason = None
            if key in seen:
                reason = "duplicate"
            elif config.new_only and key in corpus.pairs:
                reason = "already_in_input"
            elif key in excluded_pairs:
                reason = "excluded_pair"
            elif config.exclude_sentences and (key[0] in excluded_sentences or key[1] in excluded_sentences):
                reason = "excluded_sentence"
            if reason:
                dropped[reason] += 1
                continue
            seen.add(key)
            records.append(
                {
                    "id": pair_id(query, text),
                    "text_a": query,
                    "text_b": text,
                    "sampler": sampler,
                    "sampler_rank": kept,  # among the query's partners, the query itself not counted
                    "sampler_score": None if score is None else round(score, 6),
                }
            )
    report = {
        "input": str(source),
        "out": str(out),
        "method": sampler,
        "queries": len(queries),
        "sentences": [len(side) for side in corpus.sides],
        "candidates": len(records) + sum(dropped.values()),
        "written": len(records),
        "dropped": {reason: dropped[reason] for reason in sorted(dropped)},
        "rejected": len(corpus.rejects),
        "excluded_pairs": len(excluded_pairs),
        "seconds": round(time.perf_counter() - started, 2),
    }
    _write(out, records, corpus.rejects, report, source, config)
    return report


def _write(out: Path, records, rejects, report, source: str | Path, config: SampleConfig) -> None:
    stage.clear_marker(out)
    with PendingOutputs() as pending:
        pending.write_jsonl(out, records)
        pending.write_jsonl(out.with_name(out.name + ".rejects.jsonl"), rejects)
        pending.write_json(out.with_name(out.name + ".report.json"), report)
        pending.commit()
    stage.write_marker(out, sample_signature(source, config), stage="pairs-sample")
