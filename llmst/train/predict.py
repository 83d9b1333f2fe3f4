"""`llmst predict`: a trained student relabels a corpus, writing the same labeled records as `llmst label`."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmst import stage
from llmst.errors import ConfigError
from llmst.readers import Reject, Row, read_records
from llmst.records import PendingOutputs, chunked, keep_input_fields, label_fields, record_id, record_text
from llmst.shard import INPUT_LINE, RESERVED_FIELD, shard_filter
from llmst.train.config import PredictConfig, predict_signature
from llmst.train.model import StudentClassifier, load_tokenizer, read_student_meta

CHUNK_ROWS = 1024


def load_student(model_dir: str | Path) -> tuple[StudentClassifier, Any, dict[str, Any]]:
    """A saved classifier student (eval mode), its tokenizer and its llmst metadata."""
    from transformers import AutoModelForSequenceClassification

    meta = read_student_meta(model_dir)
    if meta["kind"] != "classifier":
        raise ConfigError(f"{model_dir} is a {meta['kind']} student, not a classifier")
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=torch.float32)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return StudentClassifier(model).to(device).eval(), load_tokenizer(str(model_dir)), meta


@torch.inference_mode()
def predict_probs(
    student: StudentClassifier,
    tokenizer: Any,
    texts: list[str],
    *,
    max_length: int = 128,
    batch_size: int = 64,
) -> np.ndarray:
    """Class probabilities (N, K), batched by length so little padding is computed."""
    device = next(student.parameters()).device
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    out: np.ndarray | None = None
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in index]}, return_tensors="pt")
        logits = student(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float()
        probs = torch.softmax(logits, dim=-1).cpu().numpy()
        if out is None:
            out = np.zeros((len(texts), probs.shape[1]))
        out[index] = probs
    return out if out is not None else np.zeros((0, 0))


def student_fingerprint(model_dir: str | Path) -> str:
    """Hash of the saved weights' sizes and modification times plus the metadata (cheap, changes on retrain)."""
    folder = Path(model_dir)
    parts = [
        f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(folder.glob("*.safetensors"))
    ]
    parts.append((folder / "llmst_student.json").read_text())
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def predict_file(
    model_dir: str | Path, source: str | Path, out: str | Path, config: PredictConfig | None = None
) -> dict[str, Any]:
    """Label `source` with the student in `model_dir`; write OUT (atomically) and OUT.rejects.jsonl, then the
    marker `OUT.signature.json` (`predict_signature(model_dir, source, config)`) once both are complete."""
    config = config or PredictConfig()
    out = Path(out)
    if out.exists() and not config.overwrite:
        raise ConfigError(f"{out} exists", hint="pass --overwrite to replace it")
    if config.engine == "ray":
        from llmst.train.predict_ray import predict_with_ray

        return predict_with_ray(model_dir, source, out, config)
    meta = read_student_meta(model_dir)
    stage.clear_marker(out)
    if meta["kind"] == "generative":
        summary = _predict_generative(model_dir, source, out, config)
    else:
        summary = _predict_classifier(model_dir, source, out, config)
    details: dict[str, Any] = {}
    if config.shard is not None:  # what `llmst merge` checks (the marker of `llmst label --shard`)
        details = {
            "shard": config.shard,
            "partition": "hash",
            "job": predict_signature(model_dir, source, replace(config, shard=None)),
            "rejects": out.name + ".rejects.jsonl",
            "rejected": summary["rejected"],
            "rows": summary["labeled"],
            "input": str(source),
        }
    stage.write_marker(
        out, predict_signature(model_dir, source, config), stage="predict", model=str(model_dir), **details
    )
    return summary


def _predict_classifier(
    model_dir: str | Path, source: str | Path, out: Path, config: PredictConfig
) -> dict[str, Any]:
    student, tokenizer, meta = load_student(model_dir)
    names: list[str] = meta["labels"]
    fields = config.text_fields or meta["text_fields"]
    fingerprint = student_fingerprint(model_dir)
    counts: Counter[str] = Counter()
    rejected = other_shards = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    outputs = PendingOutputs()
    try:
        with (
            open(outputs.tmp(out), "w", encoding="utf-8") as writer,
            open(outputs.tmp(out.with_name(out.name + ".rejects.jsonl")), "w", encoding="utf-8") as rejects,
        ):
            rows = read_records(source, config.encoding)
            if config.limit is not None:
                rows = islice(rows, config.limit)
            keep = shard_filter(config.shard, fields, config.id_field)
            for chunk in chunked(rows, CHUNK_ROWS):
                good: list[tuple[Row, str]] = []
                for item in chunk:
                    if keep is not None and not keep(item):
                        other_shards += 1
                        continue
                    if isinstance(item, Reject):
                        reject = {"line": item.line, "reason": item.reason, "raw": item.raw}
                    elif config.shard is not None and INPUT_LINE in item.record:
                        reject = {"line": item.line, "reason": RESERVED_FIELD}
                    elif not (text := record_text(item.record, fields)):
                        reject = {"line": item.line, "reason": f"no text in fields {fields}"}
                    else:
                        good.append((item, text))
                        continue
                    rejects.write(json.dumps(reject, ensure_ascii=False) + "\n")
                    rejected += 1
                probs = predict_probs(
                    student,
                    tokenizer,
                    [t for _, t in good],
                    max_length=meta["max_length"],
                    batch_size=config.batch_size,
                )
                for (row, text), row_probs in zip(good, probs, strict=True):
                    record = keep_input_fields(row.record)
                    record["id"] = record_id(row.record, text, config.id_field)
                    record.update(label_fields(row_probs, names))
                    record.update(
                        model=f"student:{Path(model_dir).name}",
                        task=f"student:{meta['base_model']}",
                        prompt_hash=fingerprint,
                        calibration="none",
                        truncated=False,
                    )
                    if config.shard is not None:  # `llmst merge` restores input order with it
                        record[INPUT_LINE] = row.line
                    counts[record["label"]] += 1
                    writer.write(json.dumps(record, ensure_ascii=False) + "\n")
            for handle in (writer, rejects):  # durable before the rename makes them visible
                handle.flush()
                os.fsync(handle.fileno())
        outputs.commit()
    finally:
        outputs.discard()
    return {
        "output": str(out),
        "labeled": sum(counts.values()),
        "rejected": rejected,
        **({"other_shards": other_shards} if config.shard is not None else {}),
        "label_counts": dict(counts),
    }


def _predict_generative(
    model_dir: str | Path, source: str | Path, out: Path, config: PredictConfig
) -> dict[str, Any]:
    """A generative student scores each label as a continuation of its training prompt (llmst label)."""
    from llmst.label.config import LabelConfig
    from llmst.label.run import label_corpus

    label_config = LabelConfig(
        task=str(Path(model_dir) / "task.yaml"),
        model=str(model_dir),
        text_fields=config.text_fields,
        id_field=config.id_field,
        encoding=config.encoding,
        batch_size=config.batch_size,
        limit=config.limit,
        shard=config.shard,
        cache=False,
        overwrite=True,
        progress=config.progress,
    )
    summary = label_corpus(source, out, label_config)
    return {
        "output": str(out),
        "labeled": summary.labeled,
        "rejected": summary.rejected,
        **({"other_shards": summary.other_shards} if config.shard is not None else {}),
        "label_counts": summary.label_counts,
    }


def evaluate_student(
    model_dir: str | Path, gold_file: str | Path, *, gold_field: str = "gold"
) -> dict[str, Any]:
    """Accuracy, macro-F1, ... of the student on a gold-labeled file (see `llmst evaluate`)."""
    from llmst.evaluate import evaluate_file

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "predicted.jsonl"
        predict_file(model_dir, gold_file, out, PredictConfig(progress=False))
        return evaluate_file(out, gold_field=gold_field)
