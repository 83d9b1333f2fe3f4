"""Records: the labeled-record contract (`label_fields`, `OUTPUT_FIELDS`), labeled records as arrays
(`read_labeled`), ids, and crash-safe outputs (`PendingOutputs`). Reading inputs is `llmst.readers`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from llmst.errors import ConfigError
from llmst.readers import Reject, Row, iter_checked, position

# Fields every labeling stage (label, aggregate, predict) adds to a record (the record contract).
OUTPUT_FIELDS = tuple(
    "id label probs confidence margin entropy model task prompt_hash calibration calibration_bias truncated".split()
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


def probs_by_id(
    path: str | Path, ids: Sequence[str], names: Sequence[str], hint: str | None = None
) -> np.ndarray:
    """(N, K) `probs` of a labeled file in the order of `ids`; a row of `ids` that is not there is an error."""
    by_id = {str(record["id"]): record["probs"] for _line, record in iter_checked(path)}
    missing = [row_id for row_id in ids if row_id not in by_id]
    if missing:
        raise ConfigError(
            f"{path}: {len(missing)} of {len(ids)} rows have no probs (e.g. id {missing[0]!r})",
            hint=hint or f"see {path}.rejects.jsonl for why they were rejected",
        )
    return np.array([[float(by_id[row_id][name]) for name in names] for row_id in ids])


def keep_input_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The input record, with fields that clash with the output contract renamed to `input_<name>`."""
    return {f"input_{k}" if k in OUTPUT_FIELDS and k != "id" else k: v for k, v in record.items()}


def record_text(record: dict[str, Any], fields: Sequence[str]) -> str | None:
    """Join the text fields of a record; None when one is missing (a reject reason is built by the caller)."""
    parts = []
    for name in fields:
        value = record.get(name)
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


def check_output(out: Path, inputs: Sequence[str | Path | None]) -> None:
    """Refuse an output file that is also an input or a folder; create its parent folder."""
    paths = [Path(s).resolve() for s in inputs if s is not None and not str(s).startswith("hf:")]
    if out.resolve() in paths:
        raise ConfigError(f"-o {out} is also an input", hint="write the output to another file")
    if out.is_dir():
        raise ConfigError(f"-o {out} is a folder", hint="give a file name such as kept.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)


def _write_json_file(path: Path, payload: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())


class PendingOutputs:
    """The atomic-output helper of every stage: files are written to temporary names (`write_jsonl`,
    `write_json`, or `tmp` for a writer of your own) and renamed into place together by `commit()`; leaving
    a `with PendingOutputs()` block without committing removes them."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []

    def __enter__(self) -> PendingOutputs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def tmp(self, final: Path) -> Path:
        final = Path(final)
        tmp = final.with_name(final.name + ".tmp")
        self.pending.append((tmp, final))
        return tmp

    def write_json(self, final: Path, payload: Any) -> None:
        _write_json_file(self.tmp(final), payload)

    def write_jsonl(self, final: Path, records: Iterable[dict[str, Any]]) -> int:
        """Write records as JSON lines (fsynced); returns how many."""
        count = 0
        with open(self.tmp(final), "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        return count

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
    with PendingOutputs() as outputs:
        outputs.write_json(path, payload)
        outputs.commit()


def write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """`rows` as JSONL at `path` (its folder made), via a temp file + rename; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with PendingOutputs() as outputs:
        outputs.write_jsonl(path, rows)
        outputs.commit()
    return path


# ---------------------------------------------------------------- labeled records as arrays


@dataclass
class Labeled:
    """Labeled records (`llmst label` / `predict` / `aggregate` output) as arrays: what filter, aggregate and
    evaluate compute on. Records themselves are kept only when asked (`keep_records=True`)."""

    path: str
    names: list[str]  # K label names, in the order of the first record's `probs`
    probs: np.ndarray  # (N, K), each row normalized to sum to 1
    labels: np.ndarray  # (N,) the pseudo-label: argmax of `probs` (a record's `label` must agree)
    gold: np.ndarray  # (N,) gold class index; -1 when the field is missing or not a label
    gold_given: np.ndarray  # (N,) bool: the gold field is present and not empty
    ids: list[str]  # the record's `id`, else its line number
    lines: np.ndarray  # (N,) line (JSONL, CSV) or row number of each record in the file
    missing_ids: int = 0
    columns: dict[str, list[Any]] = field(default_factory=dict)  # requested fields (None where absent)
    records: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def where(self, row: int) -> str:  # `FILE, line N` of row `row` (0-based), for error messages
        return f"{self.path}, {position(self.path, int(self.lines[row]))}"

    def subset(self, rows: np.ndarray) -> Labeled:  # the rows at integer positions `rows`
        rows = np.asarray(rows, dtype=np.int64)
        return dataclasses.replace(
            self,
            probs=self.probs[rows],
            labels=self.labels[rows],
            gold=self.gold[rows],
            gold_given=self.gold_given[rows],
            ids=[self.ids[i] for i in rows],
            lines=self.lines[rows],
            columns={k: [v[i] for i in rows] for k, v in self.columns.items()},
            records=[self.records[i] for i in rows] if self.records is not None else None,
        )

    def with_names(self, names: Sequence[str]) -> Labeled:
        """The same rows with the label columns in the order `names` (the same set of labels)."""
        if set(names) != set(self.names):
            raise ConfigError(f"{self.path}: labels {sorted(self.names)} differ from {sorted(names)}")
        order = np.asarray([self.names.index(name) for name in names], dtype=np.int64)
        remap = np.argsort(order)  # old column -> new column
        gold = np.where(self.gold >= 0, remap[np.maximum(self.gold, 0)], -1)
        return dataclasses.replace(
            self, names=list(names), probs=self.probs[:, order], labels=remap[self.labels], gold=gold
        )


def _probs_row(record: dict, names: list[str], require_label: bool) -> tuple[list[float], list[str]]:
    """A record's probs in the order `names` (default: its own labels); ValueError(message, hint) if bad."""
    probs = record.get("probs")
    if not isinstance(probs, dict) or len(probs) < 2:
        hint = "filter, aggregate and evaluate read the output of `llmst label` (or predict/aggregate)"
        raise ValueError("the record has no 'probs' field ({label: probability})", hint)
    probs = {str(k): v for k, v in probs.items()}
    names = names or list(probs)
    if set(probs) != set(names):
        message = f"labels {sorted(probs)} differ from {sorted(names)} of the first record"
        raise ValueError(message, "every record must be labeled with the same task")
    try:
        row = [float(probs[name]) for name in names]
    except (TypeError, ValueError):
        raise ValueError("'probs' values must be numbers", None) from None
    if not all(math.isfinite(p) and p >= 0 for p in row) or sum(row) <= 0:
        raise ValueError("'probs' must be finite, non-negative and not all zero", None)
    label = record.get("label")
    if label is None and require_label:
        raise ValueError("the record has no 'label' field", "give the output of `llmst label` or predict")
    if label is not None and (label not in names or row[names.index(label)] < max(row) * (1 - 1e-9)):
        message = f"'label' is {label!r} but 'probs' puts the most mass on {names[row.index(max(row))]!r}"
        hint = "llmst takes the argmax of probs as the pseudo-label: fix 'label' or 'probs' of that record"
        raise ValueError(message, hint)
    return row, names


def read_labeled(
    source: str | Path,
    *,
    gold_field: str | None = None,
    fields: Sequence[str] = (),
    require_label: bool = False,
    keep_records: bool = False,
    limit: int | None = None,
) -> Labeled:
    """Read labeled records into arrays (`Labeled`); a problem is a `ConfigError` naming file, line and field.

    Each record needs `probs` ({label: probability}, the same labels in every record). The pseudo-label is
    the argmax of probs everywhere in llmst; a record whose `label` names another label is refused (ties are
    fine). `require_label`: `label` must be present. `gold_field`: gold labels (name or index; -1 when missing
    or unknown). `fields`: other fields, returned as lists in `columns`. Reads at most `limit` records.
    """
    names: list[str] = []
    rows: list[list[float]] = []
    ids: list[str] = []
    gold, gold_given, lines = [], [], []  # gold index, gold present, line number of each row
    columns: dict[str, list[Any]] = {name: [] for name in fields}
    records: list[dict[str, Any]] = []
    missing_ids = 0
    for line, record in iter_checked(source):
        if limit is not None and len(rows) >= limit:
            break
        try:
            row, names = _probs_row(record, names, require_label)
        except ValueError as err:
            raise ConfigError(
                f"{source}, {position(source, line)}: {err.args[0]}", hint=err.args[1]
            ) from None
        value = record.get(gold_field) if gold_field is not None else None
        gold_given.append(value is not None and value != "")
        gold.append(label_index(value, names))
        rows.append(row)
        missing_ids += record.get("id") is None
        ids.append(str(record.get("id", line)))
        lines.append(line)
        for name in fields:
            columns[name].append(record.get(name))
        if keep_records:
            records.append(record)
    if not rows:
        raise ConfigError(f"{source} holds no records", hint="give a file of labeled records")
    probs_array = np.asarray(rows, dtype=np.float64)
    return Labeled(
        path=str(source),
        names=names,
        probs=probs_array / probs_array.sum(axis=1, keepdims=True),
        labels=probs_array.argmax(axis=1).astype(np.int64),
        gold=np.asarray(gold, dtype=np.int64),
        gold_given=np.asarray(gold_given, dtype=bool),
        ids=ids,
        lines=np.asarray(lines, dtype=np.int64),
        missing_ids=missing_ids,
        columns=columns,
        records=records if keep_records else None,
    )
