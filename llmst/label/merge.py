"""`llmst merge SHARD... -o OUT`: join the outputs of `llmst label --shard I/N` (or the parts that
`llmst label --engine ray` writes) into one labeled file, as if one run had labeled the whole input.

Before anything is written it checks that every shard output is complete (its signature marker exists and its
row count matches the file), that all come from one job (the same signature except the shard index), that
shards 0..N-1 are each given exactly once, that every record belongs to its shard (its id hashes there), that
no input line appears twice and that every shard applied the same calibration. Each problem is one ConfigError.
Ids need not be unique: the local engine writes one record per input line, also for rows sharing an id (an
explicit `--id-field` value given twice, or a repeated text without an id, whose id is the text's hash); equal
ids hash to one shard, and the merge writes all of those records, as the local engine does.

Order: a sharded record carries the input line it came from (`INPUT_LINE`, a reserved field), and each shard is
in input order, so the merge is a k-way merge on that line: OUT holds the records in input order, without that
field, exactly as an unsharded run writes them (OUT.rejects.jsonl likewise, by line). OUT's signature is the unsharded job's
(`label_signature(input, config)` without `--shard`), so `llmst.stage.is_current` takes a merged output for the
output of one run. Shards are read twice (checks, then the merge); memory holds one record at a time per shard.
"""

from __future__ import annotations

import glob
import heapq
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmst import stage
from llmst.errors import ConfigError
from llmst.label.calibrate import calibration_identity, same_calibration
from llmst.readers import iter_checked
from llmst.records import PendingOutputs, check_output
from llmst.shard import INPUT_LINE, parse_shard, shard_of

MANIFEST_KIND = "llmst-shards"


def _redo(path: Path, damaged: bool = False, command: str = "label") -> str:
    """The hint for a shard or part that is unfinished (or `damaged`): the command that writes it again."""
    # a part of `llmst label --engine ray` (`engine_options.parts_dir`)
    if path.parent.name.endswith(".parts"):
        command = f"the `llmst label ... -o {path.parent.name[: -len('.parts')]} --engine ray` command"
        if damaged:
            return f"delete {path.name} and rerun {command}: it labels that part again and merges the parts"
        return f"rerun {command}: it labels the parts not done yet and merges them into its output"
    if damaged:
        return f"relabel that shard: rerun its `llmst {command} ... --shard I/N` command with --overwrite"
    return f"rerun its `llmst {command} ... --shard I/N` command: it resumes where it stopped"


@dataclass
class MergeConfig:
    """Options of `llmst merge` (the shards and OUT are its arguments)."""

    overwrite: bool = field(default=False, metadata=stage.runtime("Replace an existing OUT."))


@dataclass
class _Shard:
    path: Path
    marker: dict[str, Any]
    index: int
    count: int

    @property
    def command(self) -> str:
        """The llmst command that wrote the shard (`label` or `predict`)."""
        return str(self.marker.get("stage") or "label")

    @property
    def rejects(self) -> Path:
        return self.path.parent / self.marker.get("rejects", self.path.name + ".rejects.jsonl")

    @property
    def name(self) -> str:
        return f"shard {self.index}/{self.count} ({self.path})"


def read_manifest(path: str | Path) -> list[Path] | None:
    """The shard outputs a manifest (`{"kind": "llmst-shards", "shards": [...]}`) lists, relative to its folder;
    None when `path` is not a manifest."""
    path = Path(path)
    if path.suffix != ".json" or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("kind") != MANIFEST_KIND:
        return None
    return [path.parent / name for name in data["shards"]]


def expand_shards(arguments: list[str]) -> list[Path]:
    """Shard outputs from paths, quoted glob patterns and manifests; the companions a shell glob also matches
    (`X.rejects.jsonl` next to a shard X) are dropped."""
    paths: list[Path] = []
    for argument in arguments:
        listed = read_manifest(argument)
        if listed is not None:
            paths += listed
        elif not Path(argument).exists() and any(c in argument for c in "*?["):
            matches = sorted(glob.glob(argument))
            if not matches:
                raise ConfigError(
                    f"no file matches {argument}", hint="check the pattern of the shard outputs"
                )
            paths += [Path(m) for m in matches]
        else:
            paths.append(Path(argument))
    names = {str(p) for p in paths}
    suffixes = (".rejects.jsonl", ".progress.json", ".signature.json")
    return [p for p in paths if not any(str(p).endswith(s) and str(p)[: -len(s)] in names for s in suffixes)]


def _read_shard(path: Path) -> _Shard:
    if not path.exists():
        raise ConfigError(f"shard output not found: {path}", hint="check the path, or label that shard first")
    marker_file = stage.marker_path(path)
    try:
        marker = json.loads(marker_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError(
            f"{path} is incomplete: its labeling run has not finished (no {marker_file.name})",
            hint=_redo(path, command="label (or predict)"),
        ) from None
    if not isinstance(marker, dict) or not marker.get("shard") or not marker.get("job"):
        raise ConfigError(
            f"{path} is not a shard output (it was labeled without --shard)",
            hint="merge the outputs of `llmst label ... --shard I/N`, one per shard",
        )
    index, count = parse_shard(marker["shard"])  # type: ignore[misc]  # a marker always holds I/N
    return _Shard(path, marker, index, count)


def check_shards(shards: list[_Shard]) -> tuple[str, int]:
    """The job and shard count of a complete, consistent set of shards; a ConfigError otherwise."""
    if not shards:
        raise ConfigError("no shard outputs given", hint="e.g. llmst merge out.shard*.jsonl -o out.jsonl")
    first = shards[0]
    for shard in shards[1:]:
        if shard.marker["job"] != first.marker["job"] or shard.count != first.count:
            raise ConfigError(
                f"{shard.path} and {first.path} come from different jobs (other input, model or options, or "
                f"another shard count: {shard.count} vs {first.count})",
                hint="merge the shards of one labeling command, which differ only in --shard I/N",
            )
    seen: dict[int, Path] = {}
    for shard in shards:
        if shard.index in seen:
            raise ConfigError(
                f"shard {shard.index}/{shard.count} is given twice: {seen[shard.index]} and {shard.path}",
                hint="give each shard output once",
            )
        seen[shard.index] = shard.path
    missing = [i for i in range(first.count) if i not in seen]
    if missing:
        names = ", ".join(f"{i}/{first.count}" for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ConfigError(
            f"{len(missing)} of {first.count} shards missing: {names}",
            hint="label each missing shard with the same command and --shard I/N, then merge all N",
        )
    return first.marker["job"], first.count


def _check_records(shard: _Shard, calibration: list[Any]) -> None:
    """Every record of `shard` belongs to it, in input order, one per input line (`_merged` checks the lines
    across shards); the same calibration in every shard."""
    hashed = shard.marker.get("partition", "hash") == "hash"
    previous, rows = 0, 0
    for line, record in iter_checked(shard.path):
        where = f"{shard.path}, line {line}"
        rid, position = str(record.get("id")), record.get(INPUT_LINE)
        if not isinstance(position, int) or position <= previous:
            raise ConfigError(
                f"{where}: '{INPUT_LINE}' is missing or out of input order ({position!r} after {previous})",
                hint="the file was edited or written by something else than `llmst label`; "
                + _redo(shard.path, damaged=True, command=shard.command),
            )
        if hashed and shard_of(rid, shard.count) != shard.index:
            raise ConfigError(
                f"{where}: id {rid!r} belongs to shard {shard_of(rid, shard.count)}/{shard.count}, not "
                f"{shard.index}/{shard.count}",
                hint="this file mixes rows of several shards or jobs; relabel that shard with --overwrite",
            )
        if not calibration:
            calibration.append(record)
        elif not same_calibration(record, calibration[0]):
            identity, first = calibration_identity(record), calibration_identity(calibration[0])
            raise ConfigError(
                f"{where}: calibrated differently from the other shards ({identity} vs {first})",
                hint="label every shard with the same options (the prior is fitted on the whole input's "
                "first rows); or fit once and pass --calibration-from to every shard",
            )
        previous, rows = position, rows + 1
    if rows != shard.marker.get("rows"):
        raise ConfigError(
            f"{shard.path} holds {rows} records but its run wrote {shard.marker.get('rows')}",
            hint="the file changed after its run finished; "
            + _redo(shard.path, damaged=True, command=shard.command),
        )


def _records(shard: _Shard) -> Iterator[tuple[int, dict[str, Any]]]:
    for _line, record in iter_checked(shard.path):
        yield record.pop(INPUT_LINE), record


def _rejects(shard: _Shard) -> Iterator[tuple[int, dict[str, Any]]]:
    if not shard.rejects.exists():
        if shard.marker.get("rejected"):
            raise ConfigError(
                f"{shard.rejects} is missing ({shard.name} rejected rows)",
                hint=_redo(shard.path, command=shard.command),
            )
        return
    with open(shard.rejects, encoding="utf-8") as handle:
        for text in handle:
            if text.strip():
                reject = json.loads(text)
                yield reject["line"], reject


def _merged(streams: list[Iterator[tuple[int, dict[str, Any]]]], what: str) -> Iterator[dict[str, Any]]:
    previous = None
    for position, item in heapq.merge(*streams, key=lambda pair: pair[0]):
        if position == previous:
            raise ConfigError(f"input line {position} has {what} in two shards", hint="relabel the shards")
        previous = position
        yield item


def run_merge(inputs: list[str], out: str | Path, config: MergeConfig | None = None) -> dict[str, Any]:
    """Merge shard outputs (paths, glob patterns or a manifest) into `out` and `out.rejects.jsonl`."""
    config = config or MergeConfig()
    out = Path(out)
    shards = sorted((_read_shard(p) for p in expand_shards(inputs)), key=lambda s: s.index)
    job, count = check_shards(shards)
    check_output(out, [s.path for s in shards])
    summary = {
        "output": str(out),
        "rejects": str(out.with_name(out.name + ".rejects.jsonl")),
        "shards": count,
        "input": shards[0].marker.get("input"),
        "signature": job,
    }
    if stage.is_current(out, job) and not config.overwrite:
        marker = json.loads(stage.marker_path(out).read_text(encoding="utf-8"))
        return {**summary, "rows": marker.get("rows"), "rejected": marker.get("rejected"), "already": True}
    if out.exists() and not config.overwrite:
        raise ConfigError(f"{out} already exists", hint="pass --overwrite to replace it")
    calibration: list[Any] = []
    for shard in shards:
        _check_records(shard, calibration)
    stage.clear_marker(out)
    with PendingOutputs() as outputs:
        rows = outputs.write_jsonl(out, _merged([_records(s) for s in shards], "a record"))
        rejected = outputs.write_jsonl(
            Path(summary["rejects"]), _merged([_rejects(s) for s in shards], "a reject")
        )
        outputs.commit()
    stage.write_marker(
        out, job, stage=shards[0].command, rows=rows, rejected=rejected, input=summary["input"], merged=count
    )
    return {**summary, "rows": rows, "rejected": rejected, "already": False}
