"""A labeling run's calibration: `--calibrate prior` scores the corpus's first rows and fits per-label biases
toward the target prior (uniform, given shares, or the EM estimate of the corpus's own prior);
`contextual` scores content-free inputs; `--calibration-from` reuses another file's. A resumed run must
append rows calibrated like the ones already written (`check_resumed_calibration`)."""

from __future__ import annotations

import time
from itertools import islice
from typing import Any

import numpy as np

from llmst.errors import ConfigError
from llmst.label.calibrate import (
    calibration_identity,
    contextual_bias,
    describe_identity,
    estimate_prior,
    estimated_target,
    prior_bias,
    read_fitted_calibration,
    same_calibration,
)
from llmst.label.config import LabelConfig
from llmst.label.scoring import COMPUTED
from llmst.option_values import prior_shares
from llmst.progress import progress_bar
from llmst.readers import Row, read_records


def fit_prior(
    source: str, labeler: Any, scorer: Any, config: LabelConfig, reference: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, dict[str, float]] | None]:
    """Score the first `prior_fit_rows` rows (the main pass reuses the answers) and fit the prior biases
    toward `--prior`: uniform, shares, or (`em`) the EM estimate over posteriors corrected by the
    content-free `reference` bias, returned with its 95% interval."""
    limit = config.prior_fit_rows if config.limit is None else min(config.prior_fit_rows, config.limit)
    rows = [r for r in islice(read_records(source, config.encoding), limit) if isinstance(r, Row)]
    prepared, _ = labeler.prepare(rows)
    if not prepared:
        raise ConfigError("prior calibration found no valid rows to fit on")
    logprobs = []
    step = labeler.backend.chunk_size
    started = time.perf_counter()
    with progress_bar(config.progress, len(prepared), "fitting the prior") as bar:
        bar_task = bar.add_task("prior", total=len(prepared), rate="-")
        for start in range(0, len(prepared), step):
            part = prepared[start : start + step]
            logprobs.append(scorer.label_logprobs([p.prompt for p in part], [p.prefix_chars for p in part]))
            done = start + len(part)
            bar.update(bar_task, advance=len(part), rate=f"{done / (time.perf_counter() - started):.1f}")
    scores = np.concatenate(logprobs)
    target = prior_shares(config.prior)
    estimate = None
    if target == "em":
        value, low, high = estimate_prior(scores, reference, seed=config.seed)
        names = labeler.task.label_names
        estimate = {
            name: {"share": float(v), "low": float(lo), "high": float(hi)}
            for name, v, lo, hi in zip(names, value, low, high, strict=True)
        }
        prior = estimated_target(value)
    else:
        prior = None if target == "uniform" else np.asarray(target, dtype=np.float64) / sum(target)
    if isinstance(target, list) and len(target) != scores.shape[1]:
        raise ConfigError(
            f"--prior has {len(target)} shares for the task's {scores.shape[1]} labels {labeler.task.label_names}",
            hint="give one share per label, in the task's label order",
        )
    try:
        return prior_bias(scores, prior), estimate
    except ValueError as err:
        raise ConfigError(str(err), hint="e.g. --prior 0.3,0.7 (one share > 0 per label)") from err


def fit_calibration(source, config, task, fewshot, labeler, scorer, summary) -> tuple[str, np.ndarray]:
    """The calibration method and per-label biases of this run: reused from `--calibration-from`, or fitted
    (contextual: on content-free inputs; prior: on the corpus's first rows). Recorded in `summary`."""
    names = task.label_names
    method, bias = config.calibrate, np.zeros(len(names))
    if config.calibration_from:
        method, bias = read_fitted_calibration(config.calibration_from, names)
    elif config.calibrate == "contextual":
        bias = content_free_bias(task, fewshot, scorer)
    elif config.calibrate == "prior":
        reference = content_free_bias(task, fewshot, scorer) if config.prior == "em" else None
        scorer.remember = True  # the main pass reuses these answers (counted as reused_from_prior_fit)
        bias, summary.prior_estimate = fit_prior(source, labeler, scorer, config, reference)
        scorer.remember = False
        summary.prior_fit_computed = scorer.counts[COMPUTED]
    summary.calibration = method
    if method != "none":
        summary.calibration_bias = {n: float(b) for n, b in zip(names, bias, strict=True)}
    return method, bias


def content_free_bias(task, fewshot, scorer) -> np.ndarray:
    """Zhao et al. (2021): the bias that makes the model's answer to content-free inputs uniform."""
    block = fewshot.blocks(["N/A"])[0] if fewshot else ""
    prompts = [
        task.instruction + block + task.render({f: cf for f in task.text_fields}, cf)
        for cf in task.content_free
    ]
    return contextual_bias(scorer.label_logprobs(prompts, [0] * len(prompts)))


def check_resumed_calibration(previous: dict | None, fitted: dict, out) -> None:
    """Refuse to append rows calibrated unlike the rows a resumed output already holds (a `--limit` under
    `--prior-fit-rows` fits the prior on fewer rows, so raising it changes the biases)."""
    if previous is None:  # a checkpoint from before the calibration was recorded in it
        return
    if not same_calibration(previous, fitted):
        before, now = calibration_identity(previous), calibration_identity(fitted)
        raise ConfigError(
            f"{out} holds rows calibrated as {describe_identity(before)}; this run fitted "
            f"{describe_identity(now)}, so the rows it would append would not match",
            hint="pass --overwrite to relabel every row with one calibration (with --calibrate prior and a "
            "--limit under --prior-fit-rows, the prior is fitted on the first --limit rows)",
        )
