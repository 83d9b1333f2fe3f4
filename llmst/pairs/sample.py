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

from llmst.errors import ConfigError
from llmst.pairs.config import SampleConfig, sample_signature
from llmst.pairs.data import write_pair_outputs
from llmst.readers import Reject, read_records
from llmst.records import check_output

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


class LeakGuard:
    """The leak guard over one run's candidate pairs (`pair_key` form): each pair comes out at most once, never
    a pair of an --exclude file nor, with `exclude_sentences`, a pair with one of its sentences, nor (when
    `input_pairs` is given) a pair INPUT already holds. `dropped` counts every drop by reason."""

    def __init__(
        self,
        excluded_pairs: set[PairKey],
        excluded_sentences: set[str],
        *,
        exclude_sentences: bool,
        input_pairs: set[PairKey] | None = None,
    ) -> None:
        self.excluded_pairs, self.excluded_sentences = excluded_pairs, excluded_sentences
        self.exclude_sentences, self.input_pairs = exclude_sentences, input_pairs
        self.seen: set[PairKey] = set()
        self.dropped: Counter[str] = Counter()

    def drop_reason(self, key: PairKey) -> str | None:
        """Why `key` is dropped: duplicate, already_in_input, excluded_pair or excluded_sentence; None to keep."""
        if key in self.seen:
            return "duplicate"
        if self.input_pairs is not None and key in self.input_pairs:
            return "already_in_input"
        if key in self.excluded_pairs:
            return "excluded_pair"
        if self.exclude_sentences and (
            key[0] in self.excluded_sentences or key[1] in self.excluded_sentences
        ):
            return "excluded_sentence"
        return None

    def admit(self, key: PairKey) -> bool:
        """True (and `key` is seen from now on) when the pair may come out; else its drop is counted."""
        reason = self.drop_reason(key)
        if reason:
            self.dropped[reason] += 1
            return False
        self.seen.add(key)
        return True


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
    guard = LeakGuard(excluded_pairs, excluded_sentences, exclude_sentences=config.exclude_sentences)
    if config.method == "hard-negatives":
        from llmst.pairs.hard_negatives import mine

        records, rejects, extras = mine(source, config, guard)
    else:
        records, rejects, extras = _neighbours(source, config, guard)
    report = {
        "input": str(source),
        "out": str(out),
        **extras,
        "candidates": len(records) + sum(guard.dropped.values()),
        "written": len(records),
        "dropped": {reason: guard.dropped[reason] for reason in sorted(guard.dropped)},
        "rejected": len(rejects),
        "excluded_pairs": len(excluded_pairs),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_pair_outputs(out, records, rejects, report, sample_signature(source, config), "pairs-sample")
    return report


def _neighbours(
    source: str | Path, config: SampleConfig, guard: LeakGuard
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Pair records of every method but hard-negatives, rejects, and the report's method and counts."""
    corpus = Corpus(source, config)
    queries, targets, ranked, sampler = _candidates(corpus, config)
    if config.new_only:
        guard.input_pairs = corpus.pairs
    records = []
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
            if not guard.admit(key):
                continue
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
    extras = {"method": sampler, "queries": len(queries), "sentences": [len(side) for side in corpus.sides]}
    return records, corpus.rejects, extras
