"""Readers of inputs as users have them: JSONL, JSON (an array, `{"data": [...]}` or JSON lines), CSV/TSV,
`.txt`, parquet and HF datasets. Readers yield `Row` (a record and its 1-based line number) or `Reject` (a bad
row and why); they never raise on bad rows, and stream all but JSON documents."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmst import stage
from llmst.errors import ConfigError

_BOM = b"\xef\xbb\xbf"
CSV_FIELD_LIMIT = 1 << 30  # the csv module's default (128 KiB) fails on long documents
_JSON_HINT = 'write a JSON array of objects, {"data": [...]}, or one JSON object per line (.jsonl)'


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
            if line_no == 1:
                raw = raw.removeprefix(_BOM)  # editors on Windows start UTF-8 files with one
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
    csv.field_size_limit(CSV_FIELD_LIMIT)
    with open(path, encoding=_python_encoding(encoding), errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(
            handle, delimiter=delimiter, quoting=quoting, strict=quoting != csv.QUOTE_NONE
        )
        try:
            width = len(reader.fieldnames or [])
            yield from _csv_rows(reader, width, encoding)
        except csv.Error as err:  # e.g. an unterminated quote that swallowed the rest of a CSV file
            raise ConfigError(
                f"{path}, line {reader.line_num}: cannot parse: {err}",
                hint="check the quoting of that line (a CSV field with a quote or comma must be quoted)",
            ) from None


def _csv_rows(reader: csv.DictReader, width: int, encoding: str) -> Iterator[Row | Reject]:
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
            yield Row(line_no, {"id": f"line-{line_no}", "text": text})  # repeated lines stay distinct


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


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a whole (small) JSONL file, raising on bad lines. For few-shot files and outputs in tests."""
    rows = []
    for item in _read_jsonl(Path(path)):
        if isinstance(item, Reject):
            raise ConfigError(f"{path}:{item.line}: {item.reason}")
        rows.append(item.record)
    return rows
