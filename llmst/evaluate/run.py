"""`llmst evaluate`: accuracy, macro-F1, the majority-class baseline, per-class P/R, ECE and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmst.errors import ConfigError
from llmst.evaluate.config import EvaluateConfig
from llmst.metrics import (
    accuracy_coverage,
    expected_calibration_error,
    majority_baseline,
    plot_accuracy_coverage,
    plot_reliability,
    reliability_bins,
)
from llmst.records import Labeled, read_labeled, write_json_atomic


def evaluate_labeled(data: Labeled, *, gold_field: str = "gold", bins: int = 10) -> dict[str, Any]:
    """Metrics of labeled rows (`records.read_labeled` with `gold_field`) against their gold labels.

    The prediction of a row is its pseudo-label (the argmax of its probs, which its `label` equals) and its
    confidence the top probability. Rows without a usable gold label are skipped and counted. The
    `majority_baseline` is the accuracy of always answering the most frequent gold class of the scored rows.
    """
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    usable = data.gold >= 0
    if not usable.any():
        first = int(np.argmax(~data.gold_given)) if (~data.gold_given).any() else 0
        problem = "has no field" if not data.gold_given[first] else "has no known label in field"
        raise ConfigError(
            f"no record has a usable gold label in field '{gold_field}' ({data.where(first)} {problem} "
            f"'{gold_field}')",
            hint=f"labels are {data.names}; gold may be a label name or an index; use --gold-field",
        )
    names = data.names
    gold, pred = data.gold[usable], data.labels[usable]
    conf = data.probs[usable].max(axis=1)
    correct = (gold == pred).astype(np.float64)
    indexes = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, pred, labels=indexes, zero_division=0
    )
    majority, baseline = majority_baseline(gold, len(names))
    return {
        "n": int(usable.sum()),
        "skipped_missing_gold": int((~data.gold_given).sum()),
        "skipped_unknown_gold": int((data.gold_given & ~usable).sum()),
        "accuracy": float(correct.mean()),
        "macro_f1": float(f1_score(gold, pred, labels=indexes, average="macro", zero_division=0)),
        "majority_baseline": baseline,
        "majority_class": names[majority],
        "ece": expected_calibration_error(conf, correct, bins),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "predicted": int((pred == i).sum()),
            }
            for i, name in enumerate(names)
        },
        "reliability": reliability_bins(conf, correct, bins),
        "accuracy_coverage": accuracy_coverage(conf, correct),
    }


def evaluate_file(path: str | Path, config: EvaluateConfig | None = None, **options: Any) -> dict[str, Any]:
    """Evaluate a labeled file (every record needs `label` and `probs`; a record without them is a
    `ConfigError` naming its line and the field). `options` are `EvaluateConfig` fields, for short calls
    (`evaluate_file(path, gold_field="gold")`); with `report_dir`, also write report.json and two PNGs."""
    if config is None:
        config = EvaluateConfig(**options)
    elif options:
        raise TypeError("pass either config or options, not both")
    data = read_labeled(path, gold_field=config.gold_field, require_label=True)
    report = evaluate_labeled(data, gold_field=config.gold_field, bins=config.bins)
    report["file"] = str(path)
    if config.report_dir is not None:
        folder = Path(config.report_dir)
        folder.mkdir(parents=True, exist_ok=True)
        plot_reliability(report["reliability"], folder / "reliability.png")
        plot_accuracy_coverage(report["accuracy_coverage"], folder / "accuracy_coverage.png")
        report["plots"] = [str(folder / "reliability.png"), str(folder / "accuracy_coverage.png")]
        write_json_atomic(folder / "report.json", report)
    return report
