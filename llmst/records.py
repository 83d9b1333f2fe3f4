"""Records: readers (JSONL, JSON, CSV/TSV, parquet, HF datasets), labeled records as arrays (`read_labeled`),
ids, and crash-safe outputs (`PendingOutputs`). Readers yield `Row` (a record and its 1-based line number) or
`Reject` (a bad row and why); they never raise on bad rows, and stream all but JSON documents."""

from __future__ import annotations

import csv
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

from llmst import stage
from llmst.errors import ConfigError

# Fields every labeling stage (label, aggregate, predict) adds to a record (the record contract).
OUTPUT_FIELDS = tuple(
    "id label probs confidence margin entropy model task prompt_hash calibration truncated".split()
)
_BOM = b"\xef\xbb\xbf"
_JSON_HINT = 'write a JSON array of objects, {"data": [...]}, or one JSON object per line (.jsonl)'


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


def _read_csv(path: Path, delimiter: str, encoding: str = "utf-8") -> Iterator[Row | Reject]:
    """CSV with RFC 4180 quoting; TSV as the IANA format has it: one record per line, no quoting, so a `"`
    inside a sentence (MRPC, SICK) is text, never the start of a field that swallows the next lines. A
    leading byte-order mark is dropped (Excel writes one), so the first column keeps its name."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with open(path, encoding=_python_encoding(encoding), errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter, quoting=quoting)
        width = len(reader.fieldnames or [])
        for record in reader:
            line_no = reader.line_num
            if None in record:
                yield Reject(line_no, f"more fields than the header's {width}", json.dumps(record.get(None)))
                continue
            short = [k for k, v in record.items() if v is None]
            if short:
                yield Reject(line_no, f"fewer fields than the header's {width} (no '{short[0]}')", "")
                continue
            bad = [k for k, v in record.items() if isinstance(v, str) and _has_surrogates(v)]
            if bad:
                yield Reject(line_no, f"invalid {encoding} in field '{bad[0]}'", repr(record[bad[0]]))
                continue
            yield Row(line_no, record)


def _python_encoding(encoding: str) -> str:
    """utf-8 input may start with a byte-order mark; reading it as utf-8-sig drops that mark."""
    return "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding


def _read_text_lines(path: Path, encoding: str = "utf-8") -> Iterator[Row | Reject]:
    """A `.txt` file: one text per line (`{"text": line}`); blank lines are skipped, as in JSONL."""
    with open(path, encoding=_python_encoding(encoding), errors="surrogateescape", newline="") as handle:
        for line_no, line in enumerate(handle, start=1):
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            if _has_surrogates(text):
                yield Reject(line_no, f"invalid {encoding}", repr(text))
                continue
            yield Row(line_no, {"text": text})


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _read_parquet(path: Path) -> Iterator[Row | Reject]:
    import pyarrow.parquet as pq

    batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
    for line_no, record in enumerate((r for batch in batches for r in batch.to_pylist()), start=1):
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


def _json_is_lines(path: Path) -> bool:
    """Whether a `.json` file holds JSON lines (its first line is a whole object) rather than one document."""
    with open(path, "rb") as handle:
        first_line = handle.read(1 << 16).removeprefix(_BOM).lstrip().split(b"\n", 1)[0]
    try:
        first = json.loads(first_line) if first_line[:1] == b"{" else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False  # a pretty-printed object: the whole file is one JSON value
    return isinstance(first, dict) and not _is_data_wrapper(first)


def _read_json(path: Path) -> Iterator[Row | Reject]:
    """A `.json` file: a JSON array of objects, an object `{"data": [...]}`, or JSON lines after all."""
    if _json_is_lines(path):
        return _read_jsonl(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
        value = json.loads(text) if text.strip() else []
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: invalid UTF-8 at byte {err.start}", hint=_JSON_HINT) from err
    except json.JSONDecodeError as err:
        where = f"line {err.lineno}, column {err.colno}"
        raise ConfigError(f"{path} is not valid JSON: {err.msg} ({where})", hint=_JSON_HINT) from err
    if isinstance(value, dict) and _is_data_wrapper(value):
        value = value["data"]
    if not isinstance(value, list):
        what = "one object without a 'data' list" if isinstance(value, dict) else f"a {type(value).__name__}"
        raise ConfigError(f"{path} holds {what}, not a list of records", hint=_JSON_HINT)
    return (
        Row(n, item)
        if isinstance(item, dict)
        else Reject(n, "JSON array item is not an object", json.dumps(item))
        for n, item in enumerate(value, start=1)
    )


def _is_data_wrapper(value: dict[str, Any]) -> bool:
    return set(value) == {"data"} and isinstance(value["data"], list)


def read_records(source: str | Path, encoding: str = "utf-8") -> Iterator[Row | Reject]:
    """Stream rows from JSONL, JSON (an array, `{"data": [...]}` or JSON lines), CSV/TSV, `.txt` (one text per
    line), parquet, a saved HF dataset folder, or `hf:NAME[:SPLIT]`. `encoding` applies to CSV, TSV and
    text files (JSON is UTF-8 by definition). A missing or unreadable source is a `ConfigError`."""
    spec = str(source)
    if spec.startswith("hf:"):
        return _read_hf(spec)
    path = Path(spec)
    if not path.exists():
        raise ConfigError(
            f"input not found: {spec}", hint="check the path (relative paths start from the current folder)"
        )
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return _read_hf(spec)
        raise ConfigError(f"{spec} is a folder but not a saved HF dataset")
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix in (".csv", ".tsv", ".txt"):
        stage.check_encoding(encoding)
    if suffix == ".csv":
        return _read_csv(path, ",", encoding)
    if suffix == ".tsv":
        return _read_csv(path, "\t", encoding)
    if suffix == ".txt":
        return _read_text_lines(path, encoding)
    if suffix == ".parquet":
        return _read_parquet(path)
    raise ConfigError(
        f"unsupported input format '{path.suffix}' for {spec}",
        hint="use .jsonl, .json, .csv, .tsv, .txt, .parquet, a saved HF dataset folder, or hf:NAME[:SPLIT]",
    )


def position(source: str | Path, line: int) -> str:
    """`line N` for line-based files (JSONL, CSV), `row N` for the others (parquet, JSON arrays, HF)."""
    name = str(source)
    is_lines = name.endswith((".jsonl", ".ndjson", ".csv", ".tsv", ".txt"))
    if name.endswith(".json") and Path(name).is_file():
        is_lines = _json_is_lines(Path(name))
    return f"{'line' if is_lines else 'row'} {line}"


def iter_checked(source: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, record) of every row of `source`; a bad row is a `ConfigError` naming the file and line."""
    for item in read_records(source):
        if isinstance(item, Reject):
            raise ConfigError(
                f"{source}, {position(source, item.line)}: {item.reason}", hint="fix or remove it and rerun"
            )
        yield item.line, item.record


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
