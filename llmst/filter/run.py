"""`llmst filter` and `llmst aggregate`: the stages. They turn labeled records into arrays, call the selectors
and fusers of this package, and write records plus a report.

Nothing is written until every input has been read and checked and the selection is computed; outputs go
to temporary files that are renamed into place together at the end, so an error never leaves a half-written
file behind. Output names: `OUT`, `OUT.report.json` and PNG plots `OUT.<name>.png`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from llmst.errors import ConfigError
from llmst.filter import plots
from llmst.filter.aggregate import (
    apply_labeling_functions,
    dawid_skene,
    load_labeling_functions,
    majority_vote,
    mean_probs,
    weighted_vote,
)
from llmst.filter.agreement import agreement_counts
from llmst.filter.balanced import select_balanced, target_prior
from llmst.filter.conformal import (
    CalibrationTooSmall,
    conformal_quantile,
    nonconformity_scores,
    precision_threshold,
    prediction_sets,
)
from llmst.filter.curriculum import curriculum_fraction, select_curriculum
from llmst.filter.learned import correctness_features, fit_correctness_model, predict_correctness
from llmst.filter.per_class import per_class_thresholds, select_per_class
from llmst.filter.scores import label_quality_scores
from llmst.filter.threshold import select_by_threshold
from llmst.metrics import accuracy_coverage
from llmst.records import PendingOutputs, Reject, label_fields, label_index, read_records

FilterMethod = Literal[
    "threshold", "per-class", "balanced", "curriculum", "conformal", "agreement", "learned", "student-oof"
]
FILTER_METHODS = (
    "threshold",
    "per-class",
    "balanced",
    "curriculum",
    "conformal",
    "agreement",
    "learned",
    "student-oof",
)
AggregateMethod = Literal["vote", "weighted", "mean", "dawid-skene"]
AGGREGATE_METHODS = ("vote", "weighted", "mean", "dawid-skene")
FUSED_FIELDS = ("label", "probs", "confidence", "margin", "entropy", "model", "prompt_hash", "calibration")


def _floats(value: Any, option: str) -> list[float] | None:
    """Parse '0.3,0.7' (CLI) or a list (Python) into floats."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        return [float(str(p).strip()) for p in parts if str(p).strip()]
    except ValueError as err:
        raise ConfigError(f"{option} must be comma-separated numbers; got '{value}'") from err


def _in_unit(value: float | None, option: str, *, open_interval: bool = False) -> None:
    if value is None:
        return
    ok = 0 < value < 1 if open_interval else 0 <= value <= 1
    if not ok:
        raise ConfigError(
            f"{option} must be {'strictly ' if open_interval else ''}between 0 and 1; got {value}"
        )


@dataclass
class FilterConfig:
    """Options of `llmst filter` (the CLI fills this; Python users can too).

    Parameters that choose what to keep: `method` and `score`, then the options of that method:
    `threshold` (threshold, learned), `prior`/`fraction`/`size`/`k_per_class` (balanced), `fraction`/`round`/
    `schedule` (curriculum), `calibration`/`gold_field`/`target_precision`/`delta`/`test`/`conformal`/
    `coverage` (conformal, learned), `min_agree`/`sources_field` (agreement).
    """

    method: FilterMethod = field(
        default="threshold", metadata={"help": "Selector: " + ", ".join(FILTER_METHODS)}
    )
    score: Literal["confidence", "margin", "entropy"] = field(
        default="confidence", metadata={"help": "Trust score used to threshold and rank rows."}
    )
    threshold: float | None = field(
        default=None,
        metadata={
            "help": "threshold: keep score >= T (entropy: <= T), default 0.9 for confidence and margin; "
            "learned: keep P(correct) >= T, default 0.9."
        },
    )
    prior: str | list[float] = field(
        default="uniform",
        metadata={"help": "balanced: target label distribution: uniform, estimated, or shares like 0.3,0.7."},
    )
    fraction: float | None = field(
        default=None,
        metadata={"help": "balanced: fraction of all rows to keep; curriculum: fraction of each class."},
    )
    size: int | None = field(default=None, metadata={"help": "balanced: number of rows to keep."})
    k_per_class: int | None = field(default=None, metadata={"help": "balanced: rows to keep per class."})
    round: int | None = field(
        default=None, metadata={"help": "curriculum: self-training round (0-based); fraction from schedule."}
    )
    schedule: str | list[float] = field(
        default="0.2,0.2",
        metadata={"help": "curriculum: START,STEP[,STOP]: fraction = min(STOP, START + STEP * round)."},
    )
    calibration: str | None = field(
        default=None, metadata={"help": "Gold-labeled rows labeled by the same labeler (conformal, learned)."}
    )
    gold_field: str = field(
        default="gold",
        metadata={
            "help": "Gold label field (name or index) in the calibration file; in LABELED, for evaluation."
        },
    )
    target_precision: float | None = field(
        default=None, metadata={"help": "conformal (and learned): precision to guarantee."}
    )
    delta: float = field(default=0.1, metadata={"help": "The guarantee holds with probability >= 1 - delta."})
    test: Literal["multi-start", "fixed-sequence", "bonferroni"] = field(
        default="multi-start", metadata={"help": "Learn-then-Test multiple-testing procedure."}
    )
    conformal: Literal["precision", "lac", "aps"] = field(
        default="precision",
        metadata={
            "help": "precision: certified threshold; lac/aps: keep rows whose prediction set is a singleton."
        },
    )
    coverage: float = field(
        default=0.9, metadata={"help": "lac/aps: coverage of the conformal prediction sets."}
    )
    min_agree: int | None = field(
        default=None,
        metadata={"help": "agreement: sources that must agree with the label (default: a majority)."},
    )
    sources_field: str = field(
        default="sources", metadata={"help": "Field with per-source labels (written by llmst aggregate)."}
    )
    text_field: str | None = field(
        default=None,
        metadata={"help": "learned: text field for the length feature (default: 'text' if present)."},
    )
    embedding_field: str | None = field(
        default=None, metadata={"help": "learned: field holding an embedding vector, used as features."}
    )
    student: str = field(
        default="minilm-l6", metadata={"help": "student-oof: student model trained on each K-1 folds."}
    )
    folds: int = field(default=5, metadata={"help": "student-oof: number of folds."})
    student_epochs: float = field(default=2.0, metadata={"help": "student-oof: epochs per fold student."})
    seed: int = field(default=0, metadata={"help": "Seed of the learned selector's calibration split."})
    plots: bool = field(default=True, metadata={"help": "Write PNG plots next to the report."})

    def __post_init__(self) -> None:
        if self.method not in FILTER_METHODS:
            raise ConfigError(
                f"unknown filter method '{self.method}'", hint=f"use one of {', '.join(FILTER_METHODS)}"
            )
        if self.score not in ("confidence", "margin", "entropy"):
            raise ConfigError(f"unknown score '{self.score}'", hint="use confidence, margin or entropy")
        if self.test not in ("multi-start", "fixed-sequence", "bonferroni"):
            raise ConfigError(
                f"unknown test '{self.test}'", hint="use multi-start, fixed-sequence or bonferroni"
            )
        if self.conformal not in ("precision", "lac", "aps"):
            raise ConfigError(f"unknown conformal mode '{self.conformal}'", hint="use precision, lac or aps")
        if isinstance(self.prior, str) and self.prior not in ("uniform", "estimated"):
            self.prior = _floats(self.prior, "--prior") or []
        if not isinstance(self.prior, str) and (
            not self.prior or min(self.prior) < 0 or sum(self.prior) <= 0
        ):
            raise ConfigError(
                "--prior shares must be non-negative and not all zero", hint="e.g. --prior 0.3,0.7"
            )
        self.schedule = _floats(self.schedule, "--schedule") or []
        if len(self.schedule) not in (2, 3):
            raise ConfigError(
                "--schedule takes START,STEP or START,STEP,STOP", hint="e.g. --schedule 0.2,0.2"
            )
        _in_unit(self.fraction, "--fraction")
        _in_unit(self.target_precision, "--target-precision", open_interval=True)
        _in_unit(self.delta, "--delta", open_interval=True)
        _in_unit(self.coverage, "--coverage", open_interval=True)
        if self.method == "learned":
            _in_unit(self.threshold, "--threshold")
        for option, value in (
            ("--size", self.size),
            ("--k-per-class", self.k_per_class),
            ("--round", self.round),
        ):
            if value is not None and value < 0:
                raise ConfigError(f"{option} must be >= 0; got {value}")
        if self.folds < 2 or self.student_epochs <= 0:
            raise ConfigError("--folds must be >= 2 and --student-epochs > 0")
        if self.min_agree is not None and self.min_agree < 1:
            raise ConfigError(f"--min-agree must be >= 1; got {self.min_agree}")
        if self.method == "threshold" and self.threshold is None and self.score == "entropy":
            raise ConfigError(
                "an entropy threshold has no default", hint="give --threshold in nats, e.g. 0.3"
            )
        if self.method == "balanced":
            if sum(x is not None for x in (self.fraction, self.size, self.k_per_class)) > 1:
                raise ConfigError("give at most one of --fraction, --size and --k-per-class")
            if self.k_per_class is not None and self.prior != "uniform":
                raise ConfigError(
                    "--k-per-class keeps the same number of every class; use --fraction or --size with --prior"
                )
        if self.method == "curriculum" and (self.fraction is None) == (self.round is None):
            raise ConfigError(
                "curriculum needs one of --fraction or --round", hint="e.g. --fraction 0.2 or --round 0"
            )
        if self.method in ("conformal", "learned") and not self.calibration:
            raise ConfigError(
                f"--method {self.method} needs a gold-labeled calibration set",
                hint="pass --calibration FILE --gold-field F (100-300 rows labeled by the same labeler)",
            )
        if self.method == "conformal" and self.conformal == "precision" and self.target_precision is None:
            raise ConfigError(
                "--method conformal needs --target-precision", hint="e.g. --target-precision 0.95 --delta 0.1"
            )


@dataclass
class AggregateConfig:
    """Options of `llmst aggregate` (the CLI fills this; Python users can too)."""

    method: AggregateMethod = field(
        default="vote", metadata={"help": "vote, weighted (log-odds weights), mean (of probs), dawid-skene."}
    )
    names: str | list[str] | None = field(
        default=None, metadata={"help": "Source names, one per input file (default: file names)."}
    )
    weights: str | list[float] | None = field(
        default=None,
        metadata={"help": "weighted/vote/mean: one weight per source (files, then labeling functions)."},
    )
    labeling_functions: str | None = field(
        default=None, metadata={"help": "Python file whose @labeling_function functions are extra sources."}
    )
    max_iter: int = field(default=100, metadata={"help": "dawid-skene: EM iterations at most."})
    tol: float = field(default=1e-6, metadata={"help": "dawid-skene: convergence tolerance on posteriors."})
    smoothing: float = field(default=0.01, metadata={"help": "dawid-skene: pseudo-count per confusion cell."})
    gold_field: str = field(
        default="gold", metadata={"help": "When records carry it: per-source gold accuracy in the report."}
    )
    plots: bool = field(default=True, metadata={"help": "Write PNG plots next to the report."})

    def __post_init__(self) -> None:
        if self.method not in AGGREGATE_METHODS:
            raise ConfigError(
                f"unknown aggregation method '{self.method}'",
                hint=f"use one of {', '.join(AGGREGATE_METHODS)}",
            )
        if isinstance(self.names, str):
            self.names = [part.strip() for part in self.names.split(",") if part.strip()]
        self.weights = _floats(self.weights, "--weights")
        if self.weights is not None and (min(self.weights, default=0) < 0 or not self.weights):
            raise ConfigError("--weights must be non-negative numbers, one per source")
        if self.weights is not None and self.method == "dawid-skene":
            raise ConfigError("dawid-skene estimates its own source weights", hint="drop --weights")
        if self.max_iter < 1 or self.smoothing < 0 or self.tol <= 0:
            raise ConfigError("--max-iter must be >= 1, --smoothing >= 0 and --tol > 0")


# ---------------------------------------------------------------- reading labeled records


@dataclass
class _Labeled:
    """The arrays a selector needs, read from one labeled file (records are not kept in memory)."""

    path: str
    names: list[str]
    probs: np.ndarray  # (N, K)
    labels: np.ndarray  # (N,) index of each record's `label`
    gold: np.ndarray  # (N,) gold index, -1 when missing
    ids: list[str]
    sources: list[dict[str, Any]] | None = None
    lengths: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _iter_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for item in read_records(path):
        if isinstance(item, Reject):
            raise ConfigError(
                f"{path}, line {item.line}: {item.reason}", hint="fix or remove that line and rerun"
            )
        yield item.line, item.record


def _record_probs(
    record: dict[str, Any], path: str | Path, line: int, names: list[str] | None
) -> dict[str, float]:
    probs = record.get("probs")
    if not isinstance(probs, dict) or len(probs) < 2:
        raise ConfigError(
            f"{path}, line {line}: the record has no 'probs' {{label: probability}} field",
            hint="filter and aggregate read the output of `llmst label` (or predict/aggregate)",
        )
    if names is not None and set(probs) != set(names):
        raise ConfigError(
            f"{path}, line {line}: labels {sorted(probs)} differ from {sorted(names)} of the first record",
            hint="every record must be labeled with the same task",
        )
    try:
        return {str(k): float(v) for k, v in probs.items()}
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path}, line {line}: 'probs' values must be numbers") from err


def _read_labeled(
    path: str | Path,
    *,
    gold_field: str | None,
    names: list[str] | None = None,
    sources_field: str | None = None,
    text_field: str | None = None,
    embedding_field: str | None = None,
) -> _Labeled:
    rows: list[list[float]] = []
    labels: list[int] = []
    gold: list[int] = []
    ids: list[str] = []
    sources: list[dict[str, Any]] = []
    lengths: list[float] = []
    embeddings: list[list[float]] = []
    has_text = True
    missing_ids = 0
    for line, record in _iter_records(path):
        probs = _record_probs(record, path, line, names)
        if names is None:
            names = list(probs)
        rows.append([probs[name] for name in names])
        label = record.get("label")
        labels.append(names.index(label) if label in names else int(np.argmax(rows[-1])))
        gold.append(label_index(record.get(gold_field), names) if gold_field else -1)
        if record.get("id") is None:
            missing_ids += 1
        ids.append(str(record.get("id", line)))
        if sources_field is not None:
            value = record.get(sources_field)
            sources.append(value if isinstance(value, dict) else {})
        if text_field is not None:
            text = record.get(text_field)
            has_text = has_text and isinstance(text, str)
            lengths.append(float(len(text)) if isinstance(text, str) else 0.0)
        if embedding_field is not None:
            vector = record.get(embedding_field)
            if not isinstance(vector, list) or not vector:
                raise ConfigError(
                    f"{path}, line {line}: no embedding vector in field '{embedding_field}'",
                    hint="every record needs a list of numbers there, or drop --embedding-field",
                )
            if embeddings and len(vector) != len(embeddings[0]):
                raise ConfigError(
                    f"{path}, line {line}: embedding has {len(vector)} values, not {len(embeddings[0])}"
                )
            embeddings.append([float(x) for x in vector])
    if names is None:
        raise ConfigError(f"{path} holds no records")
    probs_array = np.asarray(rows, dtype=np.float64)
    if (probs_array < 0).any() or not np.isfinite(probs_array).all():
        raise ConfigError(f"{path}: 'probs' must be finite and non-negative")
    sums = probs_array.sum(axis=1, keepdims=True)
    if (sums <= 0).any():
        raise ConfigError(f"{path}: a record's 'probs' are all zero")
    return _Labeled(
        path=str(path),
        names=names,
        probs=probs_array / sums,
        labels=np.asarray(labels, dtype=np.int64),
        gold=np.asarray(gold, dtype=np.int64),
        ids=ids,
        sources=sources if sources_field is not None else None,
        lengths=np.asarray(lengths) if text_field is not None and has_text else None,
        embeddings=np.asarray(embeddings) if embedding_field is not None else None,
        extra={"missing_ids": missing_ids},
    )


def _source_matrix(data: _Labeled, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Per-source labels (N, S) from each record's sources field; a missing or None entry abstains."""
    assert data.sources is not None
    source_names: list[str] = list(dict.fromkeys(key for row in data.sources for key in row))
    matrix = np.full((len(data.sources), len(source_names)), -1, dtype=np.int64)
    for i, row in enumerate(data.sources):
        for j, name in enumerate(source_names):
            value = row.get(name)
            if value is None:
                continue
            index = label_index(value, names)
            if index < 0:
                raise ConfigError(
                    f"{data.path}: source '{name}' gives the unknown label {value!r} (row {i + 1})"
                )
            matrix[i, j] = index
    return matrix, source_names


# ---------------------------------------------------------------- atomic outputs


def _write_json(path: Path, payload: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())


def _write_jsonl(path: Path, records: Iterator[dict[str, Any]]) -> int:
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
        handle.flush()
        os.fsync(handle.fileno())
    return count


def _check_output(out: Path, inputs: list[str | Path]) -> None:
    for source in inputs:
        if not str(source).startswith("hf:") and Path(source).resolve() == out.resolve():
            raise ConfigError(f"-o {out} is also an input", hint="write the output to another file")
    if out.exists() and out.is_dir():
        raise ConfigError(f"-o {out} is a folder", hint="give a file name such as kept.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)


def _counts(labels: np.ndarray, names: list[str]) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(names)) if len(labels) else np.zeros(len(names), dtype=int)
    return {name: int(counts[i]) for i, name in enumerate(names)}


def _shares(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {name: (value / total if total else 0.0) for name, value in counts.items()}


# ---------------------------------------------------------------- filter


def _calibration_data(config: FilterConfig, pool: _Labeled, **fields: Any) -> tuple[_Labeled, np.ndarray]:
    """Calibration rows with a usable gold label, and whether each pseudo-label is correct."""
    assert config.calibration is not None
    cal = _read_labeled(config.calibration, gold_field=config.gold_field, **fields)
    if set(cal.names) != set(pool.names):
        raise ConfigError(
            f"the calibration file's labels {sorted(cal.names)} differ from {sorted(pool.names)}",
            hint="label the calibration rows with the same task (and labeler) as LABELED",
        )
    if cal.names != pool.names:  # same set, other order: reorder columns
        order = [cal.names.index(name) for name in pool.names]
        cal.probs = cal.probs[:, order]
        remap = np.asarray([pool.names.index(name) for name in cal.names])
        cal.labels = remap[cal.labels]
        cal.gold = np.where(cal.gold >= 0, remap[np.maximum(cal.gold, 0)], -1)
        cal.names = list(pool.names)
    has_gold = cal.gold >= 0
    if not has_gold.any():
        raise ConfigError(
            f"no calibration row has a usable gold label in field '{config.gold_field}'",
            hint=f"labels are {pool.names}; gold may be a label name or an index; use --gold-field",
        )
    cal.extra["skipped_without_gold"] = int((~has_gold).sum())
    keep = np.flatnonzero(has_gold)
    cal.probs, cal.labels, cal.gold = cal.probs[keep], cal.labels[keep], cal.gold[keep]
    cal.ids = [cal.ids[i] for i in keep]
    if cal.sources is not None:
        cal.sources = [cal.sources[i] for i in keep]
    if cal.lengths is not None:
        cal.lengths = cal.lengths[keep]
    if cal.embeddings is not None:
        cal.embeddings = cal.embeddings[keep]
    return cal, cal.labels == cal.gold


def _guarantee_error(
    result: Any, config: FilterConfig, rows: int, what: str = "calibration rows"
) -> ConfigError:
    return ConfigError(
        f"no threshold certifies precision >= {config.target_precision} with probability >= {1 - config.delta:g} "
        f"on {rows} {what} (best lower bound {result.best_lower_bound:.3f})",
        hint="add gold calibration rows, lower --target-precision, or raise --delta",
    )


def _certify(scores: np.ndarray, correct: np.ndarray, config: FilterConfig, what: str) -> Any:
    try:
        result = precision_threshold(
            scores, correct, target_precision=config.target_precision, delta=config.delta, method=config.test
        )
    except CalibrationTooSmall as err:
        raise ConfigError(
            f"{err} ({what})", hint="label more calibration rows, lower --target-precision, or raise --delta"
        ) from err
    if not result.certified:
        raise _guarantee_error(result, config, len(scores), what)
    return result


def _agreement_fraction(data: _Labeled, source_names: list[str] | None) -> np.ndarray | None:
    if data.sources is None or not source_names:
        return None
    matrix = np.full((len(data.sources), len(source_names)), -1, dtype=np.int64)
    for i, row in enumerate(data.sources):
        for j, name in enumerate(source_names):
            matrix[i, j] = label_index(row.get(name), data.names)
    agree, voters = agreement_counts(matrix, n_classes=len(data.names), labels=data.labels)
    return np.where(voters > 0, agree / np.maximum(voters, 1), 0.0)


def _select(
    config: FilterConfig, pool: _Labeled
) -> tuple[np.ndarray, np.ndarray, dict[str, Any], dict | None]:
    """Mask (N,), ranking score (N,) for the precision-coverage curve, method details, calibration curve."""
    probs, names = pool.probs, pool.names
    scores = label_quality_scores(probs, score=config.score)
    details: dict[str, Any] = {"score": config.score}
    calibration_curve = None
    method = config.method
    try:
        if method == "threshold":
            threshold = 0.9 if config.threshold is None else config.threshold
            mask = select_by_threshold(probs, threshold=threshold, score=config.score)
            details["threshold"] = threshold
            details["rule"] = (
                f"entropy <= {threshold}" if config.score == "entropy" else f"{config.score} >= {threshold}"
            )
        elif method == "per-class":
            thresholds = per_class_thresholds(probs)
            mask = select_per_class(probs, thresholds=thresholds)
            details["thresholds"] = {
                n: (None if np.isnan(t) else float(t)) for n, t in zip(names, thresholds, strict=True)
            }
            details["score"] = "confidence"
            scores = label_quality_scores(probs, score="confidence")
        elif method == "balanced":
            size = config.size
            if config.fraction is None and size is None and config.k_per_class is None:
                size = len(probs)  # the largest subset with the target distribution
            mask = select_balanced(
                probs,
                prior=config.prior,
                fraction=config.fraction,
                size=size,
                k_per_class=config.k_per_class,
                score=config.score,
            )
            prior = target_prior(probs, config.prior if config.k_per_class is None else "uniform")
            details["target_shares"] = {n: float(p) for n, p in zip(names, prior, strict=True)}
            details["prior"] = config.prior
            if config.fraction is not None:
                requested = round(config.fraction * len(probs))
            elif size is not None:
                requested = size
            else:
                requested = (config.k_per_class or 0) * len(names)
            details["requested"] = int(min(requested, len(probs)))
        elif method == "curriculum":
            start, step, *rest = config.schedule  # type: ignore[misc]
            fraction = (
                config.fraction
                if config.fraction is not None
                else curriculum_fraction(
                    config.round or 0, start=start, step=step, stop=rest[0] if rest else 1.0
                )
            )
            mask = select_curriculum(probs, fraction=fraction, score=config.score)
            details.update(fraction=fraction, round=config.round, schedule=config.schedule)
        elif method == "agreement":
            if pool.sources is None or not any(pool.sources):
                raise ConfigError(
                    f"records have no per-source labels in field '{config.sources_field}'",
                    hint="run `llmst aggregate A B C -o OUT` first and filter its output (or set --sources-field)",
                )
            matrix, source_names = _source_matrix(pool, names)
            min_agree = config.min_agree or len(source_names) // 2 + 1
            if min_agree > len(source_names):
                raise ConfigError(
                    f"--min-agree {min_agree} is more than the {len(source_names)} sources {source_names}"
                )
            agree, _ = agreement_counts(matrix, n_classes=len(names), labels=pool.labels)
            mask = agree >= min_agree
            scores = agree + 1e-3 * label_quality_scores(probs, score=config.score)  # ties: by trust score
            details.update(min_agree=min_agree, sources=source_names, n_sources=len(source_names))
        elif method == "conformal":
            mask, details, calibration_curve = _select_conformal(config, pool, scores, details)
        elif method == "student-oof":
            mask, scores, details = _select_student_oof(config, pool)
        else:
            mask, scores, details, calibration_curve = _select_learned(config, pool, details)
    except ValueError as err:  # a selector refused its inputs: a user-fixable condition
        raise ConfigError(str(err)) from err
    return mask, scores, details, calibration_curve


def _select_student_oof(
    config: FilterConfig, pool: _Labeled
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Drop rows that cleanlab flags from out-of-fold student probabilities (confident learning)."""
    from llmst.train.config import TrainConfig
    from llmst.train.oof import find_label_issues, out_of_fold_probs

    train_config = TrainConfig(
        student=config.student,
        epochs=config.student_epochs,
        labels=pool.names,
        text_fields=[config.text_field or "text"],
        seed=config.seed,
    )
    oof = out_of_fold_probs(pool.path, pool.labels, train_config, folds=config.folds)
    issues = find_label_issues(pool.labels, oof)
    self_confidence = oof[np.arange(len(oof)), pool.labels]
    details = {
        "score": "out-of-fold self-confidence",
        "student": config.student,
        "folds": config.folds,
        "n_label_issues": int(issues.sum()),
        "oof_agreement": float((oof.argmax(axis=1) == pool.labels).mean()),
    }
    return ~issues, self_confidence, details


def _select_conformal(config: FilterConfig, pool: _Labeled, scores: np.ndarray, details: dict[str, Any]):
    cal, correct = _calibration_data(config, pool)
    details["calibration"] = {
        "file": config.calibration,
        "rows": len(cal.ids),
        "skipped_without_gold": cal.extra["skipped_without_gold"],
    }
    if config.conformal == "precision":
        cal_scores = label_quality_scores(cal.probs, score=config.score)
        result = _certify(cal_scores, correct, config, "calibration rows")
        mask = scores >= result.threshold
        shown = -result.threshold if config.score == "entropy" else result.threshold
        details.update(
            mode="precision",
            test=config.test,
            threshold=shown,
            rule=f"entropy <= {shown:.6g}" if config.score == "entropy" else f"{config.score} >= {shown:.6g}",
            certification=result.to_json() | {"curve": None},
        )
        details["guarantee"], curve = _precision_report(result, config)
        return mask, details, curve
    try:
        sets = prediction_sets(
            pool.probs,
            cal_probs=cal.probs,
            cal_labels=cal.gold,
            coverage=config.coverage,
            method=config.conformal,
        )
        cal_sets = prediction_sets(
            cal.probs,
            cal_probs=cal.probs,
            cal_labels=cal.gold,
            coverage=config.coverage,
            method=config.conformal,
        )
        qhat = conformal_quantile(
            nonconformity_scores(cal.probs, cal.gold, method=config.conformal), coverage=config.coverage
        )
    except CalibrationTooSmall as err:
        raise ConfigError(str(err), hint="label more calibration rows or lower --coverage") from err
    mask = sets.sum(axis=1) == 1
    cal_single = cal_sets.sum(axis=1) == 1
    singles_correct = correct[cal_single]
    estimated = float(singles_correct.mean()) if cal_single.any() else None
    details.update(
        mode=config.conformal,
        quantile=qhat,
        mean_set_size=float(sets.sum(axis=1).mean()),
        empty_sets=int((sets.sum(axis=1) == 0).sum()),
        calibration_coverage=float(cal_sets[np.arange(len(cal.gold)), cal.gold].mean()),
        calibration_singletons=int(cal_single.sum()),
    )
    details["guarantee"] = {
        "type": "coverage",
        "guaranteed_coverage": config.coverage,
        "estimated_precision": estimated,
        "note": "sets hold the true label with probability >= coverage; kept rows are the singleton sets",
    }
    curve = None
    if estimated is not None:
        cal_scores = label_quality_scores(cal.probs, score=config.score)
        points = accuracy_coverage(cal_scores, correct.astype(float), points=50)
        curve = {
            "points": [{"coverage": p["coverage"], "precision": p["accuracy"]} for p in points],
            "operating_point": {"coverage": float(cal_single.mean()), "precision": estimated},
        }
    return mask, details, curve


def _select_learned(config: FilterConfig, pool: _Labeled, details: dict[str, Any]):
    text_field = config.text_field or "text"
    fields = {
        "sources_field": config.sources_field,
        "text_field": text_field,
        "embedding_field": config.embedding_field,
    }
    cal, correct = _calibration_data(config, pool, **fields)
    if config.text_field and (pool.lengths is None or cal.lengths is None):
        raise ConfigError(f"--text-field '{config.text_field}' is missing from some records")
    source_names = list(dict.fromkeys(k for row in (pool.sources or []) for k in row)) or None
    use_lengths = pool.lengths is not None and cal.lengths is not None
    pool_agree = _agreement_fraction(pool, source_names)
    cal_agree = _agreement_fraction(cal, source_names) if pool_agree is not None else None
    if pool_agree is not None and (cal.sources is None or not any(cal.sources)):
        pool_agree = cal_agree = None  # the calibration rows were not aggregated: agreement unusable
    pool_features = correctness_features(
        pool.probs,
        agreement=pool_agree,
        lengths=pool.lengths if use_lengths else None,
        embeddings=pool.embeddings,
    )
    cal_features = correctness_features(
        cal.probs,
        agreement=cal_agree,
        lengths=cal.lengths if use_lengths else None,
        embeddings=cal.embeddings,
    )
    used = ["confidence", "margin", "entropy"] + (["agreement"] * (pool_agree is not None))
    used += ["log_length"] * use_lengths + (["embedding"] if pool.embeddings is not None else [])
    details["features"] = used
    details["calibration"] = {
        "file": config.calibration,
        "rows": len(cal.ids),
        "skipped_without_gold": cal.extra["skipped_without_gold"],
    }
    curve = None
    if config.target_precision is None:
        threshold = 0.9 if config.threshold is None else config.threshold
        model = fit_correctness_model(cal_features, correct, seed=config.seed)
        predicted = predict_correctness(model, pool_features)
        mask = predicted >= threshold
        details.update(threshold=threshold, rule=f"P(correct) >= {threshold}")
        details["guarantee"] = {
            "type": "none",
            "estimated_precision_on_kept": float(predicted[mask].mean()) if mask.any() else None,
        }
    else:
        # fit on one half of the calibration rows, certify a threshold on the other half
        order = np.random.default_rng(config.seed).permutation(len(correct))
        fit_rows, test_rows = order[: len(order) // 2], order[len(order) // 2 :]
        model = fit_correctness_model(cal_features[fit_rows], correct[fit_rows], seed=config.seed)
        held_out = predict_correctness(model, cal_features[test_rows])
        result = _certify(held_out, correct[test_rows], config, "held-out half of the calibration rows")
        predicted = predict_correctness(model, pool_features)
        mask = predicted >= result.threshold
        details.update(
            threshold=result.threshold,
            rule=f"P(correct) >= {result.threshold:.6g}",
            fit_rows=len(fit_rows),
            certify_rows=len(test_rows),
        )
        details["guarantee"], curve = _precision_report(result, config)
    named = [name for name in used if name != "embedding"]
    coefficients = model[-1].coef_[0][: len(named)]
    details["coefficients"] = {name: float(c) for name, c in zip(named, coefficients, strict=True)}
    return mask, predicted, details, curve


def run_filter(labeled: str | Path, out: str | Path, config: FilterConfig) -> dict[str, Any]:
    """Select records of `labeled` into `out` (JSONL) with `config.method`; write `OUT.report.json` and plots.

    Returns the report (also written to `OUT.report.json`).
    """
    out_path = Path(out)
    inputs = [labeled] + ([config.calibration] if config.calibration else [])
    _check_output(out_path, inputs)
    wants_sources = config.method in ("agreement", "learned")
    pool = _read_labeled(
        labeled,
        gold_field=config.gold_field,
        sources_field=config.sources_field if wants_sources else None,
        text_field=(config.text_field or "text") if config.method == "learned" else None,
        embedding_field=config.embedding_field if config.method == "learned" else None,
    )
    mask, ranking, details, calibration_curve = _select(config, pool)
    kept = np.flatnonzero(mask)
    names = pool.names
    counts_before, counts_after = _counts(pool.labels, names), _counts(pool.labels[mask], names)
    report: dict[str, Any] = {
        "method": config.method,
        "input": str(labeled),
        "output": str(out_path),
        "n_input": len(pool.ids),
        "n_kept": int(mask.sum()),
        "coverage": float(mask.mean()) if len(mask) else 0.0,
        "labels": names,
        "counts_before": counts_before,
        "counts_after": counts_after,
        "shares_before": _shares(counts_before),
        "shares_after": _shares(counts_after),
        "details": details,
        "config": asdict(config),
    }
    if "guarantee" in details:
        report["guarantee"] = details.pop("guarantee")
    has_gold = pool.gold >= 0
    pool_curve = None
    if has_gold.any():
        correct = pool.labels == pool.gold
        gold_kept = mask & has_gold
        report["gold"] = {
            "field": config.gold_field,
            "n_with_gold": int(has_gold.sum()),
            "accuracy_all": float(correct[has_gold].mean()),
            "n_kept_with_gold": int(gold_kept.sum()),
            "precision_kept": float(correct[gold_kept].mean()) if gold_kept.any() else None,
        }
        points = accuracy_coverage(ranking[has_gold], correct[has_gold].astype(float), points=50)
        report["gold"]["curve"] = points
        pool_curve = {
            "points": [{"coverage": p["coverage"], "precision": p["accuracy"]} for p in points],
            "operating_point": {
                "coverage": float(gold_kept.sum() / has_gold.sum()),
                "precision": report["gold"]["precision_kept"],
            },
        }
    if calibration_curve is not None:
        report["calibration_curve"] = calibration_curve
    report_path = out_path.with_name(out_path.name + ".report.json")
    report["report"] = str(report_path)

    outputs = PendingOutputs()
    try:
        keep = set(kept.tolist())
        records = (record for index, (_, record) in enumerate(_iter_records(labeled)) if index in keep)
        written = _write_jsonl(outputs.tmp(out_path), records)
        if written != len(keep):
            raise ConfigError(f"{labeled} changed while it was being filtered; rerun")
        report["plots"] = []
        if config.plots:
            counts_png = out_path.with_name(out_path.name + ".counts.png")
            plots.plot_class_counts(
                counts_before,
                counts_after,
                outputs.tmp(counts_png),
                target=details.get("target_shares"),
                title=f"llmst filter --method {config.method}",
            )
            report["plots"].append(str(counts_png))
            if pool_curve is not None or calibration_curve is not None:
                curve_png = out_path.with_name(out_path.name + ".precision_coverage.png")
                plots.plot_precision_coverage(
                    outputs.tmp(curve_png),
                    pool=pool_curve,
                    calibration=calibration_curve,
                    title=f"Precision vs coverage ({config.method})",
                )
                report["plots"].append(str(curve_png))
        _write_json(outputs.tmp(report_path), report)
        outputs.commit()
    finally:
        outputs.discard()
    return report


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """The report without its long curves: what the CLI prints."""
    skip = {"curve", "calibration_curve", "config", "points"}

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in skip}
        return value

    return strip(report)


# ---------------------------------------------------------------- aggregate


def _source_name(path: str | Path) -> str:
    name = Path(str(path)).name
    for suffix in (".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".parquet"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def run_aggregate(inputs: list[str | Path], out: str | Path, config: AggregateConfig) -> dict[str, Any]:
    """Fuse labeled files of one corpus (joined on `id`) and optional labeling functions into `out`.

    Each fused record keeps the first file's input fields and carries the fused `label`/`probs` and
    `sources` ({source: label or None}). Returns the report (also written to `OUT.report.json`).
    """
    out_path = Path(out)
    inputs = list(inputs)
    if not inputs:
        raise ConfigError("give at least one labeled file")
    if len(inputs) < 2 and not config.labeling_functions:
        raise ConfigError(
            "aggregate needs at least two sources",
            hint="give two or more labeled files or --labeling-functions",
        )
    _check_output(out_path, inputs)
    names = list(config.names) if config.names else [_source_name(p) for p in inputs]
    if len(names) != len(inputs):
        raise ConfigError(f"--names gives {len(names)} names for {len(inputs)} files")
    if len(set(names)) != len(names):
        names = [f"{name}#{i}" for i, name in enumerate(names)]

    files = [_read_labeled(path, gold_field=config.gold_field) for path in inputs]
    for path, data in zip(inputs, files, strict=True):
        if data.extra["missing_ids"]:
            raise ConfigError(
                f"{data.extra['missing_ids']} records of {path} have no 'id'",
                hint="records are joined on id: label the corpus with an --id-field (or keep llmst's ids)",
            )
    first = files[0]
    label_names = first.names
    for path, data in zip(inputs[1:], files[1:], strict=True):
        if set(data.names) != set(label_names):
            raise ConfigError(
                f"label sets differ: {inputs[0]} has {sorted(label_names)}, {path} has {sorted(data.names)}",
                hint="aggregate files labeled with the same task",
            )
    position: list[dict[str, int]] = []
    for path, data in zip(inputs, files, strict=True):
        index = {rid: i for i, rid in enumerate(data.ids)}
        if len(index) != len(data.ids):
            duplicate = next(rid for rid, count in Counter(data.ids).items() if count > 1)
            raise ConfigError(
                f"{path} has duplicate id {duplicate!r}", hint="ids must be unique within a file"
            )
        position.append(index)
    for path, index in zip(inputs[1:], position[1:], strict=True):
        missing = [rid for rid in first.ids if rid not in index]
        extra = len(index) - (len(first.ids) - len(missing))
        if missing or extra:
            example = missing[0] if missing else next(r for r in index if r not in position[0])
            raise ConfigError(
                f"ids do not match: {path} lacks {len(missing)} ids of {inputs[0]} and has {extra} others "
                f"(e.g. {example!r})",
                hint="aggregate labelings of the same corpus, made with the same --id-field",
            )

    n, n_classes = len(first.ids), len(label_names)
    columns, probs_stack = [], []
    for data, index in zip(files, position, strict=True):
        rows = np.asarray([index[rid] for rid in first.ids], dtype=np.int64)
        reorder = [data.names.index(name) for name in label_names]
        probs_stack.append(data.probs[rows][:, reorder])
        remap = np.asarray([label_names.index(name) for name in data.names])
        columns.append(remap[data.labels[rows]])
    source_names = list(names)
    source_labels = np.stack(columns, axis=1)
    if config.labeling_functions:
        try:
            functions = load_labeling_functions(config.labeling_functions)
        except FileNotFoundError as err:
            raise ConfigError(str(err)) from err
        except ValueError as err:
            raise ConfigError(str(err)) from err
        except Exception as err:  # the user's file failed to import: one line, their error
            raise ConfigError(
                f"could not load labeling functions from {config.labeling_functions}: {type(err).__name__}: {err}"
            ) from err
        records = [record for _, record in _iter_records(inputs[0])]
        try:
            lf_labels = apply_labeling_functions(records, functions, label_names)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        source_labels = np.concatenate([source_labels, lf_labels], axis=1)
        source_names += [f"lf:{name}" for name in functions]
        eye = np.eye(n_classes)
        for column in lf_labels.T:
            probs_stack.append(np.where(column[:, None] >= 0, eye[np.maximum(column, 0)], np.nan))
    if config.weights is not None and len(config.weights) != len(source_names):
        raise ConfigError(
            f"--weights gives {len(config.weights)} values for {len(source_names)} sources {source_names}"
        )

    method_details: dict[str, Any] = {}
    estimated: np.ndarray | None = None
    weights = np.asarray(config.weights) if config.weights is not None else None
    if config.method == "vote":
        fused = majority_vote(source_labels, n_classes=n_classes, weights=weights)
    elif config.method == "weighted":
        fused, used_weights = weighted_vote(source_labels, n_classes=n_classes, weights=weights)
        method_details["weights"] = dict(zip(source_names, used_weights.tolist(), strict=True))
    elif config.method == "mean":
        fused = mean_probs(np.stack(probs_stack, axis=1), weights=weights)
    else:
        result = dawid_skene(
            source_labels,
            n_classes=n_classes,
            max_iter=config.max_iter,
            tol=config.tol,
            smoothing=config.smoothing,
        )
        fused, estimated = result.probs, result.accuracies
        method_details.update(
            n_iter=result.n_iter,
            converged=result.converged,
            log_likelihood=result.log_likelihood,
            class_prior=dict(zip(label_names, result.class_prior.tolist(), strict=True)),
            confusions={
                name: {
                    label_names[j]: dict(zip(label_names, row.tolist(), strict=True))
                    for j, row in enumerate(matrix)
                }
                for name, matrix in zip(source_names, result.confusions, strict=True)
            },
        )
    fused_labels = fused.argmax(axis=1)
    has_gold = first.gold >= 0
    sources_report = {}
    for s, name in enumerate(source_names):
        column = source_labels[:, s]
        voted = column >= 0
        entry: dict[str, Any] = {
            "file": str(inputs[s]) if s < len(inputs) else config.labeling_functions,
            "coverage": float(voted.mean()) if n else 0.0,
            "agreement_with_fused": float((column[voted] == fused_labels[voted]).mean())
            if voted.any()
            else None,
        }
        entry["estimated_accuracy"] = (
            float(estimated[s]) if estimated is not None else entry["agreement_with_fused"]
        )
        gold_rows = voted & has_gold
        if gold_rows.any():
            entry["gold_accuracy"] = float((column[gold_rows] == first.gold[gold_rows]).mean())
        sources_report[name] = entry
    counts = _counts(fused_labels, label_names)
    report: dict[str, Any] = {
        "method": config.method,
        "inputs": [str(p) for p in inputs],
        "output": str(out_path),
        "n": n,
        "labels": label_names,
        "sources": sources_report,
        "counts": counts,
        "details": method_details,
        "config": asdict(config),
    }
    if has_gold.any():
        report["gold"] = {
            "field": config.gold_field,
            "n_with_gold": int(has_gold.sum()),
            "fused_accuracy": float((fused_labels[has_gold] == first.gold[has_gold]).mean()),
        }
    report_path = out_path.with_name(out_path.name + ".report.json")
    report["report"] = str(report_path)

    prompt_hash = hashlib.sha1(
        json.dumps([config.method, source_names, config.weights], sort_keys=True).encode()
    ).hexdigest()[:16]

    def fused_records() -> Iterator[dict[str, Any]]:
        for i, (_, record) in enumerate(_iter_records(inputs[0])):
            row_probs = fused[i]
            out_record = dict(record)
            out_record["id"] = first.ids[i]
            out_record.update(label_fields(row_probs, label_names))
            out_record["label"] = label_names[int(fused_labels[i])]
            out_record.update(
                model=f"aggregate:{config.method}",
                prompt_hash=prompt_hash,
                sources={
                    name: (label_names[int(source_labels[i, s])] if source_labels[i, s] >= 0 else None)
                    for s, name in enumerate(source_names)
                },
            )
            yield out_record

    outputs = PendingOutputs()
    try:
        written = _write_jsonl(outputs.tmp(out_path), fused_records())
        if written != n:
            raise ConfigError(f"{inputs[0]} changed while it was being aggregated; rerun")
        report["plots"] = []
        if config.plots:
            png = out_path.with_name(out_path.name + ".sources.png")
            plots.plot_source_accuracy(
                sources_report, outputs.tmp(png), title=f"llmst aggregate --method {config.method}"
            )
            report["plots"].append(str(png))
        _write_json(outputs.tmp(report_path), report)
        outputs.commit()
    finally:
        outputs.discard()
    return report


def _precision_report(result, config: FilterConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report's guarantee section and precision-coverage curve for a certified precision threshold."""
    guarantee = {
        "type": "precision",
        "guaranteed_precision": config.target_precision,
        "probability": 1 - config.delta,
        "estimated_precision": result.estimated_precision,
        "precision_lower_bound": result.precision_lower_bound,
        "calibration_coverage": result.coverage,
    }
    curve = {
        "points": [
            {"coverage": p["coverage"], "precision": p["precision"], "lower_bound": p["lower_bound"]}
            for p in result.curve
        ],
        "operating_point": {"coverage": result.coverage, "precision": result.estimated_precision},
        "target": config.target_precision,
    }
    return guarantee, curve
