"""Registry entries of the selectors that learn from data: conformal (certified precision, LAC/APS sets)
and learned (a correctness model), both from a gold calibration set, and student-oof (out-of-fold students).

A calibration row is correct when its pseudo-label (the argmax of its probs) equals its gold label
(`scores.pseudo_label_correct`), as in `certify_precision` and the report's gold section.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from llmst.errors import ConfigError
from llmst.filter.agreement import agreement_counts
from llmst.filter.conformal import (
    CalibrationTooSmall,
    PrecisionThreshold,
    certify_precision,
    conformal_quantile,
    nonconformity_scores,
    precision_threshold,
    prediction_sets,
    select_singletons,
)
from llmst.filter.learned import correctness_features, fit_correctness_model, predict_correctness
from llmst.filter.registry import FilterData, Selection, register_selector, source_matrix
from llmst.filter.scores import label_quality_scores, pseudo_label_correct
from llmst.metrics import accuracy_coverage
from llmst.records import Labeled, record_text

if TYPE_CHECKING:
    from llmst.filter.config import FilterConfig


def _calibration(data: FilterData, config: FilterConfig) -> tuple[Labeled, np.ndarray, dict[str, Any]]:
    cal = data.calibration
    if cal is None:  # FilterConfig refuses conformal/learned without --calibration; a Python caller may not
        raise ConfigError(f"--method {config.method} needs a gold-labeled calibration set")
    info = {"file": config.calibration, "rows": len(cal), "skipped_without_gold": data.calibration_skipped}
    return cal, pseudo_label_correct(cal.probs, cal.gold), info


def _too_small(err: CalibrationTooSmall, what: str) -> ConfigError:
    return ConfigError(
        f"{err} ({what})", hint="label more calibration rows, lower --target-precision, or raise --delta"
    )


def _not_certified(result: PrecisionThreshold, config: FilterConfig, what: str) -> ConfigError:
    return ConfigError(
        f"no threshold certifies precision >= {config.target_precision} with probability >= {1 - config.delta:g} "
        f"on {result.n_calibration} {what} (best lower bound {result.best_lower_bound:.3f})",
        hint="add gold calibration rows, lower --target-precision, or raise --delta",
    )


def precision_report(
    result: PrecisionThreshold, config: FilterConfig
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report's guarantee section and precision-coverage curve of a certified precision threshold."""
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


@register_selector("conformal")
def conformal_selector(data: FilterData, config: FilterConfig) -> Selection:
    cal, correct, info = _calibration(data, config)
    pool = data.pool
    details: dict[str, Any] = {"score": config.score, "calibration": info}
    if config.conformal == "precision":
        what = "calibration rows"
        try:
            result = certify_precision(
                cal.probs,
                cal.gold,
                target_precision=config.target_precision,
                delta=config.delta,
                score=config.score,
                method=config.test,
            )
        except CalibrationTooSmall as err:
            raise _too_small(err, what) from err
        if not result.certified:
            raise _not_certified(result, config, what)
        mask = label_quality_scores(pool.probs, score=config.score) >= result.threshold
        shown = -result.threshold if config.score == "entropy" else result.threshold
        rule = f"entropy <= {shown:.6g}" if config.score == "entropy" else f"{config.score} >= {shown:.6g}"
        details.update(
            mode="precision",
            test=config.test,
            threshold=shown,
            rule=rule,
            certification=result.to_json() | {"curve": None},
        )
        guarantee, curve = precision_report(result, config)
        return Selection(mask, details, guarantee=guarantee, calibration_curve=curve)
    sets_args = {
        "cal_probs": cal.probs,
        "cal_labels": cal.gold,
        "coverage": config.coverage,
        "method": config.conformal,
    }
    try:
        mask = select_singletons(pool.probs, **sets_args)
        sets = prediction_sets(pool.probs, **sets_args)
        cal_sets = prediction_sets(cal.probs, **sets_args)
        qhat = conformal_quantile(
            nonconformity_scores(cal.probs, cal.gold, method=config.conformal), coverage=config.coverage
        )
    except CalibrationTooSmall as err:
        raise ConfigError(str(err), hint="label more calibration rows or lower --coverage") from err
    cal_single = cal_sets.sum(axis=1) == 1
    estimated = float(correct[cal_single].mean()) if cal_single.any() else None
    details.update(
        mode=config.conformal,
        quantile=qhat,
        mean_set_size=float(sets.sum(axis=1).mean()),
        empty_sets=int((sets.sum(axis=1) == 0).sum()),
        calibration_coverage=float(cal_sets[np.arange(len(cal)), cal.gold].mean()),
        calibration_singletons=int(cal_single.sum()),
    )
    has_gold = pool.gold >= 0
    if has_gold.any():  # held-out rows: the guarantee is about these, not the rows the quantile was fit on
        details["pool_coverage"] = float(sets[np.flatnonzero(has_gold), pool.gold[has_gold]].mean())
    guarantee = {
        "type": "coverage",
        "guaranteed_coverage": config.coverage,
        "estimated_precision": estimated,
        "note": "sets hold the true label with probability >= coverage; kept rows are the singleton sets",
    }
    curve = None
    if estimated is not None:
        points = accuracy_coverage(label_quality_scores(cal.probs, score=config.score), correct, points=50)
        curve = {
            "points": [{"coverage": p["coverage"], "precision": p["accuracy"]} for p in points],
            "operating_point": {"coverage": float(cal_single.mean()), "precision": estimated},
        }
    return Selection(mask, details, guarantee=guarantee, calibration_curve=curve)


def _learned_fields(config: FilterConfig) -> list[str]:
    fields = [config.sources_field, *(config.text_fields or ["text"])]
    return fields + ([config.embedding_field] if config.embedding_field else [])


def _lengths(data: Labeled, config: FilterConfig) -> np.ndarray | None:
    """Text length of each row, or None when a row has no text (an error when --text-fields was given)."""
    fields = config.text_fields or ["text"]
    lengths = []
    for i in range(len(data)):
        text = record_text({name: data.columns[name][i] for name in fields}, fields)
        if text is None:
            if config.text_fields:
                raise ConfigError(f"{data.where(i)}: no text in --text-fields {fields}")
            return None
        lengths.append(float(len(text)))
    return np.asarray(lengths)


def _embeddings(data: Labeled, name: str | None) -> np.ndarray | None:
    if name is None:
        return None
    rows: list[list[float]] = []
    for i, vector in enumerate(data.columns[name]):
        if not isinstance(vector, list) or not vector:
            raise ConfigError(
                f"{data.where(i)}: no embedding vector in field '{name}'",
                hint="every record needs a list of numbers there, or drop --embedding-field",
            )
        if rows and len(vector) != len(rows[0]):
            raise ConfigError(f"{data.where(i)}: embedding has {len(vector)} values, not {len(rows[0])}")
        try:
            rows.append([float(x) for x in vector])
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{data.where(i)}: field '{name}' must hold numbers") from err
    return np.asarray(rows)


def _agreement(data: Labeled, sources_field: str, source_names: list[str]) -> np.ndarray | None:
    """Fraction of the sources `source_names` that agree with each row's label; None without sources."""
    values = data.columns.get(sources_field) or []
    if not source_names or not any(isinstance(v, dict) and v for v in values):
        return None
    matrix, names = source_matrix(data, sources_field)
    columns = np.full((len(data), len(source_names)), -1, dtype=np.int64)
    for j, name in enumerate(source_names):
        if name in names:
            columns[:, j] = matrix[:, names.index(name)]
    agree, voters = agreement_counts(columns, n_classes=len(data.names), labels=data.labels)
    return np.where(voters > 0, agree / np.maximum(voters, 1), 0.0)


@register_selector("learned", fields=_learned_fields)
def learned_selector(data: FilterData, config: FilterConfig) -> Selection:
    cal, correct, info = _calibration(data, config)
    pool = data.pool
    _, source_names = source_matrix(pool, config.sources_field)
    pool_agree = _agreement(pool, config.sources_field, source_names)
    cal_agree = _agreement(cal, config.sources_field, source_names) if pool_agree is not None else None
    if cal_agree is None:
        pool_agree = None  # the calibration rows were not aggregated: agreement is unusable
    pool_lengths, cal_lengths = _lengths(pool, config), _lengths(cal, config)
    use_lengths = pool_lengths is not None and cal_lengths is not None
    pool_embeddings, cal_embeddings = (
        _embeddings(pool, config.embedding_field),
        _embeddings(cal, config.embedding_field),
    )
    pool_features = correctness_features(
        pool.probs,
        agreement=pool_agree,
        lengths=pool_lengths if use_lengths else None,
        embeddings=pool_embeddings,
    )
    cal_features = correctness_features(
        cal.probs,
        agreement=cal_agree,
        lengths=cal_lengths if use_lengths else None,
        embeddings=cal_embeddings,
    )
    used = ["confidence", "margin", "entropy"] + ["agreement"] * (pool_agree is not None)
    used += ["log_length"] * use_lengths + ["embedding"] * (pool_embeddings is not None)
    details: dict[str, Any] = {"score": "P(correct)", "features": used, "calibration": info}
    guarantee: dict[str, Any]
    curve = None
    if config.target_precision is None:
        threshold = 0.9 if config.threshold is None else config.threshold
        model = fit_correctness_model(cal_features, correct, seed=config.seed)
        predicted = predict_correctness(model, pool_features)
        mask = predicted >= threshold
        details.update(threshold=threshold, rule=f"P(correct) >= {threshold}")
        guarantee = {
            "type": "none",
            "estimated_precision_on_kept": float(predicted[mask].mean()) if mask.any() else None,
        }
    else:  # fit on one half of the calibration rows, certify a threshold on the other half
        order = np.random.default_rng(config.seed).permutation(len(correct))
        fit_rows, test_rows = order[: len(order) // 2], order[len(order) // 2 :]
        model = fit_correctness_model(cal_features[fit_rows], correct[fit_rows], seed=config.seed)
        what = "held-out half of the calibration rows"
        try:
            result = precision_threshold(
                predict_correctness(model, cal_features[test_rows]),
                correct[test_rows],
                target_precision=config.target_precision,
                delta=config.delta,
                method=config.test,
            )
        except CalibrationTooSmall as err:
            raise _too_small(err, what) from err
        if not result.certified:
            raise _not_certified(result, config, what)
        predicted = predict_correctness(model, pool_features)
        mask = predicted >= result.threshold
        details.update(
            threshold=result.threshold,
            rule=f"P(correct) >= {result.threshold:.6g}",
            fit_rows=len(fit_rows),
            certify_rows=len(test_rows),
        )
        guarantee, curve = precision_report(result, config)
    named = [name for name in used if name != "embedding"]
    coefficients = model[-1].coef_[0][: len(named)]
    details["coefficients"] = {name: float(c) for name, c in zip(named, coefficients, strict=True)}
    return Selection(mask, details, ranking=predicted, guarantee=guarantee, calibration_curve=curve)


@register_selector("student-oof")
def student_oof_selector(data: FilterData, config: FilterConfig) -> Selection:
    """Drop rows that cleanlab flags from out-of-fold student probabilities (confident learning)."""
    from llmst.train.config import TrainConfig
    from llmst.train.oof import find_label_issues, out_of_fold_probs

    pool = data.pool
    train_config = TrainConfig(
        student=config.student,
        epochs=config.student_epochs,
        labels=pool.names,
        text_fields=config.text_fields or ["text"],
        seed=config.seed,
    )
    oof = out_of_fold_probs(pool.path, pool.labels, train_config, folds=config.folds)
    issues = find_label_issues(pool.labels, oof)
    details = {
        "score": "out-of-fold self-confidence",
        "student": config.student,
        "folds": config.folds,
        "n_label_issues": int(issues.sum()),
        "oof_agreement": float((oof.argmax(axis=1) == pool.labels).mean()),
    }
    return Selection(~issues, details, ranking=oof[np.arange(len(oof)), pool.labels])
