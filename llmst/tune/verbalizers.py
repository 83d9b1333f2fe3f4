"""Label words found on the gold rows: which words the labeler itself puts at the answer slot for each label.

A prompt built from label names alone scores ' positive' against ' negative'; a small model often says
' good' or ' bad' there instead, and a search over hand-written verbalizer sets (eval/search_prompts.py)
gained up to 8 points macro-F1 from pooling such words (AG News: ' world' with ' politics', ' international').
`llmst tune` finds them automatically, in the spirit of LM-BFF's automatic label search (Gao et al. 2021) and
PETAL (Schick et al. 2020): one forward pass per gold row gives the next-token distribution at the answer
slot; a word joins a label when it is among the words the model finds likeliest on that label's rows, is
likelier there than on the other labels' rows, and pooling it (log-sum-exp with the label's own name) makes
the gold labels likelier (greedy forward selection). Inside cross-validation they are found on the other
folds only, so a fold is never scored with words chosen on itself.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from llmst.label.calibrate import prior_bias
from llmst.label.task import Task

# Chosen on the suite's dev slices (eval/label_words_study.py: words found on 100 rows, scored on the rest):
POOL = 50  # a label's candidate words: its rows' likeliest words at the answer slot
MIN_GAIN = 0.01  # nats per row: a word must raise the rows' mean log-likelihood of their gold label this much


def word_logprobs(backend, prompts: list[str]) -> tuple[np.ndarray, list[str]]:
    """(rows, words) log-probabilities of the backend's single-token words after each prompt, and the words."""
    words = backend.word_tokens()
    ids = np.fromiter(words, dtype=np.int64)
    full = backend.next_token_logprobs(prompts)
    return np.stack([np.asarray(row)[ids] for row in full]).astype(np.float64), list(words.values())


def _gold_loglik(label_logprobs: np.ndarray, gold: np.ndarray) -> float:
    """Mean log-probability of the gold labels after prior calibration (the calibration tune defaults to)."""
    calibrated = label_logprobs + prior_bias(label_logprobs)
    calibrated -= np.logaddexp.reduce(calibrated, axis=1, keepdims=True)
    return float(calibrated[np.arange(len(gold)), gold].mean())


def choose_words(
    label_logprobs: np.ndarray,
    logprobs: np.ndarray,
    gold: np.ndarray,
    words: list[str],
    task: Task,
    per_label: int,
    pool: int = POOL,
    min_gain: float = MIN_GAIN,
) -> dict[str, list[str]]:
    """Up to `per_label` words for each label of `task` (by name), chosen on rows with these
    `label_logprobs` (rows x labels, under the task's own verbalizers), word `logprobs` (rows x words) and
    `gold` label indices.

    A label's shortlist: the `pool` words with the highest mean log-probability on its rows that are
    likelier there than on the other labels' rows (in mean log-probability). Then, greedily, the shortlisted
    word whose pooling most raises the mean log-likelihood of the gold labels (after prior calibration) joins
    its label, until no word adds `min_gain` (nats per row) or every label has `per_label`.
    Each word joins one label at most, and no word already a verbalizer is taken."""
    names = task.label_names
    k = len(names)
    present = [c for c in range(k) if (gold == c).any()]
    taken = {v for verbalizers in task.labels.values() for v in verbalizers}
    shortlist: dict[int, list[int]] = {}
    for c in present:
        others = [o for o in present if o != c]
        if not others:
            continue
        mean = logprobs[gold == c].mean(axis=0)
        margin = mean - np.mean([logprobs[gold == o].mean(axis=0) for o in others], axis=0)
        shortlist[c] = [w for w in np.argsort(-mean)[:pool] if margin[w] > 0 and words[w] not in taken]
    chosen: dict[str, list[str]] = {name: [] for name in names}
    pooled, used = np.array(label_logprobs, dtype=np.float64), set()
    current = _gold_loglik(pooled, gold)
    while True:
        best = None
        for c, candidates in shortlist.items():
            if len(chosen[names[c]]) >= per_label:
                continue
            for w in candidates:
                if w in used:
                    continue
                trial = pooled.copy()
                trial[:, c] = np.logaddexp(trial[:, c], logprobs[:, w])
                gain = _gold_loglik(trial, gold) - current
                if gain >= min_gain and (best is None or gain > best[0]):
                    best = (gain, c, w, trial)
        if best is None:
            return chosen
        gain, c, w, pooled = best
        current += gain
        chosen[names[c]].append(words[w])
        used.add(w)


def with_words(task: Task, found: dict[str, list[str]], name: str) -> Task:
    """A copy of `task` whose labels pool their verbalizers with the `found` words."""
    labels = {label: list(task.labels[label]) + found.get(label, []) for label in task.label_names}
    return replace(task, name=name, labels=labels)
