"""`llmst label --engine ray`: the same labeling job on a Ray cluster, through Ray Data's `map_batches`.

The driver reads the input with llmst's own readers (every format; bad rows stay rejects, with their line),
fits the calibration once, as the local engine does (prior: on the corpus's first `--prior-fit-rows` rows;
contextual; or `--calibration-from`), and cuts the rows (after `--limit`) into parts of `--part-rows` input
rows. The parts not done yet become a Ray dataset; `map_batches` runs them on `--num-workers` actors, one CPU
each, each holding one backend and the answer cache (a worker is `ChunkLabeler` over its own backend: the
local engine's scoring and calibration code, with the driver's biases). The driver writes each part as it comes
back (`OUT.parts/part-K.jsonl` and its rejects, atomically, then the part's marker), shows the progress, writes
`OUT.parts/manifest.json` and merges the parts into OUT with `llmst.label.merge` (input order, rejects by
line, the signature the local engine records: the engine is a runtime option).

Resume: a rerun skips every part whose marker matches (the same job, calibration and rows); a part being
written when the driver died has no marker and is labeled again (its answers come back from the cache), so a
killed driver loses no row and writes none twice. Memory: the driver holds the rows of the parts still to
label, pickled, while Ray runs them (they travel through the object store, which spills to disk).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import threading
import time
from collections import Counter
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import Any

from llmst import stage
from llmst.backends import backend_model_identity, make_backend
from llmst.backends.base import Backend
from llmst.cache import AnswerCache, cache_key
from llmst.errors import ConfigError
from llmst.label.calibrate import read_fitted_calibration, record_calibration
from llmst.label.config import LabelConfig
from llmst.label.fewshot import FewShotSelector
from llmst.label.merge import MANIFEST_KIND, MergeConfig, run_merge
from llmst.label.run import (
    COMPUTED,
    FROM_CACHE,
    REUSED,
    ChunkLabeler,
    Labeler,
    LabelSummary,
    _calibration,
    _few_shot_examples,
    _job_identity,
    _Scorer,
    _signature,
)
from llmst.models import llmst_home
from llmst.progress import progress_bar
from llmst.readers import read_records
from llmst.records import PendingOutputs, chunked, write_json_atomic

RAY_HINT = 'install the Ray extra: pip install "llmst[ray]"'


def parts_dir(out: str | Path) -> Path:
    """Where `--engine ray` keeps the parts of output `out` (and their manifest)."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _cache(config: LabelConfig) -> AnswerCache | None:
    if not config.cache:
        return None
    return AnswerCache(Path(config.cache_path) if config.cache_path else llmst_home() / "cache.sqlite")


def _fewshot(config: LabelConfig, task) -> FewShotSelector | None:
    examples = _few_shot_examples(config, task)
    if examples is None:
        return None
    return FewShotSelector(examples, task, shots=config.shots, select=config.select, seed=config.seed)


class PartWorker:
    """A Ray actor: one backend, one answer cache, the local engine's `ChunkLabeler`; labels whole parts."""

    def __init__(self, options: dict[str, Any], method: str, bias: list[float], prompt_hash: str):
        try:
            import torch

            torch.set_num_threads(1)  # one CPU per actor
        except ImportError:  # an openai-backend worker needs no torch
            pass
        self.config = config = LabelConfig(**options)
        task = config.build_task()
        self.backend = make_backend(config.backend_spec())
        self.scorer, self.cache_thread = _Scorer(self.backend, task, None), None
        labeler = Labeler(config, task, self.backend, _fewshot(config, task))
        self.label = ChunkLabeler(labeler, self.scorer, method, bias, prompt_hash, input_line=True)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"part": [], "records": [], "rejects": [], "counts": []}
        if self.config.cache and self.cache_thread != threading.get_ident():  # sqlite: one thread each
            self.scorer.cache, self.cache_thread = _cache(self.config), threading.get_ident()
        for part, blob in zip(batch["part"], batch["rows"], strict=True):
            self.scorer.counts.clear()
            records, rejects = [], []
            for chunk in chunked(iter(pickle.loads(blob)), self.backend.chunk_size):
                labeled, bad = self.label(chunk)
                records += labeled
                rejects += bad
            out["part"].append(int(part))
            out["records"].append(json.dumps(records, ensure_ascii=False))
            out["rejects"].append(json.dumps([r.to_json() for r in sorted(rejects, key=lambda r: r.line)]))
            out["counts"].append(json.dumps(dict(self.scorer.counts)))
        return out


def _write_part(folder: Path, result: dict[str, Any], meta: dict[str, Any], job: str) -> dict[str, Any]:
    """Write one part (records, rejects: atomically; then its marker); returns the marker's details."""
    path = folder / meta["file"]
    records, rejects = json.loads(result["records"]), json.loads(result["rejects"])
    stage.clear_marker(path)
    with PendingOutputs() as outputs:
        outputs.write_jsonl(path, records)
        outputs.write_jsonl(path.with_name(path.name + ".rejects.jsonl"), rejects)
        outputs.commit()
    details = {
        "partition": "range",
        "job": job,
        "rows": len(records),
        "rejected": len(rejects),
        "items": meta["items"],
        "label_counts": dict(Counter(r["label"] for r in records)),
        "truncated": sum(bool(r["truncated"]) for r in records),
        "counts": json.loads(result["counts"]),
    }
    stage.write_marker(path, meta["signature"], stage="label", shard=meta["shard"], **details)
    return details


def _read_part_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(stage.marker_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _ray_init(config: LabelConfig) -> bool:
    """Start or join Ray; True when this call started it (and so shuts it down)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray, which is not installed", hint=RAY_HINT) from None
    if ray.is_initialized():
        return False
    if config.ray_address:
        ray.init(address=config.ray_address, log_to_driver=False, configure_logging=False)
    else:
        ray.init(num_cpus=config.num_workers or os.cpu_count(), log_to_driver=False, configure_logging=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver shows llmst's own
    context.print_on_execution_start = False
    return True


def label_with_ray(
    source: str | Path, output: str | Path, config: LabelConfig, backend: Backend | None = None
) -> LabelSummary:
    """`label_corpus` with `--engine ray` (see the module docstring). `backend`, if given, is the driver's
    (for the calibration and the job's identity); every worker builds its own from the config."""
    source, out = str(source), Path(output)
    folder = parts_dir(out)
    task = config.build_task()
    rows = read_records(source, config.encoding)  # validates the input before any model is loaded
    if config.calibration_from:
        read_fitted_calibration(config.calibration_from, task.label_names)
    if config.overwrite:
        shutil.rmtree(folder, ignore_errors=True)
        for path in (out, out.with_name(out.name + ".rejects.jsonl")):
            path.unlink(missing_ok=True)
        stage.clear_marker(out)
    started = time.perf_counter()
    own_backend, cache = backend is None, _cache(config)
    backend = backend or make_backend(config.backend_spec())
    try:  # on the driver: the job's identity and the calibration, once
        fewshot = _fewshot(config, task)
        prompt_hash = task.prompt_hash(fewshot.describe() if fewshot else "")
        signature = _signature(source, config, backend_model_identity(backend), prompt_hash)
        summary = LabelSummary(output=str(out), rejects=str(out.with_name(out.name + ".rejects.jsonl")))
        summary.prompt_hash, summary.signature = prompt_hash, signature
        if stage.is_current(out, signature):  # a finished job: nothing to do
            summary.labeled = json.loads(stage.marker_path(out).read_text(encoding="utf-8"))["rows"]
            return summary
        if out.exists() and not folder.exists():
            raise ConfigError(f"{out} already exists", hint="pass --overwrite to replace it")
        job = _job_identity(config, source, prompt_hash, backend)
        scorer = _Scorer(backend, task, cache)
        labeler = Labeler(config, task, backend, fewshot)
        method, bias = _calibration(source, config, task, fewshot, labeler, scorer, summary)
    finally:
        if cache is not None:
            cache.close()
        if own_backend:
            backend.close()  # the workers hold their own
    calibration = record_calibration(method, bias, task.label_names)
    part_job = cache_key(job=job, calibration=calibration, part_rows=config.part_rows)
    pending, metas = _plan_parts(folder, rows, config, part_job)
    _label_parts(folder, pending, metas, config, signature, summary, (method, list(map(float, bias))))
    manifest = folder / "manifest.json"
    names = [meta["file"] for meta in metas]
    write_json_atomic(manifest, {"kind": MANIFEST_KIND, "job": signature, "input": source, "shards": names})
    merged = run_merge([str(manifest)], out, MergeConfig(overwrite=True))
    summary.labeled, summary.rejected = merged["rows"], merged["rejected"]
    summary.seconds = round(time.perf_counter() - started, 3)
    model_rows = summary.computed + summary.prior_fit_computed
    summary.docs_per_second = (
        round(model_rows / summary.seconds, 2) if model_rows and summary.seconds else None
    )
    return summary


def _plan_parts(folder: Path, rows, config: LabelConfig, part_job: str) -> tuple[list[dict], list[dict]]:
    """Cut the input into parts; the pending ones (no matching marker) carry their rows, pickled."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = islice(rows, config.limit) if config.limit is not None else rows
    pending, metas = [], []
    for index, items in enumerate(chunked(rows, config.part_rows)):
        meta = {"file": f"part-{index:06d}.jsonl", "items": len(items)}
        meta["signature"] = cache_key(part=part_job, index=index, items=len(items), first=items[0].line)
        marker = _read_part_marker(folder / meta["file"])
        meta["done"] = marker if marker and marker.get("signature") == meta["signature"] else None
        if meta["done"] is None:
            pending.append({"part": index, "rows": pickle.dumps(items)})
        metas.append(meta)
    for index, meta in enumerate(metas):
        meta["shard"] = f"{index}/{len(metas)}"
        if meta["done"] is not None and meta["done"].get("shard") != meta["shard"]:  # --limit moved the end
            write_json_atomic(
                stage.marker_path(folder / meta["file"]), {**meta["done"], "shard": meta["shard"]}
            )
    return pending, metas


def _label_parts(folder, pending, metas, config, signature, summary, calibration) -> None:
    """Run the pending parts on Ray workers; write each as it comes back; count into `summary`."""
    counts: Counter[str] = Counter()
    label_counts: Counter[str] = Counter()
    for meta in metas:
        if meta["done"] is not None:
            summary.resumed_rows += meta["done"]["rows"]
            label_counts.update(meta["done"].get("label_counts", {}))
    if pending:
        started_ray = _ray_init(config)
        try:
            import ray

            workers = config.num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            size = min(workers, len(pending))
            dataset = ray.data.from_items(pending, override_num_blocks=len(pending))
            pending.clear()  # the rows live in the object store now
            method, bias = calibration
            results = dataset.map_batches(
                PartWorker,
                fn_constructor_kwargs={
                    "options": asdict(config),
                    "method": method,
                    "bias": bias,
                    "prompt_hash": summary.prompt_hash,
                },
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=size),
                num_cpus=1,
            )
            todo = sum(meta["items"] for meta in metas if meta["done"] is None)
            with progress_bar(
                config.progress, todo, what=f"labeling on {workers} Ray workers", unit=""
            ) as bar:
                task = bar.add_task("ray", total=todo, rate="-")
                begin = time.perf_counter()
                for result in results.iter_rows():
                    meta = metas[int(result["part"])]
                    details = _write_part(folder, result, meta, signature)
                    counts.update(details["counts"])
                    label_counts.update(details["label_counts"])
                    summary.truncated += details["truncated"]
                    summary.rows_read += meta["items"]
                    elapsed = max(time.perf_counter() - begin, 1e-9)
                    bar.update(task, advance=meta["items"], rate=f"{summary.rows_read / elapsed:.1f} docs/s")
        finally:
            if started_ray:
                import ray

                ray.shutdown()
    summary.from_cache += counts[FROM_CACHE]
    summary.reused_from_prior_fit += counts[REUSED]
    summary.computed += counts[COMPUTED]
    summary.label_counts = dict(label_counts)
