"""Cache-aware scoring of labeling prompts into per-label log-probs (`Scorer`), shared by every labeling engine."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from llmst.backends.base import Backend, ScoreRequest
from llmst.cache import AnswerCache, score_key
from llmst.label.task import Task

FROM_CACHE, REUSED, COMPUTED = "from_cache", "reused_from_prior_fit", "computed"


class Scorer:
    """Cache-aware scoring of prompts into per-label log-probs, counting where each answer came from.

    `cache=None` reads and writes no cache. While `remember` is set (the prior-fit pass), answers are also
    kept in memory with their origin, so the main pass reuses them without counting them as cache hits.
    """

    def __init__(self, backend: Backend, task: Task, cache: AnswerCache | None):
        self.backend = backend
        self.cache = cache
        self.candidates, self.owner = task.candidates()
        self.n_labels = len(task.labels)
        self.counts: Counter[str] = Counter()
        self.remember = False
        self._memory: dict[str, tuple[Any, str]] = {}

    def forget(self) -> None:
        self.remember = False
        self._memory.clear()

    def remembered(self) -> dict[str, tuple[Any, str]]:
        """The answers kept by the prior-fit pass, with their origin (for another scorer's `recall`)."""
        return dict(self._memory)

    def recall(self, memory: dict[str, tuple[Any, str]]) -> None:
        """Reuse answers another scorer of the same job kept (a Ray worker: the driver's prior-fit pass)."""
        self._memory.update(memory)

    def label_logprobs(self, prompts: list[str], prefix_chars: list[int]) -> np.ndarray:
        """Per-label log-probs of shape (N, K): verbalizers of one label pooled by log-sum-exp."""
        keys = [
            score_key(self.backend, p, c, self.candidates) for p, c in zip(prompts, prefix_chars, strict=True)
        ]
        answers: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for key in dict.fromkeys(keys):
            if key in self._memory:
                answers[key], origin[key] = self._memory[key]
        if self.cache is not None:
            found = self.cache.get_many([k for k in dict.fromkeys(keys) if k not in answers])
            answers.update(found)
            origin.update(dict.fromkeys(found, FROM_CACHE))
        unique_missing = list({k: i for i, k in enumerate(keys) if k not in answers}.values())
        if unique_missing:
            requests = [ScoreRequest(prompts[i], self.candidates, prefix_chars[i]) for i in unique_missing]
            scored = self.backend.score(requests)
            fresh = {keys[i]: answer for i, answer in zip(unique_missing, scored, strict=True)}
            if self.cache is not None:
                self.cache.put_many(fresh)  # only successful answers reach this line
            answers.update(fresh)
            origin.update(dict.fromkeys(fresh, COMPUTED))
        if self.remember:
            for key in answers:
                self._memory[key] = (answers[key], FROM_CACHE if origin[key] == FROM_CACHE else REUSED)
        self.counts.update(origin[key] for key in keys)
        out = np.full((len(prompts), self.n_labels), -np.inf)
        for row, key in enumerate(keys):
            values = np.asarray(answers[key], dtype=np.float64)
            for label in range(self.n_labels):
                picks = values[[j for j, owner in enumerate(self.owner) if owner == label]]
                out[row, label] = np.logaddexp.reduce(picks)
        return out
