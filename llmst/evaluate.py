"""`llmst evaluate`: score labeled records against gold labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmst.errors import ConfigError
from llmst.metrics import (
    accuracy_coverage,
    expected_calibration_error,
    plot_accuracy_coverage,
    plot_reliability,
    reliability_bins,
)
from llmst.records import Reject, label_index, read_records, write_json_atomic


def _gold_name(value: Any, names: list[str]) -> str | None:
    index = label_index(value, names)
    return names[index] if index >= 0 else None


def evaluate_records(
    records: list[dict[str, Any]], *, gold_field: str = "gold", bins: int = 10
) -> dict[str, Any]:
    """Metrics of labeled records (each with `label`, `probs`, `confidence`) against `gold_field`."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    if not records:
        raise ConfigError("no labeled records to evaluate")
    if "probs" not in records[0] or "label" not in records[0]:
        raise ConfigError("records have no 'label'/'probs' fields: is this the output of `llmst label`?")
    names = list(records[0]["probs"])
    gold, pred, confidence = [], [], []
    missing = unknown = 0
    for record in records:
        if gold_field not in record:
            missing += 1
            continue
        name = _gold_name(record[gold_field], names)
        if name is None:
            unknown += 1
            continue
        gold.append(name)
        pred.append(record["label"])
        confidence.append(float(record.get("confidence", max(record["probs"].values()))))
    if not gold:
        raise ConfigError(
            f"no record has a usable gold label in field '{gold_field}'",
            hint=f"labels are {names}; gold may be a label name or an index; use --gold-field",
        )
    conf = np.asarray(confidence)
    correct = np.asarray([g == p for g, p in zip(gold, pred, strict=True)], dtype=np.float64)
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, pred, labels=names, zero_division=0
    )
    return {
        "n": len(gold),
        "skipped_missing_gold": missing,
        "skipped_unknown_gold": unknown,
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=names, average="macro", zero_division=0)),
        "ece": expected_calibration_error(conf, correct, bins),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "predicted": int(sum(p == name for p in pred)),
            }
            for i, name in enumerate(names)
        },
        "reliability": reliability_bins(conf, correct, bins),
        "accuracy_coverage": accuracy_coverage(conf, correct),
    }


def evaluate_file(
    path: str | Path, *, gold_field: str = "gold", report_dir: str | Path | None = None, bins: int = 10
) -> dict[str, Any]:
    """Evaluate a labeled JSONL file; with `report_dir`, also write report.json and two PNG plots."""
    records = []
    for item in read_records(path):
        if isinstance(item, Reject):
            raise ConfigError(f"{path}, line {item.line}: {item.reason}")
        records.append(item.record)
    report = evaluate_records(records, gold_field=gold_field, bins=bins)
    report["file"] = str(path)
    if report_dir is not None:
        folder = Path(report_dir)
        folder.mkdir(parents=True, exist_ok=True)
        plot_reliability(report["reliability"], folder / "reliability.png")
        plot_accuracy_coverage(report["accuracy_coverage"], folder / "accuracy_coverage.png")
        write_json_atomic(folder / "report.json", report)
        report["plots"] = [str(folder / "reliability.png"), str(folder / "accuracy_coverage.png")]
    return report
