"""`llmst predict --engine ray`: the shards of `llmst predict --shard I/N` as Ray tasks, merged into OUT.

A student relabels a corpus fast on one CPU; the Ray engine is for corpora that outgrow one machine. The driver
starts or joins Ray (`--ray-address`), runs `--num-workers` tasks of one CPU each (default: the cluster's CPUs),
task I writing shard I/N of the input under `OUT.parts/` with the local engine's code (`predict_file` with
`shard=I/N`: every task reads the input and keeps the rows whose id hashes to its shard, so every node needs
the input and the student at the same paths), then `llmst merge` joins the shards into OUT: the records, order,
rejects and signature of one local `llmst predict`. A rerun skips every shard whose marker matches (a killed
driver loses the shards in flight only); `--overwrite` starts over.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmst import stage
from llmst.engine_options import parts_dir, ray_task_slots, run_ray_tasks
from llmst.label.merge import MergeConfig, run_merge
from llmst.train.config import PredictConfig, predict_signature


def predict_with_ray(
    model_dir: str | Path, source: str | Path, out: str | Path, config: PredictConfig
) -> dict[str, Any]:
    """`predict_file` with `--engine ray` (see the module docstring); the merged summary plus the shard counts."""
    out = Path(out)
    folder = parts_dir(out)
    if config.overwrite:
        shutil.rmtree(folder, ignore_errors=True)
    with ray_task_slots(config.ray_address, config.num_workers) as count:
        local = replace(
            config, engine="local", ray_address=None, num_workers=None, overwrite=True, progress=False
        )
        shards = [
            (folder / f"shard-{i:05d}-of-{count:05d}.jsonl", replace(local, shard=f"{i}/{count}"))
            for i in range(count)
        ]
        todo = [
            (path, c)
            for path, c in shards
            if not stage.is_current(path, predict_signature(model_dir, source, c))
        ]
        folder.mkdir(parents=True, exist_ok=True)
        calls = [(str(model_dir), str(source), str(path), c) for path, c in todo]
        run_ray_tasks(_predict_shard, calls, config.progress, f"predicting on {len(todo)} Ray tasks")
    merged = run_merge([str(path) for path, _ in shards], out, MergeConfig(overwrite=True))
    return {
        "output": str(out),
        "labeled": merged["rows"],
        "rejected": merged["rejected"],
        "shards": count,
        "resumed_shards": count - len(todo),
    }


def _predict_shard(model_dir: str, source: str, out: str, config: PredictConfig) -> dict[str, Any]:
    """One Ray task: shard `config.shard` of the input."""
    from llmst.train.predict import predict_file

    return predict_file(model_dir, source, out, config)
