"""`llmst filter`: the stage. Reads labeled records into arrays (`records.read_labeled`), runs the selector
registered for `config.method` (`filter.registry`), writes the kept records plus a report and plots.

Nothing is written until every input has been read and checked and the selection is computed; outputs go
to temporary files renamed into place together at the end (`records.PendingOutputs`), so an error never
leaves a half-written file behind. Output names: `OUT`, `OUT.report.json`, PNG plots `OUT.<name>.png`, and
last the signature marker `OUT.signature.json` (`llmst.stage`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from llmst import stage
from llmst.errors import ConfigError
from llmst.filter import plots
from llmst.filter.config import FilterConfig, filter_signature
from llmst.filter.registry import FilterData, Selection, get_selector
from llmst.filter.scores import label_quality_scores, pseudo_label_correct
from llmst.label.calibrate import calibration_identity, describe_identity
from llmst.metrics import accuracy_coverage, label_counts, label_shares
from llmst.readers import iter_checked
from llmst.records import Labeled, PendingOutputs, check_output, read_labeled

# A selection that keeps at least this share of the rows is reported as a near no-op.
NO_OP_SHARE = 0.95


def _read_calibration(config: FilterConfig, pool: Labeled, fields: list[str]) -> tuple[Labeled, int]:
    """Calibration rows with a usable gold label (label columns in the pool's order), and how many had none."""
    assert config.calibration is not None
    cal = read_labeled(config.calibration, gold_field=config.gold_field, fields=fields)
    if set(cal.names) != set(pool.names):
        raise ConfigError(
            f"the calibration file's labels {sorted(cal.names)} differ from {sorted(pool.names)}",
            hint="label the calibration rows with the same task (and labeler) as LABELED",
        )
    _check_same_calibration(pool, cal, config.calibration)
    cal = cal.with_names(pool.names)
    has_gold = cal.gold >= 0
    if not has_gold.any():
        raise ConfigError(
            f"no calibration row has a usable gold label in field '{config.gold_field}'",
            hint=f"labels are {pool.names}; gold may be a label name or an index; use --gold-field",
        )
    return cal.subset(np.flatnonzero(has_gold)), int((~has_gold).sum())


CALIBRATION_FIELDS = ["calibration", "calibration_bias"]


def _calibrations(data: Labeled) -> set[tuple]:
    """The fitted calibrations the records of `data` say they were scored with (none when they do not say)."""
    pairs = zip(*(data.columns[name] for name in CALIBRATION_FIELDS), strict=True)
    found = {calibration_identity({"calibration": m, "calibration_bias": b}) for m, b in pairs}
    return found - {None}


def _check_same_calibration(pool: Labeled, cal: Labeled, cal_path: str) -> None:
    """Refuse a gold calibration file scored by another calibration than the pool: the guarantee (and the
    learned filter) assume both were scored by the same function."""
    ours, theirs = _calibrations(pool), _calibrations(cal)
    if ours and theirs and ours != theirs:

        def describe(found: set[tuple]) -> str:
            return "; ".join(sorted(describe_identity(identity) for identity in found))

        raise ConfigError(
            f"{cal_path} was calibrated differently from LABELED ({describe(theirs)} vs {describe(ours)}): "
            "its rows are not exchangeable with the pool's",
            hint=f"relabel it with the pool's calibration: llmst label ... --calibration-from {pool.path}",
        )


def _warnings(pool: Labeled, mask: np.ndarray, config: FilterConfig) -> list[str]:
    kept = float(mask.mean()) if len(mask) else 0.0
    if not mask.any():
        return ["kept no rows: loosen the selection (e.g. a lower --threshold or a larger --fraction)"]
    if kept >= NO_OP_SHARE and len(mask) >= 20:
        return [
            f"kept {kept:.1%} of the rows: --method {config.method} with these options barely selects "
            "(e.g. give a higher --threshold or a smaller --fraction)"
        ]
    return []


def _gold_section(pool: Labeled, mask: np.ndarray, ranking: np.ndarray, config: FilterConfig):
    """Precision of the kept rows against LABELED's own gold labels (when it has any) and its curve."""
    has_gold = pool.gold >= 0
    if not has_gold.any():
        return None, None
    correct = pseudo_label_correct(pool.probs[has_gold], pool.gold[has_gold])
    kept = mask[has_gold]
    section = {
        "field": config.gold_field,
        "n_with_gold": int(has_gold.sum()),
        "accuracy_all": float(correct.mean()),
        "n_kept_with_gold": int(kept.sum()),
        "precision_kept": float(correct[kept].mean()) if kept.any() else None,
    }
    points = accuracy_coverage(ranking[has_gold], correct.astype(float), points=50)
    section["curve"] = points
    curve = {
        "points": [{"coverage": p["coverage"], "precision": p["accuracy"]} for p in points],
        "operating_point": {"coverage": float(kept.mean()), "precision": section["precision_kept"]},
    }
    return section, curve


def _report(labeled: str | Path, out: Path, config: FilterConfig, pool: Labeled, selection: Selection):
    mask = selection.mask
    ranking = selection.ranking
    if ranking is None:
        ranking = label_quality_scores(pool.probs, score=config.score)
    before, after = label_counts(pool.labels, pool.names), label_counts(pool.labels[mask], pool.names)
    report: dict[str, Any] = {
        "method": config.method,
        "input": str(labeled),
        "output": str(out),
        "n_input": len(pool),
        "n_kept": int(mask.sum()),
        "coverage": float(mask.mean()) if len(mask) else 0.0,
        "labels": pool.names,
        "counts_before": before,
        "counts_after": after,
        "shares_before": label_shares(before),
        "shares_after": label_shares(after),
        "details": selection.details,
        "warnings": _warnings(pool, mask, config),
        "config": asdict(config),
    }
    if selection.guarantee is not None:
        report["guarantee"] = selection.guarantee
    gold, pool_curve = _gold_section(pool, mask, ranking, config)
    if gold is not None:
        report["gold"] = gold
    if selection.calibration_curve is not None:
        report["calibration_curve"] = selection.calibration_curve
    return report, pool_curve


def run_filter(labeled: str | Path, out: str | Path, config: FilterConfig) -> dict[str, Any]:
    """Select records of `labeled` into `out` (JSONL) with `config.method`; write `OUT.report.json`, plots
    and, last, the signature marker. Returns the report."""
    out_path = Path(out)
    check_output(out_path, [labeled, config.calibration])
    spec = get_selector(config.method)
    fields = list(dict.fromkeys(spec.fields(config) + (CALIBRATION_FIELDS if config.calibration else [])))
    pool = read_labeled(labeled, gold_field=config.gold_field, fields=fields)
    data = FilterData(pool)
    if config.calibration:
        data.calibration, data.calibration_skipped = _read_calibration(config, pool, fields)
    try:
        selection = spec.fn(data, config)
    except ConfigError:
        raise
    except ValueError as err:  # a selector refused its inputs: a user-fixable condition
        raise ConfigError(str(err)) from err
    report, pool_curve = _report(labeled, out_path, config, pool, selection)
    report_path = out_path.with_name(out_path.name + ".report.json")
    report["report"] = str(report_path)
    with PendingOutputs() as outputs:
        keep = set(np.flatnonzero(selection.mask).tolist())
        kept = (record for index, (_, record) in enumerate(iter_checked(labeled)) if index in keep)
        if outputs.write_jsonl(out_path, kept) != len(keep):
            raise ConfigError(f"{labeled} changed while it was being filtered; rerun")
        report["plots"] = _plots(outputs, out_path, config, report, pool_curve) if config.plots else []
        outputs.write_json(report_path, report)
        stage.clear_marker(out_path)  # from here until the new marker, OUT is not known to be current
        outputs.commit()
    stage.write_marker(out_path, filter_signature(labeled, config))
    return report


def _plots(outputs: PendingOutputs, out: Path, config: FilterConfig, report: dict, pool_curve) -> list[str]:
    written = []
    counts_png = out.with_name(out.name + ".counts.png")
    plots.plot_class_counts(
        report["counts_before"],
        report["counts_after"],
        outputs.tmp(counts_png),
        target=report["details"].get("target_shares"),
        title=f"llmst filter --method {config.method}",
    )
    written.append(str(counts_png))
    calibration_curve = report.get("calibration_curve")
    if pool_curve is not None or calibration_curve is not None:
        curve_png = out.with_name(out.name + ".precision_coverage.png")
        plots.plot_precision_coverage(
            outputs.tmp(curve_png),
            pool=pool_curve,
            calibration=calibration_curve,
            title=f"Precision vs coverage ({config.method})",
        )
        written.append(str(curve_png))
    return written


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """The report without its long curves and config: what the CLI prints (filter and aggregate)."""
    skip = {"curve", "calibration_curve", "config", "points"}

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in skip}
        return value

    return strip(report)
