"""Progress bars for long stages (on stderr, so stdout stays the JSON result)."""

from __future__ import annotations

import sys
from pathlib import Path


def progress_bar(enabled: bool, total: int | None, what: str = "labeling", unit: str = "docs/s"):
    """A rich progress bar on stderr with a rate column (the task's `rate` field, then `unit`; an empty
    unit when `rate` carries its own), disabled when not `enabled`."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(f"[bold]{what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} " + unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        disable=not enabled,
        transient=False,
    )


def count_rows(source: str) -> int | None:
    """Rows of a line-oriented input file (for the progress bar's total), None when unknown."""
    path = Path(source)
    if not path.is_file() or path.suffix not in (".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".txt"):
        return None
    with open(path, "rb") as handle:
        count = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    return count - (1 if path.suffix in (".csv", ".tsv") else 0)
