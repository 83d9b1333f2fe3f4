"""Records: streaming readers for JSONL / CSV / parquet / HF datasets, ids, and crash-safe JSONL output.

Readers yield `Row` (a parsed input record with its 1-based line number) or `Reject` (a bad row with a
reason); they never raise on bad rows, and never hold the corpus in memory.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from llmst.errors import ConfigError

# Fields every labeling stage (label, aggregate, predict) adds to a record (the record contract).
OUTPUT_FIELDS = (
    "id",
    "label",
    "probs",
    "confidence",
    "margin",
    "entropy",
    "model",
    "task",
    "prompt_hash",
    "calibration",
    "truncated",
)


def label_fields(probs: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """`label, probs, confidence, margin, entropy` of one row's label distribution (shape (K,))."""
    order = np.argsort(-probs, kind="stable")
    top = float(probs[order[0]])
    second = float(probs[order[1]]) if len(order) > 1 else 0.0
    return {
        "label": names[order[0]],
        "probs": {n: float(p) for n, p in zip(names, probs, strict=True)},
        "confidence": top,
        "margin": top - second,
        "entropy": float(-sum(p * math.log(p) for p in probs if p > 0)),
    }


def label_index(value: Any, names: Sequence[str]) -> int:
    """Index of a gold value given as a label name or an integer index into `names`; -1 if it is neither."""
    if value is None or value == "" or isinstance(value, bool):
        return -1
    text = str(value)
    if text in names:
        return list(names).index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
        return int(text)
    return -1


def keep_input_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The input record, with fields that clash with the output contract renamed to `input_<name>`."""
    return {f"input_{k}" if k in OUTPUT_FIELDS and k != "id" else k: v for k, v in record.items()}


@dataclass
class Row:
    line: int
    record: dict[str, Any]


@dataclass
class Reject:
    line: int
    reason: str
    raw: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "reason": self.reason, "raw": self.raw[:500]}


def _read_jsonl(path: Path) -> Iterator[Row | Reject]:
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield Reject(line_no, f"invalid UTF-8 at byte {err.start}", raw.decode("utf-8", "replace"))
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                yield Reject(line_no, f"malformed JSON: {err.msg}", text.rstrip("\n"))
                continue
            if not isinstance(record, dict):
                yield Reject(line_no, "JSON line is not an object", text.rstrip("\n"))
                continue
            yield Row(line_no, record)


def _read_csv(path: Path, delimiter: str) -> Iterator[Row | Reject]:
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        for record in reader:
            line_no = reader.line_num
            if None in record:
                yield Reject(line_no, "more fields than the header", json.dumps(record.get(None)))
                continue
            bad = [k for k, v in record.items() if isinstance(v, str) and _has_surrogates(v)]
            if bad:
                yield Reject(line_no, f"invalid UTF-8 in field '{bad[0]}'", repr(record[bad[0]]))
                continue
            yield Row(line_no, record)


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _read_parquet(path: Path) -> Iterator[Row | Reject]:
    import pyarrow.parquet as pq

    line_no = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            line_no += 1
            yield Row(line_no, record)


def _read_hf(spec: str) -> Iterator[Row | Reject]:
    """`hf:NAME[:SPLIT]` (hub, streamed) or a folder written by `Dataset.save_to_disk`."""
    import datasets

    if spec.startswith("hf:"):
        name, _, split = spec[3:].partition(":")
        dataset = datasets.load_dataset(name, split=split or "train", streaming=True)
    else:
        dataset = datasets.load_from_disk(spec)
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset["train"] if "train" in dataset else next(iter(dataset.values()))
    for line_no, record in enumerate(dataset, start=1):
        yield Row(line_no, dict(record))


def read_records(source: str | Path) -> Iterator[Row | Reject]:
    """Stream rows from JSONL, CSV/TSV, parquet, a saved HF dataset folder, or `hf:NAME[:SPLIT]`."""
    spec = str(source)
    if spec.startswith("hf:"):
        return _read_hf(spec)
    path = Path(spec)
    if not path.exists():
        raise ConfigError(f"input not found: {spec}")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return _read_hf(spec)
        raise ConfigError(f"{spec} is a folder but not a saved HF dataset")
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _read_jsonl(path)
    if suffix == ".csv":
        return _read_csv(path, ",")
    if suffix == ".tsv":
        return _read_csv(path, "\t")
    if suffix == ".parquet":
        return _read_parquet(path)
    raise ConfigError(
        f"unsupported input format '{path.suffix}' for {spec}",
        hint="use .jsonl, .csv, .tsv, .parquet, a saved HF dataset folder, or hf:NAME[:SPLIT]",
    )


def record_text(record: dict[str, Any], fields: Sequence[str]) -> str | None:
    """Join the text fields of a record; None when one is missing (a reject reason is built by the caller)."""
    parts = []
    for field in fields:
        value = record.get(field)
        if value is None:
            return None
        parts.append(str(value))
    return "\n".join(parts)


def record_id(record: dict[str, Any], text: str, id_field: str = "id") -> str:
    """Stable id: the input's id field when present, else a hash of the text."""
    value = record.get(id_field)
    if value is not None and value != "":
        return str(value)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a whole (small) JSONL file, raising on bad lines. For few-shot files and outputs in tests."""
    rows = []
    for item in _read_jsonl(Path(path)):
        if isinstance(item, Reject):
            raise ConfigError(f"{path}:{item.line}: {item.reason}")
        rows.append(item.record)
    return rows


class JsonlAppender:
    """Append JSON lines; `flush()` makes everything written so far durable (fsync)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(path, "ab")

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")

    def flush(self) -> int:
        """Flush and fsync; returns the file size in bytes."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        return self._handle.tell()

    def close(self) -> None:
        self._handle.close()


def chunked(items: Iterator[Row | Reject], size: int) -> Iterator[list[Row | Reject]]:
    """Consecutive lists of at most `size` items from a (streaming) reader."""
    items = iter(items)
    while chunk := list(islice(items, size)):
        yield chunk


class PendingOutputs:
    """Output files written to temporary names and renamed into place together; removed on error."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []

    def tmp(self, final: Path) -> Path:
        tmp = final.with_name(final.name + ".tmp")
        self.pending.append((tmp, final))
        return tmp

    def commit(self) -> None:
        for tmp, final in self.pending:
            os.replace(tmp, final)
        self.pending.clear()

    def discard(self) -> None:
        for tmp, _ in self.pending:
            tmp.unlink(missing_ok=True)
        self.pending.clear()


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON via a temp file + rename so a crash never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
