"""Few-shot demonstrations: load a small labeled file and choose K examples per query.

- random: one fixed, label-stratified sample for the whole corpus (so the few-shot block is a shared prefix
  that backends can encode once).
- knn: the K pool rows nearest to each query by MiniLM embeddings (Liu et al., 2022, "What Makes Good
  In-Context Examples for GPT-3?"), most similar last; never a pool row with the query's own text (case and
  whitespace aside), which would show the query its own gold label.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from llmst.errors import ConfigError
from llmst.label.task import Task
from llmst.readers import Reject, read_records
from llmst.records import record_text


@dataclass
class Example:
    record: dict[str, Any]
    text: str
    label: str


def load_examples(path: str | Path, task: Task, label_field: str = "label") -> list[Example]:
    """Rows of a few-shot file; the label may be a label name or an integer index into the task's labels."""
    names = task.label_names
    examples = []
    for item in read_records(path):
        if isinstance(item, Reject):
            raise ConfigError(f"few-shot file {path}, line {item.line}: {item.reason}")
        record = item.record
        text = record_text(record, task.text_fields)
        raw = record.get(label_field)
        if text is None or raw is None:
            raise ConfigError(
                f"few-shot file {path}, line {item.line}: needs fields {task.text_fields} and '{label_field}'"
            )
        label = str(raw)
        if label not in names:
            if label.lstrip("-").isdigit() and 0 <= int(label) < len(names):
                label = names[int(label)]
            else:
                raise ConfigError(
                    f"few-shot file {path}, line {item.line}: label '{raw}' is not one of {names}"
                )
        examples.append(Example(record, text, label))
    if not examples:
        raise ConfigError(f"few-shot file {path} has no rows")
    return examples


def _normalized(text: str) -> str:
    """Text compared for identity: case and whitespace do not count."""
    return " ".join(text.split()).casefold()


def stratified_sample(examples: list[Example], k: int, seed: int) -> list[Example]:
    """K examples, labels as balanced as the pool allows, in a seeded shuffled order."""
    rng = random.Random(seed)
    by_label: dict[str, list[Example]] = {}
    for example in examples:
        by_label.setdefault(example.label, []).append(example)
    for pool in by_label.values():
        rng.shuffle(pool)
    chosen: list[Example] = []
    while len(chosen) < min(k, len(examples)):
        for pool in by_label.values():
            if pool and len(chosen) < k:
                chosen.append(pool.pop())
    rng.shuffle(chosen)
    return chosen


def _block(task: Task, chosen: list[Example]) -> str:
    sep = task.example_separator
    return "".join(task.render_example(e.record, e.text, e.label) + sep for e in chosen)


def describe_selection(examples: list[Example], task: Task, *, shots: int, select: str, seed: int = 0) -> str:
    """Identity of the demonstrations a selector would use (goes into the prompt hash); no model needed."""
    if select == "random":
        return "random:" + _block(task, stratified_sample(examples, shots, seed))
    return f"knn:{min(shots, len(examples))}:" + "|".join(f"{e.label}:{e.text}" for e in examples)


class FewShotSelector:
    """Builds the few-shot block placed before each query prompt."""

    def __init__(
        self,
        examples: list[Example],
        task: Task,
        *,
        shots: int = 4,
        select: Literal["random", "knn"] = "random",
        seed: int = 0,
        embedder: str = "minilm-l6",
    ):
        if shots < 1:
            raise ConfigError("--shots must be >= 1")
        self.task = task
        self.select = select
        self.shots = min(shots, len(examples))
        self.examples = examples
        self._description = describe_selection(examples, task, shots=shots, select=select, seed=seed)
        if select == "random":
            self.fixed = stratified_sample(examples, shots, seed)
        elif select == "knn":
            from sentence_transformers import SentenceTransformer

            from llmst.models import resolve_model

            self._encoder = SentenceTransformer(resolve_model(embedder).path, device="cpu")
            self._pool = self._embed([e.text for e in examples])
            self._normalized = [_normalized(e.text) for e in examples]
        else:
            raise ConfigError(f"unknown few-shot selection '{select}'", hint="use random or knn")

    def _embed(self, texts: list[str]) -> np.ndarray:
        return self._encoder.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)

    def _block(self, chosen: list[Example]) -> str:
        return _block(self.task, chosen)

    def blocks(self, texts: list[str]) -> list[str]:
        """The few-shot block (ending with the separator) for each query text."""
        if self.select == "random":
            block = self._block(self.fixed)
            return [block] * len(texts)
        sims = self._embed(texts) @ self._pool.T
        blocks = []
        for text, row in zip(texts, sims, strict=True):
            # never the query itself: a pool row with the same text would hand the query its own gold label
            own = _normalized(text)
            ranked = [i for i in np.argsort(-row) if self._normalized[i] != own]
            top = ranked[: self.shots][::-1]  # most similar closest to the query
            blocks.append(self._block([self.examples[i] for i in top]))
        return blocks

    def describe(self) -> str:
        """Identity of the demonstrations (goes into the prompt hash)."""
        return self._description
