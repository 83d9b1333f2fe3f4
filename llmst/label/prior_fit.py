"""`--calibrate prior`: score the corpus's first rows and fit per-label biases toward the target prior
(uniform, given shares, or the EM estimate of the corpus's own prior)."""

from __future__ import annotations

import time
from itertools import islice
from typing import Any

import numpy as np

from llmst.errors import ConfigError
from llmst.label.calibrate import estimate_prior, estimated_target, prior_bias
from llmst.label.config import LabelConfig
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
