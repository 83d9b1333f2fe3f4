"""What every orchestration (selftrain, w2s) shares: run a stage unless its output is current, build a stage's
config from a YAML section, and resolve paths relative to the YAML file."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmst.distributed import is_main_process, wait_for_ranks
from llmst.errors import ConfigError
from llmst.option_values import check_number_types
from llmst.stage import clear_marker, is_current, read_options_file, write_marker


def log(owner: str, message: str) -> None:
    print(f"[{owner}] {message}", file=sys.stderr, flush=True)


def pending_path(out: Path) -> Path:
    """The file that says `out` is being computed, and under which signature (so a rerun can resume it)."""
    return out.with_name(out.name + ".stage-pending")


def start_experiment(out_dir: Path, source: str | None) -> bool:
    """Create `out_dir` and copy the experiment's YAML (`source`) into it, on the main process only (under
    torchrun every rank runs the experiment); True on the main process, which alone writes reports."""
    main = is_main_process()
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if source:
            shutil.copyfile(source, out_dir / "config.yaml")
    return main


def run_stage(
    name: str,
    out: Path,
    sig: str,
    run: Callable[[bool], Any],
    owner: str = "selftrain",
    all_ranks: bool = False,
) -> bool:
    """Run a stage unless `out` is complete under signature `sig`; returns True when it ran.

    Under a multi-process launch every rank runs the whole orchestration: `all_ranks` stages (training: DDP or
    FSDP inside `llmst train`) run on every rank, every other stage (labeling, prediction, filtering, files)
    on the main process alone while the others wait, and only the main process writes stage files.

    A stage interrupted under the same signature resumes (`run(overwrite=False)`); one left by other
    options or inputs is recomputed from scratch (`run(overwrite=True)`), never resumed into.
    """
    wait_for_ranks()  # every rank looks at the same files
    main = is_main_process()
    if is_current(out, sig):
        if main:
            log(owner, f"{name}: up to date, reused")
        return False
    pending = pending_path(out)
    resume = pending.exists() and pending.read_text().strip() == sig
    wait_for_ranks()  # every rank has decided to resume or not before the main process writes
    if main:
        out.parent.mkdir(parents=True, exist_ok=True)
        pending.write_text(sig + "\n")
        clear_marker(out)
        log(owner, f"{name}: {'resuming' if resume else 'computing'}")
    if main or all_ranks:
        run(not resume)
    if main:
        write_marker(out, sig, stage=name)
        pending.unlink(missing_ok=True)
    wait_for_ranks()  # no rank moves on before the stage is complete
    return True


def build(cls, options: dict[str, Any], section: str, owner: str = "selftrain", **overrides: Any):
    """`cls(**options, **overrides)`, with a bad option reported as one ConfigError naming the section."""
    check_number_types(cls, options, f"{owner}: '{section}' options: ")
    try:
        return cls(**{**options, **overrides})
    except TypeError as error:
        raise ConfigError(f"{owner}: bad '{section}' options: {error}") from error


def resolver(base: Path) -> Callable[[Any], Any]:
    """A function that turns a string naming a file under `base` (the YAML's folder) into its full path."""

    def resolve(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).is_absolute() and (base / value).exists():
            return str(base / value)
        return value

    return resolve


def out_dir_of(value: str, base: Path) -> str:
    return str(base / value) if not Path(value).is_absolute() else value


def read_experiment_yaml(
    path: Path, config_cls: type, what: str, required: tuple[str, ...]
) -> dict[str, Any]:
    """An orchestration's YAML as a mapping: unknown keys and missing required keys are one ConfigError;
    `out_dir` is resolved against the YAML's folder (other paths are the caller's, with `resolver`)."""
    import dataclasses

    data = read_options_file(path, what)
    known = {f.name for f in dataclasses.fields(config_cls)} - {"source"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}", hint=f"known keys: {sorted(known)}")
    for key in required:
        if key not in data:
            raise ConfigError(f"{path}: '{key}' is required")
    data["out_dir"] = out_dir_of(data["out_dir"], path.resolve().parent)
    return data
