"""`llmst label --engine ray`: the same labeling job on a Ray cluster, through Ray Data's `map_batches`.

The driver reads the input with llmst's own readers (every format; bad rows stay rejects, with their line),
builds the job as the local engine does (`llmst.label.run.prepare_label_job`), fits the calibration once (prior:
on the corpus's first `--prior-fit-rows` rows; contextual; or `--calibration-from`), and cuts the rows (after
`--limit`) into parts of `--part-rows` input rows. It writes `OUT.parts/manifest.json` (the parts and the job's
identity), then the parts not done yet become a Ray dataset; `map_batches` runs them on `--num-workers` actors
of one CPU (and `--num-gpus-per-worker` GPUs) each. A worker builds the same job from the options with its own
backend (and the answer cache) and labels with the driver's biases, reusing the driver's answers for the
prior-fit rows (with `--calibrate prior` no row is scored twice, as in the local engine, also without a
cache shared with the driver); it refuses to start when its prompt or model differs from the driver's (other
files on its node). The driver writes each part as it comes back
(`OUT.parts/part-K.jsonl` and its rejects, atomically, then the part's marker), shows the progress and merges
the parts into OUT with `llmst.label.merge` (input order, rejects by line, the signature the local engine
records: the engine is a runtime option).

Resume: a rerun skips every part whose marker matches (the same job without --limit, calibration and rows); a
part being written when the driver died has no marker and is labeled again (its answers come back from the
cache), so a killed driver loses no row and writes none twice. An OUT (or OUT.parts/) of another job is refused
unless --overwrite, as by the local engine. Memory: the driver reads the input part by part and puts each
pending part's rows into Ray's object store as it is read (which spills to disk), holding only references: a
corpus larger than the driver's memory streams through.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import time
from collections import Counter
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import Any

from llmst import stage
from llmst.backends import make_backend
from llmst.backends.base import Backend
from llmst.cache import cache_key
from llmst.engine_options import one_torch_thread, parts_dir, ray_init
from llmst.errors import ConfigError
from llmst.label.calibrate import read_fitted_calibration, record_calibration
from llmst.label.config import DEFAULT_PART_ROWS, LabelConfig
from llmst.label.merge import MANIFEST_KIND, MergeConfig, run_merge
from llmst.label.run import LabelJob, LabelSummary, prepare_label_job
from llmst.label.scoring import COMPUTED, FROM_CACHE, REUSED
from llmst.progress import progress_bar
from llmst.readers import read_records
from llmst.records import PendingOutputs, chunked, write_json_atomic


class PartWorker:
    """A Ray actor: one backend, the local engine's labeling job (`prepare_label_job`) with the driver's
    calibration; labels whole parts. It refuses to start (`WorkerJobError`) when the prompt or the model it builds
    from the files on its node is not the driver's: its records would carry the driver's signature."""

    def __init__(
        self,
        options: dict[str, Any],
        source: str,
        method: str,
        bias: list[float],
        prompt_hash: str,
        model: str,
        fit_answers: Any = None,
        part_rows: dict[int, Any] | None = None,
    ):
        one_torch_thread()  # one CPU per actor
        config = LabelConfig(**options)
        self.backend = make_backend(config.backend_spec())
        try:
            self.job = prepare_label_job(source, config, self.backend)
            check_worker_job(self.job, prompt_hash, model)
        except BaseException:
            self.close()
            raise
        if fit_answers is not None:  # the driver's prior-fit answers: those rows are not scored twice
            self.job.scorer.recall(fit_answers)
        self.label = self.job.chunk_labeler(method, bias, input_line=True)
        self.part_rows = part_rows or {}  # part index -> its rows' reference in the object store

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        import ray

        out: dict[str, list[Any]] = {"part": [], "records": [], "rejects": [], "counts": []}
        self.job.open_cache()  # per call: sqlite connections stay in their thread, and Ray may switch threads
        try:
            for part in batch["part"]:
                self.job.scorer.counts.clear()
                records, rejects = [], []
                for chunk in chunked(iter(ray.get(self.part_rows[int(part)])), self.backend.chunk_size):
                    labeled, bad = self.label(chunk)
                    records += labeled
                    rejects += bad
                out["part"].append(int(part))
                out["records"].append(json.dumps(records, ensure_ascii=False))
                out["rejects"].append(
                    json.dumps([r.to_json() for r in sorted(rejects, key=lambda r: r.line)])
                )
                out["counts"].append(json.dumps(dict(self.job.scorer.counts)))
        finally:
            self.job.close_cache()
        return out

    def close(self) -> None:
        """Release the backend (Ray Data calls `__del__` when it shuts the actor pool down)."""
        backend, self.backend = getattr(self, "backend", None), None
        if backend is not None:
            backend.close()

    def __del__(self) -> None:
        self.close()


def check_worker_job(job: LabelJob, prompt_hash: str, model: str) -> None:
    """A `WorkerJobError` (a ConfigError) unless a worker's job, built on its node, has the driver's prompt and
    model."""
    node = socket.gethostname()
    if job.prompt_hash != prompt_hash:
        raise WorkerJobError(
            f"the Ray worker on {node} builds another prompt than the driver (prompt hash {job.prompt_hash}, "
            f"the driver's {prompt_hash}): the task YAML or the --few-shot file differs on that node",
            hint="give every node the same files at the same paths (e.g. a shared filesystem)",
        )
    if job.model != model:
        raise WorkerJobError(
            f"the Ray worker on {node} loads another model than the driver ({job.model}, the driver's {model})",
            hint="give every node the same model files at the same path (--model), or serve the model and use "
            "--backend openai",
        )


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
    started = ray_init(config.ray_address, config.num_workers)
    import ray

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver shows llmst's own
    context.print_on_execution_start = False
    return started


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
    own_backend, job = backend is None, None
    backend = backend or make_backend(config.backend_spec())
    try:  # on the driver: the job's identity and the calibration, once
        job = prepare_label_job(source, config, backend, task)
        summary = LabelSummary(output=str(out), rejects=str(out.with_name(out.name + ".rejects.jsonl")))
        summary.prompt_hash, summary.signature = job.prompt_hash, job.signature()
        if stage.is_current(out, summary.signature):  # a finished job: nothing to do
            summary.labeled = json.loads(stage.marker_path(out).read_text(encoding="utf-8"))["rows"]
            return summary
        identity = job.identity()  # the job without --limit: a rerun with another limit reuses the parts
        _check_same_job(out, folder, identity)
        job.open_cache()
        method, bias = job.calibrate(summary)
        fit_answers = job.scorer.remembered()
        job.scorer.forget()
    finally:
        if job is not None:
            job.close_cache()
        if own_backend:
            backend.close()  # the workers hold their own
    calibration = record_calibration(method, bias, task.label_names)
    part_rows = config.part_rows or DEFAULT_PART_ROWS
    part_job = cache_key(job=identity, calibration=calibration, part_rows=part_rows)
    ray_session = _RaySession(config)
    try:  # Ray starts with the first part still to label; the parts' rows go to its object store as read
        pending, metas = _plan_parts(folder, rows, config, part_job, summary.signature, ray_session.put)
        manifest = folder / "manifest.json"  # before any part: what a rerun compares its job with
        names = [meta["file"] for meta in metas]
        write_json_atomic(
            manifest,
            {
                "kind": MANIFEST_KIND,
                "job": summary.signature,
                "identity": identity,
                "input": source,
                "shards": names,
            },
        )
        worker = {
            "options": asdict(config),
            "source": source,
            "method": method,
            "bias": list(map(float, bias)),
            "prompt_hash": job.prompt_hash,
            "model": job.model,
            "fit_answers": fit_answers,
        }
        _label_parts(folder, pending, metas, config, summary, worker)
    finally:
        ray_session.close()
    merged = run_merge([str(manifest)], out, MergeConfig(overwrite=True))
    summary.labeled, summary.rejected = merged["rows"], merged["rejected"]
    summary.seconds = round(time.perf_counter() - started, 3)
    model_rows = summary.computed + summary.prior_fit_computed
    summary.docs_per_second = (
        round(model_rows / summary.seconds, 2) if model_rows and summary.seconds else None
    )
    return summary


def _check_same_job(out: Path, folder: Path, identity: dict[str, str]) -> None:
    """Refuse, as the local engine does, to replace or resume an output another labeling job wrote (its
    manifest records that job's identity); `--overwrite` removed them before this check."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    theirs = manifest.get("identity") if isinstance(manifest, dict) else None
    if theirs == identity:
        return
    if theirs is not None and theirs.get("input") != identity["input"]:
        raise ConfigError(
            f"{out} was started on other input content ({folder}): the input file changed since, and "
            "resuming would mix two corpora",
            hint="pass --overwrite to label the new input from the start, or choose another -o",
        )
    if theirs is not None:
        raise ConfigError(
            f"{out} was written by a different labeling job (other model, dtype, device, task or options; "
            f"its parts: {folder})",
            hint="pass --overwrite to replace it, or choose another -o",
        )
    if out.exists():
        raise ConfigError(
            f"{out} already exists",
            hint="pass --overwrite to replace it (an output of --engine local resumes with --engine local)",
        )


def _plan_parts(
    folder: Path, rows, config: LabelConfig, part_job: str, signature: str, put
) -> tuple[dict[int, Any], list[dict]]:
    """Cut the input into parts: every part's meta, and the pending ones (no matching marker) by index, each
    as `put(rows)` (a reference into Ray's object store). A part done by an earlier run of this job under
    another --limit is kept, and its marker names this run's job."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = islice(rows, config.limit) if config.limit is not None else rows
    pending: dict[int, Any] = {}
    metas: list[dict] = []
    for index, items in enumerate(chunked(rows, config.part_rows or DEFAULT_PART_ROWS)):
        meta = {"file": f"part-{index:06d}.jsonl", "items": len(items)}
        meta["signature"] = cache_key(part=part_job, index=index, items=len(items), first=items[0].line)
        marker = _read_part_marker(folder / meta["file"])
        meta["done"] = marker if marker and marker.get("signature") == meta["signature"] else None
        if meta["done"] is None:
            pending[index] = put(items)
        metas.append(meta)
    for index, meta in enumerate(metas):
        meta["shard"] = f"{index}/{len(metas)}"
        done = meta["done"]
        if done is not None and (done.get("shard"), done.get("job")) != (meta["shard"], signature):
            # --limit moved the end (the part count) and the job's signature (which `llmst merge` compares)
            done.update(shard=meta["shard"], job=signature)
            write_json_atomic(stage.marker_path(folder / meta["file"]), done)
    return pending, metas


def _label_parts(folder, pending, metas, config, summary, worker: dict[str, Any]) -> None:
    """Run the pending parts on Ray workers (`worker`: PartWorker's arguments); write each as it comes back;
    count into `summary`."""
    counts: Counter[str] = Counter()
    label_counts: Counter[str] = Counter()
    for meta in metas:
        if meta["done"] is not None:
            summary.resumed_rows += meta["done"]["rows"]
            label_counts.update(meta["done"].get("label_counts", {}))
    if pending:  # Ray is up: `_plan_parts` put their rows into its object store
        import ray

        gpus = config.num_gpus_per_worker or 0
        workers = _workers(ray.cluster_resources(), config.num_workers, gpus)
        size = min(workers, len(pending))
        # the dataset is the part numbers; the rows' references reach every actor once, with its arguments
        dataset = ray.data.from_items([{"part": p} for p in pending], override_num_blocks=len(pending))
        results = dataset.map_batches(
            PartWorker,
            fn_constructor_kwargs={**worker, "part_rows": pending},
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=size),
            num_cpus=1,
            **({"num_gpus": gpus} if gpus else {}),
        )
        todo = sum(meta["items"] for meta in metas if meta["done"] is None)
        with progress_bar(config.progress, todo, what=f"labeling on {size} Ray workers", unit="") as bar:
            task = bar.add_task("ray", total=todo, rate="-")
            begin = time.perf_counter()
            for result in _worker_errors(results.iter_rows()):
                meta = metas[int(result["part"])]
                details = _write_part(folder, result, meta, summary.signature)
                counts.update(details["counts"])
                label_counts.update(details["label_counts"])
                summary.truncated += details["truncated"]
                summary.rows_read += meta["items"]
                elapsed = max(time.perf_counter() - begin, 1e-9)
                bar.update(task, advance=meta["items"], rate=f"{summary.rows_read / elapsed:.1f} docs/s")
    summary.from_cache += counts[FROM_CACHE]
    summary.reused_from_prior_fit += counts[REUSED]
    summary.computed += counts[COMPUTED]
    summary.label_counts = dict(label_counts)


class _RaySession:
    """Ray for one labeling run: started (or joined) at the first `put`, so a run with every part done needs
    no Ray; `close` shuts down only a Ray that this run started."""

    def __init__(self, config: LabelConfig):
        self.config, self.started = config, None

    def put(self, value: Any) -> Any:
        """`ray.put(value)`: a reference to it in the object store."""
        import ray

        if self.started is None:
            self.started = _ray_init(self.config)
        return ray.put(value)

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()


def _workers(resources: dict[str, float], num_workers: int | None, gpus: float) -> int:
    """The actor count: --num-workers, else one per CPU of the cluster (and per `gpus` of its GPUs)."""
    available = resources.get("GPU", 0)
    if gpus and available < gpus:
        raise ConfigError(
            f"--num-gpus-per-worker {gpus}: the Ray cluster has {available:g} GPU(s)",
            hint="join a cluster with GPUs (--ray-address), or leave the option out to label on CPUs",
        )
    if num_workers:
        return num_workers
    workers = max(1, int(resources.get("CPU", 1)))
    return min(workers, max(1, int(available // gpus))) if gpus else workers


class WorkerJobError(ConfigError):
    """A worker's job is not the driver's (`check_worker_job`). Ray hands the driver only the text of an error
    raised while an actor starts, so this text holds the message and the hint on lines of their own."""

    def __str__(self) -> str:
        return f"{self.message}\nhint: {self.hint}"


_WORKER_JOB_ERROR = re.compile(r"WorkerJobError: (.+)\nhint: (.+)")


def _worker_errors(rows):
    """The rows of a Ray dataset; a worker that refused the job (`WorkerJobError`, wrapped in Ray's errors)
    comes out as one ConfigError, so the CLI prints it as one error line and its hint."""
    try:
        yield from rows
    except Exception as error:
        found = _WORKER_JOB_ERROR.search(str(error))
        if found is None:
            raise
        raise ConfigError(found.group(1), hint=found.group(2)) from None
