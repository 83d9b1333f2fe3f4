"""`llmst aggregate`: the stage. Reads labeled files of one corpus into arrays (`records.read_labeled`),
joins them on `id`, adds labeling functions as sources, fuses them with a label model and writes fused
records, a report, plots and, last, the signature marker (outputs atomically, as every stage)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from llmst import stage
from llmst.aggregate import plots
from llmst.aggregate.config import AggregateConfig, aggregate_signature
from llmst.aggregate.label_models import dawid_skene, majority_vote, mean_probs, weighted_vote
from llmst.aggregate.labeling import apply_labeling_functions, load_labeling_functions
from llmst.errors import ConfigError
from llmst.filter.stage import summarize
from llmst.metrics import label_counts
from llmst.readers import iter_checked
from llmst.records import Labeled, PendingOutputs, check_output, label_fields, read_labeled

__all__ = ["run_aggregate", "summarize"]


def _source_name(path: str | Path) -> str:
    name = Path(str(path)).name
    for suffix in (".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".parquet"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_join(inputs: list[str | Path], files: list[Labeled]) -> list[dict[str, int]]:
    """Row position of every id in each file; the files must hold the same ids and labels."""
    for path, data in zip(inputs, files, strict=True):
        if data.missing_ids:
            raise ConfigError(
                f"{data.missing_ids} records of {path} have no 'id' (first: {data.where(0)})",
                hint="records are joined on id: label the corpus with an --id-field (or keep llmst's ids)",
            )
    first = files[0]
    for path, data in zip(inputs[1:], files[1:], strict=True):
        if set(data.names) != set(first.names):
            raise ConfigError(
                f"label sets differ: {inputs[0]} has {sorted(first.names)}, {path} has {sorted(data.names)}",
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
    return position


def _labeling_functions(config: AggregateConfig, first: Labeled) -> tuple[list[str], np.ndarray]:
    """Names and votes (N, L) of the user's labeling functions on the first file's records."""
    try:
        functions = load_labeling_functions(config.labeling_functions)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from err
    except Exception as err:  # the user's file failed to import: one line, their error
        raise ConfigError(
            f"could not load labeling functions from {config.labeling_functions}: {type(err).__name__}: {err}"
        ) from err
    assert first.records is not None
    try:
        votes = apply_labeling_functions(first.records, functions, first.names)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return [f"lf:{name}" for name in functions], votes


def _fuse(config: AggregateConfig, source_labels, probs_stack, source_names, names):
    """Fused probs (N, K), per-source estimated accuracies (or None) and the method's report details."""
    n_classes = len(names)
    weights = np.asarray(config.weights) if config.weights is not None else None
    if config.method == "vote":
        return majority_vote(source_labels, n_classes=n_classes, weights=weights), None, {}
    if config.method == "weighted":
        fused, used = weighted_vote(source_labels, n_classes=n_classes, weights=weights)
        return fused, None, {"weights": dict(zip(source_names, used.tolist(), strict=True))}
    if config.method == "mean":
        return mean_probs(np.stack(probs_stack, axis=1), weights=weights), None, {}
    result = dawid_skene(
        source_labels,
        n_classes=n_classes,
        max_iter=config.max_iter,
        tol=config.tol,
        smoothing=config.smoothing,
    )
    details = {
        "n_iter": result.n_iter,
        "converged": result.converged,
        "log_likelihood": result.log_likelihood,
        "class_prior": dict(zip(names, result.class_prior.tolist(), strict=True)),
        "confusions": {
            source: {names[j]: dict(zip(names, row.tolist(), strict=True)) for j, row in enumerate(matrix)}
            for source, matrix in zip(source_names, result.confusions, strict=True)
        },
    }
    return result.probs, result.accuracies, details


def _fused_calibration(inputs: list[str | Path], names: list[str], method: str) -> dict[str, Any]:
    """Fused probs are not any one source's: records say `aggregate:<method>` and carry every source's
    fitted biases (`source/label`), so `filter --calibration` compares a gold file with the whole fusion."""
    biases: dict[str, float] = {}
    for path, name in zip(inputs, names, strict=True):
        first = next(iter_checked(path), (0, {}))[1]
        for label, value in (first.get("calibration_bias") or {}).items():
            biases[f"{name}/{label}"] = float(value)
    return {"calibration": f"aggregate:{method}", "calibration_bias": biases}


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
    check_output(out_path, inputs)
    names = list(config.names) if config.names else [_source_name(p) for p in inputs]
    if len(names) != len(inputs):
        raise ConfigError(f"--names gives {len(names)} names for {len(inputs)} files")
    if len(set(names)) != len(names):
        names = [f"{name}#{i}" for i, name in enumerate(names)]

    files = [
        read_labeled(
            path, gold_field=config.gold_field, keep_records=i == 0 and bool(config.labeling_functions)
        )
        for i, path in enumerate(inputs)
    ]
    position = _check_join(inputs, files)
    first = files[0]
    label_names = first.names
    n, n_classes = len(first), len(label_names)
    columns, probs_stack = [], []
    for data, index in zip(files, position, strict=True):
        aligned = data.subset(np.asarray([index[rid] for rid in first.ids], dtype=np.int64)).with_names(
            label_names
        )
        probs_stack.append(aligned.probs)
        columns.append(aligned.labels)
    source_names = list(names)
    source_labels = np.stack(columns, axis=1)
    if config.labeling_functions:
        lf_names, lf_labels = _labeling_functions(config, first)
        source_labels = np.concatenate([source_labels, lf_labels], axis=1)
        source_names += lf_names
        eye = np.eye(n_classes)
        for column in lf_labels.T:
            probs_stack.append(np.where(column[:, None] >= 0, eye[np.maximum(column, 0)], np.nan))
    if config.weights is not None and len(config.weights) != len(source_names):
        raise ConfigError(
            f"--weights gives {len(config.weights)} values for {len(source_names)} sources {source_names}"
        )
    try:
        fused, estimated, method_details = _fuse(
            config, source_labels, probs_stack, source_names, label_names
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err
    fused_labels = fused.argmax(axis=1)
    report = _report(inputs, out_path, config, first, source_names, source_labels, fused_labels, estimated)
    report["details"] = method_details
    report_path = out_path.with_name(out_path.name + ".report.json")
    report["report"] = str(report_path)
    prompt_hash = hashlib.sha1(
        json.dumps([config.method, source_names, config.weights], sort_keys=True).encode()
    ).hexdigest()[:16]

    calibration = _fused_calibration(inputs, names, config.method)

    def fused_records() -> Iterator[dict[str, Any]]:
        for i, (_, record) in enumerate(iter_checked(inputs[0])):
            out_record = dict(record)
            out_record["id"] = first.ids[i]
            out_record.update(label_fields(fused[i], label_names))
            out_record.update(calibration)
            out_record.update(
                model=f"aggregate:{config.method}",
                prompt_hash=prompt_hash,
                sources={
                    name: (label_names[int(source_labels[i, s])] if source_labels[i, s] >= 0 else None)
                    for s, name in enumerate(source_names)
                },
            )
            yield out_record

    with PendingOutputs() as outputs:
        if outputs.write_jsonl(out_path, fused_records()) != n:
            raise ConfigError(f"{inputs[0]} changed while it was being aggregated; rerun")
        report["plots"] = []
        if config.plots:
            png = out_path.with_name(out_path.name + ".sources.png")
            plots.plot_source_accuracy(
                report["sources"], outputs.tmp(png), title=f"llmst aggregate --method {config.method}"
            )
            report["plots"].append(str(png))
        outputs.write_json(report_path, report)
        stage.clear_marker(out_path)  # from here until the new marker, OUT is not known to be current
        outputs.commit()
    stage.write_marker(out_path, aggregate_signature(inputs, config))
    return report


def _report(inputs, out_path, config, first, source_names, source_labels, fused_labels, estimated):
    n = len(first)
    has_gold = first.gold >= 0
    sources: dict[str, Any] = {}
    for s, name in enumerate(source_names):
        column = source_labels[:, s]
        voted = column >= 0
        agreement = float((column[voted] == fused_labels[voted]).mean()) if voted.any() else None
        entry: dict[str, Any] = {
            "file": str(inputs[s]) if s < len(inputs) else config.labeling_functions,
            "coverage": float(voted.mean()) if n else 0.0,
            "agreement_with_fused": agreement,
            "estimated_accuracy": float(estimated[s]) if estimated is not None else agreement,
        }
        gold_rows = voted & has_gold
        if gold_rows.any():
            entry["gold_accuracy"] = float((column[gold_rows] == first.gold[gold_rows]).mean())
        sources[name] = entry
    report: dict[str, Any] = {
        "method": config.method,
        "inputs": [str(p) for p in inputs],
        "output": str(out_path),
        "n": n,
        "labels": first.names,
        "sources": sources,
        "counts": label_counts(fused_labels, first.names),
        "config": asdict(config),
    }
    if has_gold.any():
        report["gold"] = {
            "field": config.gold_field,
            "n_with_gold": int(has_gold.sum()),
            "fused_accuracy": float((fused_labels[has_gold] == first.gold[has_gold]).mean()),
        }
    return report
