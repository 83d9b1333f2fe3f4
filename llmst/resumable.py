"""The crash-safe row loop of the stages that call a model row by row (`llmst debate`, `llmst pairs score`).

Rows are read in chunks; after every chunk the output and rejects files are flushed and fsynced and the
checkpoint (`OUT.progress.json`: rows consumed, bytes written) is replaced atomically. A run killed at any point
(kill -9 included) and rerun with the same job resumes after the last checkpoint, with the files cut back to it:
nothing is lost or written twice. Another input or job is refused (`label.checkpoint.open_checkpoint`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from llmst.label.checkpoint import open_checkpoint
from llmst.progress import count_rows, progress_bar
from llmst.readers import Reject, Row, read_records
from llmst.records import JsonlAppender, chunked, write_json_atomic

# process(chunk) -> (records to write, rejects); rows of the chunk not in either are a bug
ChunkFn = Callable[[list[Row | Reject]], tuple[list[dict[str, Any]], list[Reject]]]


@dataclass
class ResumableOutput:
    """Where a resumable stage writes: OUT, OUT.rejects.jsonl, OUT.progress.json."""

    out: Path

    @property
    def rejects(self) -> Path:
        return self.out.with_name(self.out.name + ".rejects.jsonl")

    @property
    def checkpoint(self) -> Path:
        return self.out.with_name(self.out.name + ".progress.json")


def run_resumable(
    source: str,
    output: ResumableOutput,
    job: dict[str, str],
    process: ChunkFn,
    *,
    rows: Iterator[Row | Reject] | None = None,
    chunk_size: int,
    overwrite: bool,
    limit: int | None,
    progress: bool,
    what: str,
    rate: Callable[[int, float], str],
) -> dict[str, Any]:
    """Run `process` over the rows of `source` (resuming a checkpoint of the same `job`); returns the final
    checkpoint (`labeled`: records written in all runs, `rejected`, `resumed`: records found done)."""
    checkpoint = open_checkpoint(output.out, output.rejects, output.checkpoint, job, overwrite, what=what)
    skip = checkpoint["rows_consumed"]
    resumed = checkpoint["labeled"]
    total = count_rows(source)
    if limit is not None:
        total = min(total, limit) if total is not None else limit
    rows = rows if rows is not None else read_records(source)
    rows = islice(rows, limit) if limit is not None else rows
    rows = islice(rows, skip, None)
    writer, reject_writer = JsonlAppender(output.out), JsonlAppender(output.rejects)
    started, done = time.perf_counter(), 0
    try:
        with progress_bar(progress, total, what=what, unit="") as bar:
            task = bar.add_task(what, total=total, completed=skip, rate="-")
            for chunk in chunked(rows, chunk_size):
                records, rejects = process(chunk)
                for record in records:
                    writer.write(record)
                for reject in sorted(rejects, key=lambda r: r.line):
                    reject_writer.write(reject.to_json())
                checkpoint["rows_consumed"] += len(chunk)
                checkpoint["labeled"] += len(records)
                checkpoint["rejected"] += len(rejects)
                checkpoint["output_bytes"] = writer.flush()
                checkpoint["rejects_bytes"] = reject_writer.flush()
                write_json_atomic(output.checkpoint, checkpoint)
                done += len(chunk)
                bar.update(
                    task, advance=len(chunk), rate=rate(done, max(time.perf_counter() - started, 1e-9))
                )
    finally:
        writer.close()
        reject_writer.close()
    checkpoint["complete"] = True
    write_json_atomic(output.checkpoint, checkpoint)
    return {**checkpoint, "resumed": resumed, "processed": done}
