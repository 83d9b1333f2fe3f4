"""`llmst label --engine ray` on a real local Ray cluster (2 CPUs): the records equal the local engine's (ids,
order, labels, probs within 1e-5, rejects, calibration, signature; repeated texts, an `input_line` column); a driver killed with SIGKILL mid-run and
rerun loses no row and writes none twice; a finished job is not redone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_lines

from llmst import stage
from llmst.backends import spec_model_identity
from llmst.errors import ConfigError
from llmst.label import ray_engine
from llmst.label.config import LabelConfig
from llmst.label.merge import read_manifest, run_merge
from llmst.label.ray_engine import PartWorker, _workers, parts_dir
from llmst.label.run import label_corpus, label_signature, member_prompt_hash

LLMST = [sys.executable, "-m", "llmst.cli"]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """`ray start --head --block` with 2 CPUs and 1 GPU (a declared resource: CUDA stays unused), stopped (by its process id) after the module's tests.

    Token authentication is off for this cluster and its clients (RAY_AUTH_MODE=disabled): Ray >= 2.5x turns it
    on in `ray start` when ~/.ray/auth_token exists (any local `ray.init()` writes one), while `ray status`
    does not send the token, so the test would depend on what an earlier Ray run left in the home folder."""
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    command = [
        RAY, "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "1", "--port", str(port),
        "--temp-dir", str(temp),
        "--include-dashboard", "false", "--disable-usage-stats", "--object-store-memory", str(300 << 20),
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")  # the drivers of the tests (in-process and CLI) too
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        head = subprocess.Popen(
            command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            address = f"127.0.0.1:{port}"
            deadline = time.time() + 180
            while time.time() < deadline:
                assert head.poll() is None, head.stderr.read().decode()
                probe = subprocess.run(
                    [RAY, "status", "--address", address], capture_output=True, text=True, env=env
                )
                if probe.returncode == 0 and "CPU" in probe.stdout:
                    break
                time.sleep(1)
            else:
                pytest.fail(f"the Ray head did not start: {probe.stderr[-2000:]}")
            yield address
        finally:
            head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
            try:
                head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait()


def write_corpus(path: Path, n: int, repeats: bool = False) -> Path:
    """n rows (some long, so some are truncated) plus a malformed line, an empty text and a missing field; with
    `repeats`, also a text repeated 3 times without an id (one id, its hash) and an input column `input_line`."""
    rows = [
        {"id": f"doc-{i}", "text": f"review {i}: {'fine' if i % 3 else 'poor'} film " + "so " * (i % 17)}
        for i in range(n)
    ]
    if repeats:
        rows = [dict(row, input_line=i) for i, row in enumerate(rows)]
        for at in (3, 90, 250):
            rows.insert(at, {"text": "the same text, no id"})
    lines = [json.dumps(row) for row in rows]
    lines.insert(7, '{"id": "broken", ')
    lines.insert(30, json.dumps({"id": "empty", "text": ""}))
    lines.insert(61, json.dumps({"id": "no-text", "title": "x"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def config(tmp_path, tiny_model_dir, **kwargs) -> LabelConfig:
    kwargs.setdefault("task", "sentiment")
    kwargs.setdefault("model", tiny_model_dir)
    kwargs.setdefault("dtype", "float32")
    kwargs.setdefault("progress", False)
    kwargs.setdefault("batch_size", 8)
    kwargs.setdefault("calibrate", "prior")
    kwargs.setdefault("prior_fit_rows", 100)
    return LabelConfig(**kwargs)


def probs(records: list[dict]) -> np.ndarray:
    return np.array([[r["probs"]["negative"], r["probs"]["positive"]] for r in records])


def test_engine_options_are_checked():
    with pytest.raises(ConfigError, match="does not take --shard"):
        LabelConfig(task="sentiment", engine="ray", shard="0/2")
    with pytest.raises(ConfigError, match="--num-workers must be >= 1"):
        LabelConfig(task="sentiment", engine="ray", num_workers=0)
    with pytest.raises(ConfigError, match="--engine: unknown value 'spark'"):
        LabelConfig(task="sentiment", engine="spark")
    # the options of --engine ray are refused without it (one error naming them), not ignored
    with pytest.raises(ConfigError, match="--num-workers, --part-rows: options of --engine ray, given with"):
        LabelConfig(task="sentiment", num_workers=2, part_rows=10)
    for option in ("ray_address", "num_gpus_per_worker"):
        with pytest.raises(ConfigError, match="options of --engine ray"):
            LabelConfig(task="sentiment", **{option: "auto" if option == "ray_address" else 1})
    with pytest.raises(ConfigError, match="--num-gpus-per-worker must be > 0"):
        LabelConfig(task="sentiment", engine="ray", num_gpus_per_worker=0)
    with pytest.raises(ConfigError, match="needs a GPU") as refused:  # vLLM on a worker without a GPU
        LabelConfig(task="sentiment", engine="ray", backend="vllm")
    assert "--num-gpus-per-worker 1" in refused.value.hint
    LabelConfig(task="sentiment", engine="ray", backend="vllm", num_gpus_per_worker=1)
    # the engine changes how, never what: one signature for both
    local = LabelConfig(task="sentiment")
    ray = LabelConfig(task="sentiment", engine="ray", num_workers=2, part_rows=8, num_gpus_per_worker=0.5)
    assert stage.signature_fields(local) == stage.signature_fields(ray)


def test_worker_counts_follow_the_gpus():
    assert _workers({"CPU": 16.0}, None, 0) == 16
    assert _workers({"CPU": 16.0, "GPU": 4.0}, None, 1) == 4
    assert _workers({"CPU": 16.0, "GPU": 4.0}, None, 0.5) == 8
    assert _workers({"CPU": 16.0, "GPU": 4.0}, 3, 1) == 3
    with pytest.raises(ConfigError, match=r"--num-gpus-per-worker 1: the Ray cluster has 0 GPU\(s\)"):
        _workers({"CPU": 16.0}, None, 1)


class ClosingBackend:
    """Delegates to a real backend and records `close` (the worker must release its backend)."""

    closed: list[str] = []

    def __init__(self, inner):
        self.inner = inner

    def close(self):
        ClosingBackend.closed.append(self.inner.fingerprint)
        self.inner.close()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_worker_refuses_another_prompt_or_model_and_closes_its_backend(
    tmp_path, tiny_model_dir, monkeypatch
):
    """Each worker builds the task, demonstrations and model from files on its own node: when they are not the
    driver's (faked here by the driver's hash and identity), it refuses to start, and releases its backend."""
    from llmst.backends import make_backend

    monkeypatch.setattr(ray_engine, "make_backend", lambda spec: ClosingBackend(make_backend(spec)))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the worker's; not this process's
    cfg = config(tmp_path, tiny_model_dir, engine="ray", calibrate="none", cache=False)
    options = asdict(cfg)
    ClosingBackend.closed.clear()
    with pytest.raises(ConfigError, match="loads another model than the driver"):
        PartWorker(options, "in.jsonl", "none", [0.0, 0.0], member_prompt_hash(cfg), "x")
    assert len(ClosingBackend.closed) == 1
    model = spec_model_identity(cfg.backend_spec())
    with pytest.raises(ConfigError, match="builds another prompt than the driver") as refused:
        PartWorker(options, "in.jsonl", "none", [0.0, 0.0], "0123456789ab", model)
    assert "the task YAML or the --few-shot file differs" in str(refused.value)
    assert len(ClosingBackend.closed) == 2
    worker = PartWorker(options, "in.jsonl", "none", [0.0, 0.0], member_prompt_hash(cfg), model)
    assert len(ClosingBackend.closed) == 2
    del worker  # Ray Data drops its workers this way when the job ends: the backend is closed
    assert len(ClosingBackend.closed) == 3


def test_ray_records_equal_the_local_engine(tmp_path, tiny_model_dir, ray_cluster):
    src = write_corpus(tmp_path / "in.jsonl", 300, repeats=True)
    local_cfg = config(tmp_path, tiny_model_dir, cache=False)
    local = label_corpus(src, tmp_path / "local.jsonl", local_cfg)
    ray_cfg = replace(
        local_cfg, engine="ray", ray_address=ray_cluster, num_workers=2, part_rows=64,
        cache_path=str(tmp_path / "ray-cache.sqlite"), cache=True,
    )  # fmt: skip
    out = tmp_path / "ray.jsonl"
    summary = label_corpus(src, out, ray_cfg)

    expected, got = read_lines(tmp_path / "local.jsonl"), read_lines(out)
    assert summary.labeled == local.labeled == 303 and summary.rejected == local.rejected == 3
    assert [r["id"] for r in got] == [r["id"] for r in expected]  # one stable order: the input's
    assert [r.get("input_line") for r in got] == [r.get("input_line") for r in expected]  # an input field
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    assert np.abs(probs(got) - probs(expected)).max() < 1e-5
    assert [set(r) for r in got] == [set(r) for r in expected]
    assert [r["truncated"] for r in got] == [r["truncated"] for r in expected]
    assert summary.calibration_bias == local.calibration_bias  # fitted once, on the driver, as locally
    assert {json.dumps(r["calibration_bias"]) for r in got} == {json.dumps(expected[0]["calibration_bias"])}
    assert read_lines(tmp_path / "ray.jsonl.rejects.jsonl") == read_lines(
        tmp_path / "local.jsonl.rejects.jsonl"
    )
    assert summary.label_counts == local.label_counts and summary.truncated == local.truncated
    assert (
        summary.rows_read == 306
        and summary.from_cache + summary.computed + summary.reused_from_prior_fit == 303
    )
    # the workers reuse the driver's prior-fit answers (not its cache: the same rows, counted alike)
    assert summary.reused_from_prior_fit == local.reused_from_prior_fit > 90
    # the same signature as the local engine's: a pipeline takes either output for the job's
    assert summary.signature == local.signature == label_signature(src, local_cfg)
    assert stage.is_current(out, local.signature)
    parts = read_manifest(parts_dir(out) / "manifest.json")
    assert len(parts) == 5 and all(stage.marker_path(p).exists() for p in parts)  # 306 input rows / 64
    again = label_corpus(src, out, ray_cfg)  # a finished job: nothing to do
    assert again.labeled == 303 and again.rows_read == 0 and again.computed == 0


def test_killed_driver_then_rerun_loses_and_repeats_no_row(tmp_path, tiny_model_dir, ray_cluster):
    src = write_corpus(tmp_path / "in.jsonl", 400)
    out = tmp_path / "out.jsonl"
    args = [
        "label", str(src), "-o", str(out), "--task", "sentiment", "--model", tiny_model_dir, "--dtype", "float32",
        "--batch-size", "2", "--calibrate", "none", "-q", "--no-cache",
        "--engine", "ray", "--ray-address", ray_cluster, "--num-workers", "2", "--part-rows", "20",
    ]  # fmt: skip
    driver = subprocess.Popen(LLMST + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    folder = parts_dir(out)
    deadline = time.time() + 400
    while time.time() < deadline:
        if folder.exists() and len(list(folder.glob("part-*.jsonl.signature.json"))) >= 3:
            break
        assert driver.poll() is None, driver.stderr.read().decode()
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    done_before = len(list(folder.glob("part-*.jsonl.signature.json")))
    assert 3 <= done_before < 21 and not out.exists(), "the kill should land mid-run"
    result = subprocess.run(LLMST + args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["resumed_rows"] >= 3 * 19 and summary["labeled"] == 400 and summary["rejected"] == 3
    final = read_lines(out)
    assert [r["id"] for r in final] == [f"doc-{i}" for i in range(400)]  # every row once, in input order
    local = tmp_path / "local.jsonl"
    label_corpus(src, local, config(tmp_path, tiny_model_dir, calibrate="none", cache=False))
    assert np.abs(probs(final) - probs(read_lines(local))).max() < 1e-5


def ray_config(tmp_path, tiny_model_dir, ray_cluster, **kwargs) -> LabelConfig:
    kwargs = {"calibrate": "none", "cache": False, "engine": "ray", "ray_address": ray_cluster, **kwargs}
    return config(tmp_path, tiny_model_dir, **kwargs)


def test_a_rerun_with_another_limit_reuses_the_parts(tmp_path, tiny_model_dir, ray_cluster):
    src = write_corpus(tmp_path / "in.jsonl", 40)
    local_cfg = config(tmp_path, tiny_model_dir, calibrate="none", cache=False, limit=20)
    label_corpus(src, tmp_path / "local.jsonl", local_cfg)
    cfg = ray_config(tmp_path, tiny_model_dir, ray_cluster, num_workers=2, part_rows=8, limit=10)
    out = tmp_path / "out.jsonl"
    first = label_corpus(src, out, cfg)
    assert first.labeled + first.rejected == 10
    second = label_corpus(src, out, replace(cfg, limit=20))  # part 0 (lines 1-8, one malformed) is kept
    assert second.resumed_rows == 7 and second.labeled + second.rejected == 20
    expected, got = read_lines(tmp_path / "local.jsonl"), read_lines(out)
    assert [r["id"] for r in got] == [r["id"] for r in expected]
    assert np.abs(probs(got) - probs(expected)).max() < 1e-5
    assert read_lines(tmp_path / "out.jsonl.rejects.jsonl") == read_lines(
        tmp_path / "local.jsonl.rejects.jsonl"
    )
    assert stage.is_current(out, label_signature(src, local_cfg))
    # a part without its marker (a merge by hand before the job finished): the hint is the Ray command's
    stage.clear_marker(parts_dir(out) / "part-000001.jsonl")
    with pytest.raises(ConfigError, match="has not finished") as refused:
        run_merge([str(parts_dir(out) / "manifest.json")], tmp_path / "by-hand.jsonl")
    assert "--engine ray" in refused.value.hint and "--shard" not in refused.value.hint


def test_parts_travel_as_object_store_references_and_a_finished_job_needs_no_ray(
    tmp_path, tiny_model_dir, ray_cluster, monkeypatch
):
    """The driver keeps no pending part's rows: each part goes to Ray's object store as it is read (the
    driver holds references). A rerun whose parts are all done merges them without starting Ray."""
    import ray

    put = ray_engine._RaySession.put
    sent = []

    def spy(self, rows):
        ref = put(self, rows)
        sent.append((len(rows), ref))
        return ref

    monkeypatch.setattr(ray_engine._RaySession, "put", spy)
    src = write_corpus(tmp_path / "in.jsonl", 30)
    cfg = ray_config(tmp_path, tiny_model_dir, ray_cluster, num_workers=2, part_rows=8, calibrate="none")
    out = tmp_path / "out.jsonl"
    first = label_corpus(src, out, cfg)
    lines = len(src.read_text().splitlines())
    assert [n for n, _ in sent] == [min(8, lines - i) for i in range(0, lines, 8)]  # one part at a time
    assert all(isinstance(ref, ray.ObjectRef) for _, ref in sent)
    stage.clear_marker(out)  # the merged output lost (its marker gone); every part is done
    out.unlink()

    def no_ray(*args, **kwargs):
        raise AssertionError("a job whose parts are all done must not start Ray")

    monkeypatch.setattr(ray_engine, "_ray_init", no_ray)
    again = label_corpus(src, out, cfg)
    assert again.resumed_rows == first.labeled and again.labeled == first.labeled
    assert len(read_lines(out)) == first.labeled


def test_an_output_of_another_job_is_refused_unless_overwrite(tmp_path, tiny_model_dir, ray_cluster):
    src = write_corpus(tmp_path / "in.jsonl", 20)
    cfg = ray_config(tmp_path, tiny_model_dir, ray_cluster, num_workers=1)
    out = tmp_path / "out.jsonl"
    label_corpus(src, out, cfg)
    before = out.read_bytes()
    other = replace(cfg, calibrate="contextual")
    with pytest.raises(ConfigError, match="was written by a different labeling job") as refused:
        label_corpus(src, out, other)
    assert "--overwrite" in refused.value.hint
    assert out.read_bytes() == before and stage.is_current(out, label_signature(src, cfg))
    write_corpus(src, 21)
    with pytest.raises(ConfigError, match="was started on other input content"):
        label_corpus(src, out, cfg)
    assert out.read_bytes() == before
    summary = label_corpus(src, out, replace(other, overwrite=True))
    assert summary.labeled == 21 and stage.is_current(out, label_signature(src, other))


def test_workers_hold_the_gpus_asked_for(tmp_path, tiny_model_dir, ray_cluster, monkeypatch):
    import ray.data

    asked = []
    map_batches = ray.data.Dataset.map_batches

    def spy(self, fn, *args, **kwargs):
        asked.append(kwargs.get("num_gpus"))
        return map_batches(self, fn, *args, **kwargs)

    monkeypatch.setattr(ray.data.Dataset, "map_batches", spy)
    src = write_corpus(tmp_path / "in.jsonl", 20)
    cfg = ray_config(tmp_path, tiny_model_dir, ray_cluster, part_rows=8, num_gpus_per_worker=0.5)
    summary = label_corpus(src, tmp_path / "out.jsonl", cfg)  # 2 workers share the cluster's one GPU
    assert asked == [0.5] and summary.labeled == 20
    with pytest.raises(ConfigError, match=r"--num-gpus-per-worker 2: the Ray cluster has 1 GPU\(s\)"):
        label_corpus(src, tmp_path / "two.jsonl", replace(cfg, num_gpus_per_worker=2))


class OtherModel:
    """The driver's backend with another fingerprint, as when a node holds other weights at the same path."""

    def __init__(self, inner):
        self.inner, self.fingerprint = inner, "other-weights"

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_workers_with_another_model_stop_the_job(tmp_path, tiny_model_dir, ray_cluster):
    from llmst.backends import make_backend

    src = write_corpus(tmp_path / "in.jsonl", 20)
    cfg = ray_config(tmp_path, tiny_model_dir, ray_cluster, num_workers=1)
    driver = OtherModel(make_backend(cfg.backend_spec()))
    with pytest.raises(ConfigError, match="loads another model than the driver") as refused:
        label_corpus(src, tmp_path / "out.jsonl", cfg, backend=driver)
    assert refused.value.hint.startswith("give every node the same model files")  # one error and its hint
    assert not (tmp_path / "out.jsonl").exists()


def test_predict_on_ray_equals_one_local_prediction_and_resumes(tmp_path, tiny_bert_dir, ray_cluster):
    """`llmst predict --engine ray`: shards as Ray tasks, merged into the records, rejects and signature of one
    local prediction; a rerun after OUT is lost redoes no shard; a half-done run redoes only the missing one."""
    from llmst.train import PredictConfig, TrainConfig, predict_file, predict_signature, train

    labeled = tmp_path / "labeled.jsonl"
    labeled.write_text(
        "".join(
            json.dumps({"text": f"film {i} was {'fine' if i % 2 else 'poor'}", "label": i % 2}) + "\n"
            for i in range(16)
        )
    )
    student = tmp_path / "student"
    cfg = TrainConfig(
        student=tiny_bert_dir, labels=["negative", "positive"], epochs=1, batch_size=8, progress=False
    )
    train(labeled, student, cfg)
    src = write_corpus(tmp_path / "in.jsonl", 60)
    local = predict_file(student, src, tmp_path / "local.jsonl", PredictConfig(progress=False))
    ray_cfg = PredictConfig(progress=False, engine="ray", ray_address=ray_cluster, num_workers=2)
    out = tmp_path / "ray.jsonl"
    summary = predict_file(student, src, out, ray_cfg)
    assert summary["shards"] == 2 and summary["resumed_shards"] == 0
    assert (summary["labeled"], summary["rejected"]) == (local["labeled"], local["rejected"]) == (60, 3)
    assert read_lines(out) == read_lines(tmp_path / "local.jsonl")
    assert read_lines(tmp_path / "ray.jsonl.rejects.jsonl") == read_lines(
        tmp_path / "local.jsonl.rejects.jsonl"
    )
    assert stage.is_current(out, predict_signature(student, src, PredictConfig()))
    out.unlink()
    stage.clear_marker(out)
    shard = tmp_path / "ray.jsonl.parts" / "shard-00001-of-00002.jsonl"
    stage.clear_marker(shard)  # as if the driver died while shard 1 ran
    again = predict_file(student, src, out, ray_cfg)
    assert again["resumed_shards"] == 1 and read_lines(out) == read_lines(tmp_path / "local.jsonl")
    with pytest.raises(ConfigError, match="exists"):
        predict_file(student, src, out, ray_cfg)


def test_predict_engine_options_are_checked():
    from llmst.train import PredictConfig

    with pytest.raises(ConfigError, match="does not take --shard"):
        PredictConfig(engine="ray", shard="0/2")
    with pytest.raises(
        ConfigError, match="--num-workers: options of --engine ray, given with --engine local"
    ):
        PredictConfig(num_workers=2)
    with pytest.raises(ConfigError, match="--num-workers must be >= 1"):
        PredictConfig(engine="ray", num_workers=0)


def _pair_file(path: Path, n: int) -> Path:
    """n pairs plus a malformed line and a pair without text_b (rejects of every engine)."""
    lines = [
        json.dumps({"id": f"p{i}", "text_a": f"a man plays guitar {i}", "text_b": f"someone cooks {i % 7}"})
        for i in range(n)
    ]
    lines.insert(5, '{"id": "broken", ')
    lines.insert(17, json.dumps({"id": "no-b", "text_a": "only one side"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_pairs_score_on_ray_equals_one_local_run(tmp_path, tiny_cross_encoder, ray_cluster):
    """`llmst pairs score --engine ray`: the parts of a cross-encoder teacher join into the scores, rejects and
    signature of one local run; a rerun after the driver lost OUT redoes only the unfinished part."""
    from llmst.pairs.config import ScoreConfig
    from llmst.pairs.score import score_pairs, score_signature

    src = _pair_file(tmp_path / "pairs.jsonl", 60)
    teacher = f"cross-encoder:{tiny_cross_encoder}"
    local_cfg = ScoreConfig(teachers=teacher, progress=False, cache=False)
    local = score_pairs(src, tmp_path / "local.jsonl", local_cfg)
    ray_cfg = replace(local_cfg, engine="ray", ray_address=ray_cluster, num_workers=2)
    out = tmp_path / "ray.jsonl"
    report = score_pairs(src, out, ray_cfg)
    assert (report["scored"], report["rejected"]) == (local["scored"], local["rejected"]) == (60, 2)
    assert read_lines(out) == read_lines(tmp_path / "local.jsonl")
    assert read_lines(tmp_path / "ray.jsonl.rejects.jsonl") == read_lines(
        tmp_path / "local.jsonl.rejects.jsonl"
    )
    assert stage.is_current(out, score_signature(src, local_cfg))
    name = Path(tiny_cross_encoder).name
    teacher_file = tmp_path / f"ray.jsonl.teacher-{name}.jsonl"
    local_teacher = read_lines(tmp_path / f"local.jsonl.teacher-{name}.jsonl")
    assert sorted(read_lines(teacher_file), key=lambda r: r["id"]) == sorted(
        local_teacher, key=lambda r: r["id"]
    )
    assert [r["reason"] for r in read_lines(Path(f"{teacher_file}.rejects.jsonl"))] == [
        r["reason"] for r in read_lines(tmp_path / f"local.jsonl.teacher-{name}.jsonl.rejects.jsonl")
    ]
    parts = sorted(parts_dir(teacher_file).glob("part-*-of-00002.jsonl"))
    assert len(parts) == 2 and all(read_lines(p) for p in parts)  # both shards got pairs
    for path in (out, teacher_file):  # as if the driver died while part 1 ran
        path.unlink()
        stage.clear_marker(path)
    stage.clear_marker(parts[1])
    part0_marker = stage.marker_path(parts[0]).stat().st_mtime_ns
    again = score_pairs(src, out, ray_cfg)
    assert again["scored"] == 60 and read_lines(out) == read_lines(tmp_path / "local.jsonl")
    assert stage.marker_path(parts[0]).stat().st_mtime_ns == part0_marker  # a finished part is not redone
    assert stage.read_marker(parts[1]) is not None


def test_killed_pairs_score_driver_then_rerun_loses_and_repeats_no_pair(
    tmp_path, tiny_cross_encoder, ray_cluster
):
    src = _pair_file(tmp_path / "pairs.jsonl", 3000)
    out = tmp_path / "scored.jsonl"
    args = [
        "pairs", "score", str(src), "-o", str(out), "--teacher", f"cross-encoder:{tiny_cross_encoder}",
        "--batch-size", "1", "-q", "--no-cache", "--engine", "ray", "--ray-address", ray_cluster,
        "--num-workers", "2",
    ]  # fmt: skip
    driver = subprocess.Popen(LLMST + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    teacher_file = tmp_path / f"scored.jsonl.teacher-{Path(tiny_cross_encoder).name}.jsonl"
    checkpoints = [parts_dir(teacher_file) / f"part-0000{i}-of-00002.jsonl.progress.json" for i in (0, 1)]

    def consumed() -> list[int]:
        values = []
        for path in checkpoints:
            try:
                values.append(json.loads(path.read_text())["rows_consumed"])
            except (OSError, ValueError):
                values.append(0)
        return values

    deadline = time.time() + 400
    while time.time() < deadline and max(consumed()) < 256:
        assert driver.poll() is None, driver.stderr.read().decode()
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert 0 < max(consumed()) < 3002 and not out.exists(), "the kill should land mid-run"
    result = subprocess.run(LLMST + args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["scored"], report["rejected"]) == (3000, 2)
    assert [r["id"] for r in read_lines(out)] == [f"p{i}" for i in range(3000)]  # once each, input order
    teacher_ids = [r["id"] for r in read_lines(teacher_file)]
    assert sorted(teacher_ids) == sorted(f"p{i}" for i in range(3000))  # no pair scored twice
    from sentence_transformers.cross_encoder import CrossEncoder

    rows = read_lines(out)
    expected = CrossEncoder(tiny_cross_encoder).predict([(r["text_a"], r["text_b"]) for r in rows])
    assert np.abs(np.array([r["score"] for r in rows]) - expected).max() < 1e-5


def test_pairs_score_engine_options_are_checked():
    from llmst.pairs.config import ScoreConfig

    with pytest.raises(ConfigError, match="--ray-address: options of --engine ray"):
        ScoreConfig(teachers="cross-encoder:x", ray_address="auto")
    with pytest.raises(ConfigError, match="--num-workers must be >= 1"):
        ScoreConfig(teachers="cross-encoder:x", engine="ray", num_workers=0)


def test_an_llm_judge_on_ray_scores_like_the_local_judge(tmp_path, tiny_model_dir, ray_cluster):
    """An llm teacher with --engine ray is `llmst label --engine ray` over the pairs: the same scores."""
    from llmst.pairs.config import ScoreConfig
    from llmst.pairs.score import score_pairs

    src = _pair_file(tmp_path / "pairs.jsonl", 40)
    local_cfg = ScoreConfig(teachers=f"llm:{tiny_model_dir}", progress=False, cache=False)
    score_pairs(src, tmp_path / "local.jsonl", local_cfg)
    ray_cfg = replace(local_cfg, engine="ray", ray_address=ray_cluster, num_workers=2)
    report = score_pairs(src, tmp_path / "ray.jsonl", ray_cfg)
    assert (report["scored"], report["rejected"]) == (40, 2)
    local, ray_rows = read_lines(tmp_path / "local.jsonl"), read_lines(tmp_path / "ray.jsonl")
    assert [r["id"] for r in ray_rows] == [r["id"] for r in local]
    assert np.abs(np.array([r["score"] for r in ray_rows]) - [r["score"] for r in local]).max() < 1e-5
    name = Path(tiny_model_dir).name
    assert parts_dir(tmp_path / f"ray.jsonl.teacher-{name}.labeled.jsonl").is_dir()  # label's Ray parts
