"""The label job's crash-safe checkpoint (`OUT.progress.json`): open, validate against the job, resume."""

from __future__ import annotations

import json
from pathlib import Path

from llmst import stage
from llmst.errors import ConfigError


def _truncate_to(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as handle:
            handle.truncate(size)


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
        if state.get("job") != job["job"]:
            raise ConfigError(
                f"{out_path} was written by a different {what} job (other model, dtype, device, task or "
                "options)",
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
