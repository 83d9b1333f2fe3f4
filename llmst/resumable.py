"""The crash-safe row loop of the stages that call a model row by row (`llmst debate`, `llmst pairs score`).

Rows are read in chunks; after every chunk the output and rejects files are flushed and fsynced and the
checkpoint (`OUT.progress.json`: rows consumed, bytes written) is replaced atomically. A run killed at any point
(kill -9 included) and rerun with the same job resumes after the last checkpoint, with the files cut back to it:
nothing is lost or written twice. Another input or job is refused (`open_checkpoint`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from llmst import stage
from llmst.errors import ConfigError
from llmst.progress import count_rows, progress_bar
from llmst.readers import Reject, Row, read_records
from llmst.records import JsonlAppender, chunked, write_json_atomic

# process(chunk) -> (records to write, rejects); rows of the chunk not in either are a bug
ChunkFn = Callable[[list[Row | Reject]], tuple[list[dict[str, Any]], list[Reject]]]


def _truncate_to(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as handle:
            handle.truncate(size)


def job_options(config: Any) -> dict[str, Any]:
    """The options a resumed output must share with the run that started it: the signature's fields except
    `limit` (a longer run extends a shorter one) and a server's URL (the job key identifies a served model by
    what the server says of it, `llmst.backends.answer_identity`: a server on another port continues it)."""
    options = {k: v for k, v in stage.signature_fields(config).items() if k != "limit"}
    if getattr(config, "backend", None) == "openai":
        options.pop("base_url", None)
    return options


def open_checkpoint(
    out_path: Path,
    rejects_path: Path,
    checkpoint_path: Path,
    job: dict[str, str],
    overwrite: bool,
    what: str = "labeling",
):
    """The label job's checkpoint: fresh, or the one to resume (output files cut back to it); refuses
    to resume an output that another job (other input content, model or options) started."""
    fresh = {
        **job,
        "rows_consumed": 0,
        "labeled": 0,
        "rejected": 0,
        "output_bytes": 0,
        "rejects_bytes": 0,
        "label_counts": {},
        "complete": False,
    }
    if overwrite:
        for path in (out_path, rejects_path, checkpoint_path):
            path.unlink(missing_ok=True)
        stage.clear_marker(out_path)
        return fresh
    if checkpoint_path.exists():
        try:
            state = json.loads(checkpoint_path.read_text())
        except ValueError:
            state = {}
        if "input" in state and state["input"] != job["input"]:
            raise ConfigError(
                f"{out_path} was started on other input content: the input file changed since, "
                "and resuming would mix two corpora",
                hint="pass --overwrite to label the new input from the start, or choose another -o",
            )
        if state.get("shard") != job.get("shard"):  # the job hash differs too; this says how
            theirs, ours = (
                f"shard {s}" if s else "the whole input" for s in (state.get("shard"), job.get("shard"))
            )
            raise ConfigError(
                f"{out_path} was started on {theirs}, not {ours}: resuming would mix two shards",
                hint="give each shard its own -o (e.g. out.shard0.jsonl), or pass --overwrite to replace it",
            )
        if state.get("job") != job["job"]:
            raise ConfigError(
                f"{out_path} was written by a different {what} job (other model, dtype, device, task or "
                "options; a served model is known by its id, root and context length in /v1/models)",
                hint="pass --overwrite to replace it, or choose another -o",
            )
        _truncate_to(out_path, state["output_bytes"])
        _truncate_to(rejects_path, state["rejects_bytes"])
        state["complete"] = False
        return state
    if out_path.exists() and out_path.stat().st_size > 0:
        raise ConfigError(f"{out_path} already exists", hint="pass --overwrite to replace it")
    for path in (out_path, rejects_path):
        path.unlink(missing_ok=True)
    return fresh


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


class ResumableRun:
    """One run of a resumable stage: the checkpoint is opened (fresh, or the one to resume) on creation, so a
    stage can look at `skip` before it loads or fits anything; `run` then processes the remaining rows."""

    def __init__(
        self,
        source: str,
        output: ResumableOutput,
        job: dict[str, str],
        *,
        overwrite: bool,
        limit: int | None,
        what: str,
    ):
        self.source, self.output, self.limit, self.what = source, output, limit, what
        self.state = open_checkpoint(output.out, output.rejects, output.checkpoint, job, overwrite, what=what)
        self.skip = self.state["rows_consumed"]
        self.resumed = self.state["labeled"]

    def run(
        self,
        process: ChunkFn,
        *,
        rows: Iterator[Row | Reject] | None = None,
        chunk_size: int,
        progress: bool,
        rate: Callable[[int, float], str],
        extra_state: Callable[[], dict[str, Any]] | None = None,
        keep: Callable[[Row | Reject], bool] | None = None,
    ) -> dict[str, Any]:
        """Process the rows after the checkpoint; after every chunk, flush both files and save the checkpoint
        (with `extra_state()`, e.g. running label counts). With `keep` (a `--shard`), only the rows it keeps
        reach `process`; the others are consumed and counted (`other_shards`), never written. Returns the final
        checkpoint plus `resumed` (records found done) and `processed` (rows read in this run)."""
        checkpoint, output = self.state, self.output
        total = count_rows(self.source)
        if self.limit is not None:
            total = min(total, self.limit) if total is not None else self.limit
        rows = rows if rows is not None else read_records(self.source)
        rows = islice(rows, self.limit) if self.limit is not None else rows
        rows = islice(rows, self.skip, None)
        writer, reject_writer = JsonlAppender(output.out), JsonlAppender(output.rejects)
        started, done, kept = time.perf_counter(), 0, 0
        try:
            with progress_bar(progress, total, what=self.what, unit="") as bar:
                task = bar.add_task(self.what, total=total, completed=self.skip, rate="-")
                for chunk, consumed, dropped in _kept_chunks(rows, chunk_size, keep):
                    records, rejects = process(chunk) if chunk else ([], [])
                    for record in records:
                        writer.write(record)
                    for reject in sorted(rejects, key=lambda r: r.line):
                        reject_writer.write(reject.to_json())
                    checkpoint["rows_consumed"] += consumed
                    checkpoint["labeled"] += len(records)
                    checkpoint["rejected"] += len(rejects)
                    if keep is not None:
                        checkpoint["other_shards"] = checkpoint.get("other_shards", 0) + dropped
                    checkpoint.update(extra_state() if extra_state else {})
                    checkpoint["output_bytes"] = writer.flush()
                    checkpoint["rejects_bytes"] = reject_writer.flush()
                    write_json_atomic(output.checkpoint, checkpoint)
                    done, kept = done + consumed, kept + len(chunk)
                    elapsed = max(time.perf_counter() - started, 1e-9)
                    bar.update(task, advance=consumed, rate=rate(kept, elapsed))
        finally:
            writer.close()
            reject_writer.close()
        checkpoint["complete"] = True
        write_json_atomic(output.checkpoint, checkpoint)
        return {**checkpoint, "resumed": self.resumed, "processed": done}


def _kept_chunks(
    rows: Iterator[Row | Reject], size: int, keep: Callable[[Row | Reject], bool] | None
) -> Iterator[tuple[list[Row | Reject], int, int]]:
    """(chunk of at most `size` kept rows, input rows consumed up to its last row, rows dropped among them);
    a last chunk may be empty when only dropped rows remain (they still advance the checkpoint)."""
    if keep is None:
        for chunk in chunked(rows, size):
            yield chunk, len(chunk), 0
        return
    chunk: list[Row | Reject] = []
    consumed = dropped = 0
    for item in rows:
        consumed += 1
        if keep(item):
            chunk.append(item)
        else:
            dropped += 1
        if len(chunk) == size:
            yield chunk, consumed, dropped
            chunk, consumed, dropped = [], 0, 0
    if consumed:
        yield chunk, consumed, dropped


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
    keep: Callable[[Row | Reject], bool] | None = None,
) -> dict[str, Any]:
    """Open the checkpoint of `job` and run `process` over the rows after it (`ResumableRun`); `keep` as there."""
    run = ResumableRun(source, output, job, overwrite=overwrite, limit=limit, what=what)
    return run.run(process, rows=rows, chunk_size=chunk_size, progress=progress, rate=rate, keep=keep)
