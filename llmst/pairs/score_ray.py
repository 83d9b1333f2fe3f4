"""`llmst pairs score --engine ray` for cross-encoder and bi-encoder teachers: the pairs' shards as Ray tasks.

Task I scores shard I/N of the pairs (the partition of `--shard`: a hash of the pair id, the input line for a
row without texts) with the local engine's code (`model_teacher` with `shard=I/N`) into
`TEACHER_FILE.parts/part-I-of-N.jsonl`, resumably and through the shared answer cache (sqlite in WAL mode, so
tasks on one machine share it). Every task reads the whole input and keeps its shard, so every node needs the
pairs and the teacher at the same paths. The driver then joins the parts into the teacher's file (the scores
part after part, the rejects in input order), which `score_pairs` combines exactly as after a local run. A
part is marked done with a signature of the teacher job and its shard: a rerun after a killed driver redoes
only the parts that were not finished, and a finished part of another teacher or input is never reused.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmst import stage
from llmst.engine_options import parts_dir, ray_task_slots, run_ray_tasks
from llmst.pairs.config import ScoreConfig
from llmst.readers import iter_checked
from llmst.records import PendingOutputs


def score_parts_with_ray(
    kind: str, model: str, source: str, out: Path, config: ScoreConfig, teacher_signature: str
) -> None:
    """Score `source` with one cross-/bi-encoder teacher on Ray tasks and join the parts into `out` (its
    `{id, score}` records and `out.rejects.jsonl`), as `model_teacher` would write them in one process."""
    folder = parts_dir(out)
    if config.overwrite:
        shutil.rmtree(folder, ignore_errors=True)
    with ray_task_slots(config.ray_address, config.num_workers) as count:
        local = replace(config, engine="local", ray_address=None, num_workers=None, progress=False)
        parts = [(folder / f"part-{i:05d}-of-{count:05d}.jsonl", f"{i}/{count}") for i in range(count)]
        signatures = {
            shard: stage.signature("pairs-teacher-part", {"teacher": teacher_signature, "shard": shard}, {})
            for _, shard in parts
        }
        todo = [(path, shard) for path, shard in parts if not stage.is_current(path, signatures[shard])]
        folder.mkdir(parents=True, exist_ok=True)
        calls = [(kind, model, source, str(path), local, shard, signatures[shard]) for path, shard in todo]
        what = f"scoring ({Path(model).name}) on {len(todo)} Ray tasks"
        run_ray_tasks(_score_part, calls, config.progress, what)
    _join_parts([path for path, _ in parts], out)


def _join_parts(parts: list[Path], out: Path) -> None:
    """The parts' scores (part after part: `score_pairs` looks them up by id) and their rejects (in input
    order) into `out`, atomically."""
    rejects: list[dict[str, Any]] = []
    for path in parts:
        reject_file = path.with_name(path.name + ".rejects.jsonl")
        if reject_file.exists():
            rejects.extend(record for _, record in iter_checked(reject_file))
    rejects.sort(key=lambda record: record.get("line", 0))
    with PendingOutputs() as pending:
        pending.write_jsonl(out, (record for path in parts for _, record in iter_checked(path)))
        pending.write_jsonl(out.with_name(out.name + ".rejects.jsonl"), rejects)
        pending.commit()
    out.with_name(out.name + ".progress.json").unlink(missing_ok=True)  # a local run's, now stale


def _score_part(
    kind: str, model: str, source: str, part: str, config: ScoreConfig, shard: str, signature: str
) -> None:
    """One Ray task: shard `shard` of the pairs, then the part's marker."""
    from llmst.pairs.teachers import model_teacher

    model_teacher(kind, model, source, Path(part), config, overwrite=False, shard=shard)
    stage.write_marker(Path(part), signature, stage="pairs-teacher-part", shard=shard)
