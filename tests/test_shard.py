"""`llmst label --shard I/N` and `llmst merge`: a deterministic, complete partition; shards merge back into the
unsharded output (same ids, order, labels, probs, rejects, calibration, signature), also with repeated ids and
texts; merge refuses missing, incomplete, repeated and mixed shards and records in the wrong shard; a shard
resumes after a crash and after kill -9."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
from conftest import read_lines, write_jsonl

from llmst import stage
from llmst.backends.hf import HFBackend
from llmst.errors import ConfigError
from llmst.label.config import LabelConfig
from llmst.label.merge import MergeConfig, run_merge
from llmst.label.run import label_corpus, label_signature
from llmst.shard import INPUT_LINE, parse_shard, shard_of

LLMST = [sys.executable, "-m", "llmst.cli"]


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return HFBackend(tiny_model_dir, dtype="float32", batch_size=4, max_context=128)


def corpus(n: int) -> list[dict]:
    return [
        {"id": f"doc-{i}", "text": f"review {i}: {'great' if i % 3 else 'dull'} film {i * 7}"}
        for i in range(n)
    ]


def write_corpus_with_bad_rows(path, n: int):
    """n good rows plus a malformed line, an empty text and a row without its text field."""
    lines = [json.dumps(row) for row in corpus(n)]
    lines.insert(5, '{"id": "broken", "text": ')
    lines.insert(9, json.dumps({"id": "empty", "text": "  "}))
    lines.insert(13, json.dumps({"id": "no-text"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def config(tmp_path, tiny_model_dir, **kwargs) -> LabelConfig:
    kwargs.setdefault("task", "sentiment")
    kwargs.setdefault("model", tiny_model_dir)
    kwargs.setdefault("dtype", "float32")
    kwargs.setdefault("cache_path", str(tmp_path / "cache.sqlite"))
    kwargs.setdefault("progress", False)
    kwargs.setdefault("batch_size", 4)
    return LabelConfig(**kwargs)


def label_shards(src, tmp_path, cfg, backend, count: int, prefix: str = "out"):
    paths, summaries = [], []
    for index in range(count):
        path = tmp_path / f"{prefix}.shard{index}.jsonl"
        summaries.append(label_corpus(src, path, replace(cfg, shard=f"{index}/{count}"), backend=backend))
        paths.append(path)
    return paths, summaries


def probs(records: list[dict]) -> np.ndarray:
    return np.array([[r["probs"]["negative"], r["probs"]["positive"]] for r in records])


def test_shard_option_parses_and_the_partition_is_a_stable_hash():
    assert parse_shard("1/4") == (1, 4) and parse_shard(" 0 / 1 ") == (0, 1) and parse_shard(None) is None
    for bad in ("4/4", "1/0", "-1/3", "a/b", "1"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)
    assert LabelConfig(task="sentiment", shard=" 2 / 3").shard == "2/3"
    with pytest.raises(ConfigError, match="0 <= I < N"):
        LabelConfig(task="sentiment", shard="3/3")
    # sha256, not Python's salted hash(): the same in every process, on every machine
    assert [shard_of(f"doc-{i}", 4) for i in range(8)] == [shard_of(f"doc-{i}", 4) for i in range(8)]
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from llmst.shard import shard_of; print([shard_of(f'doc-{i}', 4) for i in range(8)])",
        ],
        capture_output=True,
        text=True,
    )
    assert done.stdout.strip() == str([shard_of(f"doc-{i}", 4) for i in range(8)])
    counts = np.bincount([shard_of(f"doc-{i}", 4) for i in range(4000)], minlength=4)
    assert counts.min() > 900  # an even split


def test_unsharded_signatures_do_not_change_and_the_shard_does(tmp_path, tiny_model_dir):
    src = write_jsonl(tmp_path / "in.jsonl", corpus(4))
    cfg = config(tmp_path, tiny_model_dir)
    assert "shard" not in stage.signature_fields(cfg)  # outputs labeled before --shard existed stay current
    signatures = {label_signature(src, replace(cfg, shard=s)) for s in (None, "0/2", "1/2", "0/3")}
    assert len(signatures) == 4


def test_shards_merge_into_the_unsharded_output(tmp_path, backend, tiny_model_dir):
    src = write_corpus_with_bad_rows(tmp_path / "in.jsonl", 60)
    # the prior is fitted on the first 25 rows of the whole input, whichever shard is labeled
    cfg = config(tmp_path, tiny_model_dir, calibrate="prior", prior_fit_rows=25)
    whole = label_corpus(src, tmp_path / "whole.jsonl", replace(cfg, cache=False), backend=backend)
    expected = read_lines(tmp_path / "whole.jsonl")
    paths, summaries = label_shards(src, tmp_path, replace(cfg, cache=False), backend, 3)

    shard_records = [read_lines(p) for p in paths]
    assert all(s.rows_read == s.labeled + s.rejected + s.other_shards == 63 for s in summaries)
    assert sum(s.labeled for s in summaries) == whole.labeled == 60
    assert sum(s.rejected for s in summaries) == whole.rejected == 3
    assert all(len(r) > 5 for r in shard_records)  # each shard holds a part, none all of it
    for index, records in enumerate(shard_records):
        assert all(shard_of(r["id"], 3) == index for r in records)
        assert [r[INPUT_LINE] for r in records] == sorted(r[INPUT_LINE] for r in records)
    # every shard fits the same calibration, on the same rows, as the unsharded run
    assert all(s.calibration_bias == whole.calibration_bias for s in summaries)
    assert {json.dumps(r["calibration_bias"]) for rs in shard_records for r in rs} == {
        json.dumps(expected[0]["calibration_bias"])
    }

    merged_path = tmp_path / "merged.jsonl"
    report = run_merge([str(p) for p in reversed(paths)], merged_path)  # any argument order
    merged = read_lines(merged_path)
    assert report["rows"] == 60 and report["rejected"] == 3 and report["shards"] == 3
    assert [r["id"] for r in merged] == [r["id"] for r in expected]  # input order restored
    assert [r["label"] for r in merged] == [r["label"] for r in expected]
    assert np.allclose(probs(merged), probs(expected), atol=1e-5)
    assert [set(r) for r in merged] == [set(r) for r in expected]  # no input_line left
    assert read_lines(tmp_path / "merged.jsonl.rejects.jsonl") == read_lines(
        tmp_path / "whole.jsonl.rejects.jsonl"
    )
    # the merged output is the unsharded job's output: same signature
    assert report["signature"] == whole.signature and stage.is_current(merged_path, whole.signature)
    assert stage.is_current(merged_path, label_signature(src, cfg))
    again = run_merge([str(p) for p in paths], merged_path)  # a finished merge does nothing
    assert again["already"] and again["rows"] == 60
    assert run_merge([str(p) for p in paths], tmp_path / "whole.jsonl")["already"]  # the same job's output
    (tmp_path / "taken.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match="already exists"):
        run_merge([str(p) for p in paths], tmp_path / "taken.jsonl")
    replaced = run_merge([str(p) for p in paths], tmp_path / "taken.jsonl", MergeConfig(overwrite=True))
    assert replaced["rows"] == 60 and read_lines(tmp_path / "taken.jsonl") == merged
    run_merge([str(tmp_path / "out.shard*.jsonl")], tmp_path / "globbed.jsonl")  # a quoted glob
    assert read_lines(tmp_path / "globbed.jsonl") == merged


def test_merge_refuses_missing_incomplete_repeated_and_mixed_shards(tmp_path, backend, tiny_model_dir):
    src = write_jsonl(tmp_path / "in.jsonl", corpus(24))
    cfg = config(tmp_path, tiny_model_dir, calibrate="none")
    paths, _ = label_shards(src, tmp_path, cfg, backend, 3)
    out = tmp_path / "merged.jsonl"
    with pytest.raises(ConfigError, match=r"1 of 3 shards missing: 2/3"):
        run_merge([str(paths[0]), str(paths[1])], out)
    with pytest.raises(ConfigError, match="shard 1/3 is given twice"):
        copy = tmp_path / "copy.jsonl"
        shutil.copy(paths[1], copy)
        shutil.copy(stage.marker_path(paths[1]), stage.marker_path(copy))
        run_merge([str(p) for p in paths] + [str(copy)], out)
    other, _ = label_shards(src, tmp_path, replace(cfg, calibrate="contextual"), backend, 3, prefix="other")
    with pytest.raises(ConfigError, match="come from different jobs"):
        run_merge([str(paths[0]), str(paths[1]), str(other[2])], out)
    four, _ = label_shards(src, tmp_path, cfg, backend, 4, prefix="four")
    with pytest.raises(ConfigError, match="another shard count: 4 vs 3"):
        run_merge([str(p) for p in paths] + [str(four[3])], out)
    unsharded = tmp_path / "whole.jsonl"
    label_corpus(src, unsharded, cfg, backend=backend)
    with pytest.raises(ConfigError, match="labeled without --shard"):
        run_merge([str(unsharded)], out)
    stage.clear_marker(paths[2])  # as while its run is still going (or was killed)
    with pytest.raises(ConfigError, match=r"incomplete: its labeling run has not finished"):
        run_merge([str(p) for p in paths], out)
    with pytest.raises(ConfigError, match="not found"):
        run_merge([str(tmp_path / "nope.jsonl")], out)
    assert not out.exists()  # nothing written by a refused merge


def corpus_with_repeats(n: int) -> list[dict]:
    """n rows, then repeated texts without an id (their id is the text's hash), two rows sharing an explicit
    id with other texts, and an input column named `input_line` (an input field like any other)."""
    rows = [dict(row, input_line=f"col-{i}") for i, row in enumerate(corpus(n))]
    rows.insert(4, {"text": "a text seen three times"})
    rows.insert(9, {"text": "a text seen three times"})
    rows.append({"text": "a text seen three times", "input_line": 7})
    rows.append({"id": "doc-3", "text": "the same id again, another text"})
    return rows


def test_repeated_ids_and_texts_merge_into_the_unsharded_output(tmp_path, backend, tiny_model_dir):
    """Ids need not be unique: the local engine labels every input line (one record each); the merge keys
    records by input line, so it writes the same records in the same order (equal ids share one shard)."""
    src = write_jsonl(tmp_path / "in.jsonl", corpus_with_repeats(20))
    cfg = config(tmp_path, tiny_model_dir, calibrate="none")
    label_corpus(src, tmp_path / "whole.jsonl", cfg, backend=backend)
    expected = read_lines(tmp_path / "whole.jsonl")
    ids = [r["id"] for r in expected]
    assert len(expected) == 24 and ids.count("doc-3") == 2 and ids.count(ids[4]) == 3
    assert [r["input_line"] for r in expected[:3]] == ["col-0", "col-1", "col-2"]  # input fields as given
    paths, _ = label_shards(src, tmp_path, cfg, backend, 2)
    report = run_merge([str(p) for p in paths], tmp_path / "merged.jsonl")
    merged = read_lines(tmp_path / "merged.jsonl")
    assert report["rows"] == 24 and [r["id"] for r in merged] == ids
    assert [{k: v for k, v in r.items() if k != "probs"} for r in merged] == [
        {k: v for k, v in r.items() if k != "probs"} for r in expected
    ]
    assert np.allclose(probs(merged), probs(expected), atol=1e-5)


def test_the_reserved_input_line_field_is_a_reject_in_every_engine(tmp_path, backend, tiny_model_dir):
    rows = corpus(12)
    rows[5][INPUT_LINE] = 3  # the field sharded records carry: an input that has it is refused, row by row
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    cfg = config(tmp_path, tiny_model_dir, calibrate="none")
    whole = label_corpus(src, tmp_path / "whole.jsonl", cfg, backend=backend)
    assert whole.labeled == 11 and whole.rejected == 1
    reject = read_lines(tmp_path / "whole.jsonl.rejects.jsonl")[0]
    assert reject["line"] == 6 and f"'{INPUT_LINE}' is reserved" in reject["reason"]
    paths, _ = label_shards(src, tmp_path, cfg, backend, 2)
    run_merge([str(p) for p in paths], tmp_path / "merged.jsonl")
    assert read_lines(tmp_path / "merged.jsonl") == read_lines(tmp_path / "whole.jsonl")
    assert read_lines(tmp_path / "merged.jsonl.rejects.jsonl") == [reject]


def test_merge_refuses_a_record_in_the_wrong_shard(tmp_path, backend, tiny_model_dir):
    src = write_jsonl(tmp_path / "in.jsonl", corpus(20))
    cfg = config(tmp_path, tiny_model_dir, calibrate="none")
    paths, _ = label_shards(src, tmp_path, cfg, backend, 2)
    first, second = read_lines(paths[0]), read_lines(paths[1])
    moved = max(second, key=lambda r: r[INPUT_LINE])
    if moved[INPUT_LINE] < first[-1][INPUT_LINE]:  # append the later line, so the input order still holds
        first, second, paths = second, first, paths[::-1]
        moved = max(second, key=lambda r: r[INPUT_LINE])
    target, home = shard_of(first[0]["id"], 2), shard_of(moved["id"], 2)
    with open(paths[0], "a", encoding="utf-8") as handle:
        handle.write(json.dumps(moved) + "\n")
    with pytest.raises(ConfigError, match=rf"id '{moved['id']}' belongs to shard {home}/2, not {target}/2"):
        run_merge([str(p) for p in paths], tmp_path / "merged.jsonl")


def test_a_shard_resumes_after_a_crash_and_refuses_another_shard(tmp_path, backend, tiny_model_dir):
    from test_label import FailingBackend

    src = write_jsonl(tmp_path / "in.jsonl", corpus(120))
    cfg = config(tmp_path, tiny_model_dir, calibrate="prior", prior_fit_rows=30, shard="1/2")
    out = tmp_path / "out.shard1.jsonl"
    with pytest.raises(RuntimeError, match="injected"):  # the 3rd score call: the 1st of the main pass
        label_corpus(src, out, cfg, backend=FailingBackend(backend, fail_on_call=4))
    partial = read_lines(out)
    assert 0 < len(partial) < 60 and not stage.is_current(out, label_signature(src, cfg))
    with open(out, "ab") as handle:  # a half-written line, as after kill -9 mid-write
        handle.write(b'{"id": "half')
    with pytest.raises(ConfigError, match="started on shard 1/2, not shard 0/2"):
        label_corpus(src, out, replace(cfg, shard="0/2"), backend=backend)
    with pytest.raises(ConfigError, match="started on shard 1/2, not the whole input"):
        label_corpus(src, out, replace(cfg, shard=None), backend=backend)
    summary = label_corpus(src, out, cfg, backend=backend)
    resumed = read_lines(out)
    clean = tmp_path / "clean.shard1.jsonl"
    label_corpus(src, clean, cfg, backend=backend)
    assert summary.resumed_rows == len(partial)
    assert [r["id"] for r in resumed] == [r["id"] for r in read_lines(clean)]
    assert len({r["id"] for r in resumed}) == len(resumed)
    assert summary.labeled + summary.other_shards == 120
    label_corpus(src, tmp_path / "out.shard0.jsonl", replace(cfg, shard="0/2"), backend=backend)
    report = run_merge([str(tmp_path / "out.shard0.jsonl"), str(out)], tmp_path / "merged.jsonl")
    assert report["rows"] == 120
    assert [r["id"] for r in read_lines(tmp_path / "merged.jsonl")] == [r["id"] for r in corpus(120)]


def test_cli_shards_killed_then_rerun_then_merged(tmp_path, tiny_model_dir):
    """Job-array style: each shard is its own `llmst label --shard I/2` process; one is killed with SIGKILL
    mid-run and rerun; `llmst merge` then gives every row once, in input order."""
    rows = [{"id": f"doc-{i}", "text": f"document {i} " + "word " * (i % 11)} for i in range(240)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)

    def args(index: int) -> list[str]:
        return [
            "label", str(src), "-o", str(tmp_path / f"out.shard{index}.jsonl"), "--shard", f"{index}/2",
            "--task", "sentiment", "--model", tiny_model_dir, "--dtype", "float32", "--batch-size", "2",
            "--calibrate", "none", "-q", "--cache-path", str(tmp_path / "cache.sqlite"),
        ]  # fmt: skip

    process = subprocess.Popen(LLMST + args(0), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoint = tmp_path / "out.shard0.jsonl.progress.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if checkpoint.exists() and json.loads(checkpoint.read_text())["labeled"] >= 16:
            break
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(read_lines(tmp_path / "out.shard0.jsonl"))
    assert 0 < done_before < 110, "the kill should land mid-run"
    merge = [*LLMST, "merge", str(tmp_path / "out.shard0.jsonl"), "-o", str(tmp_path / "merged.jsonl")]
    refused = subprocess.run(merge, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and refused.stderr.startswith("error: ")
    assert "incomplete" in refused.stderr and "Traceback" not in refused.stderr
    for index in (0, 1):
        result = subprocess.run(LLMST + args(index), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["shard"] == f"{index}/2" and summary["other_shards"] > 50
    merge = [*LLMST, "merge", str(tmp_path / "out.shard1.jsonl"), str(tmp_path / "out.shard0.jsonl"),
             "-o", str(tmp_path / "merged.jsonl")]  # fmt: skip
    result = subprocess.run(merge, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rows"] == 240
    merged = read_lines(tmp_path / "merged.jsonl")
    assert [r["id"] for r in merged] == [r["id"] for r in rows]
    missing = subprocess.run(
        [*LLMST, "merge", str(tmp_path / "out.shard1.jsonl"), "-o", str(tmp_path / "m2.jsonl")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2 and "1 of 2 shards missing: 0/2" in missing.stderr
    assert missing.stderr.splitlines()[1].startswith("hint: ")


def test_predict_shards_merge_into_the_unsharded_prediction(tmp_path, tiny_bert_dir):
    """`llmst predict --shard I/N` partitions rows like `llmst label --shard`; the merged shards equal one
    unsharded prediction (records, order, rejects, signature)."""
    from llmst.train import PredictConfig, TrainConfig, predict_file, predict_signature, train

    labeled = write_jsonl(
        tmp_path / "labeled.jsonl",
        [{"text": r["text"], "label": "positive" if i % 2 else "negative"} for i, r in enumerate(corpus(16))],
    )
    student = tmp_path / "student"
    names = ["negative", "positive"]
    train(
        labeled,
        student,
        TrainConfig(student=tiny_bert_dir, labels=names, epochs=1, batch_size=8, progress=False),
    )
    src = tmp_path / "in.jsonl"
    write_corpus_with_bad_rows(src, 40)
    whole = predict_file(student, src, tmp_path / "whole.jsonl", PredictConfig(progress=False))
    parts = []
    for index in range(3):
        out = tmp_path / f"p{index}.jsonl"
        summary = predict_file(student, src, out, PredictConfig(shard=f"{index}/3", progress=False))
        assert all(shard_of(r["id"], 3) == index and INPUT_LINE in r for r in read_lines(out))
        parts.append(summary)
    lines = sum(1 for _ in open(src, encoding="utf-8"))
    assert sum(p["labeled"] + p["rejected"] for p in parts) == whole["labeled"] + whole["rejected"]
    assert all(p["labeled"] + p["rejected"] + p["other_shards"] == lines for p in parts)
    merged = run_merge([str(tmp_path / f"p{i}.jsonl") for i in range(3)], tmp_path / "merged.jsonl")
    assert json.loads(stage.marker_path(tmp_path / "merged.jsonl").read_text())["stage"] == "predict"
    assert merged["signature"] == predict_signature(student, src, PredictConfig(progress=False))
    assert read_lines(tmp_path / "merged.jsonl") == read_lines(tmp_path / "whole.jsonl")
    rejects = [json.loads(x) for x in open(tmp_path / "merged.jsonl.rejects.jsonl", encoding="utf-8")]
    assert [r["line"] for r in rejects] == [
        json.loads(x)["line"] for x in open(tmp_path / "whole.jsonl.rejects.jsonl", encoding="utf-8")
    ]
