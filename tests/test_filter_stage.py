"""The filter and aggregate stages: records in, records + report + plots out; bad input is one clear error
and leaves nothing behind; the CLI commands."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from conftest import read_lines, write_jsonl

from llmst.aggregate.config import AggregateConfig
from llmst.aggregate.stage import run_aggregate
from llmst.errors import ConfigError
from llmst.filter.config import FilterConfig
from llmst.filter.conformal import prediction_sets
from llmst.filter.stage import run_filter
from llmst.records import read_labeled

NAMES = ["negative", "neutral", "positive"]
LLMST = [sys.executable, "-m", "llmst.cli"]


def labeled_rows(n, seed, *, accuracy_boost=2.0, class_weights=(0.6, 0.3, 0.1), prefix="d", model="m"):
    """Records as `llmst label` writes them, with a `gold` field; the labeler is roughly calibrated."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        gold = int(rng.choice(3, p=class_weights))
        logits = rng.normal(size=3)
        logits[gold] += accuracy_boost
        probs = np.exp(logits) / np.exp(logits).sum()
        order = np.argsort(-probs)
        rows.append(
            {
                "id": f"{prefix}{i}",
                "text": "word " * int(rng.integers(1, 60)),
                "gold": NAMES[gold],
                "label": NAMES[order[0]],
                "probs": dict(zip(NAMES, probs.tolist(), strict=True)),
                "confidence": float(probs[order[0]]),
                "margin": float(probs[order[0]] - probs[order[1]]),
                "entropy": float(-(probs * np.log(probs)).sum()),
                "model": model,
                "task": "sentiment3",
                "prompt_hash": "abc",
                "calibration": "none",
                "truncated": False,
            }
        )
    return rows


@pytest.fixture
def pool(tmp_path):
    return write_jsonl(tmp_path / "pool.jsonl", labeled_rows(1500, seed=0))


@pytest.fixture
def calibration(tmp_path):
    return write_jsonl(tmp_path / "cal.jsonl", labeled_rows(300, seed=1, prefix="c"))


def outputs(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name not in ("pool.jsonl", "cal.jsonl"))


@pytest.mark.parametrize(
    "config",
    [
        FilterConfig(method="threshold", threshold=0.8),
        FilterConfig(method="threshold", score="entropy", threshold=0.5),
        FilterConfig(method="per-class"),
        FilterConfig(method="balanced", fraction=0.3),
        FilterConfig(method="balanced", prior="0.5,0.3,0.2", size=200),
        FilterConfig(method="curriculum", round=1),
    ],
    ids=["threshold", "entropy", "per-class", "balanced", "balanced-prior", "curriculum"],
)
def test_filter_writes_kept_records_report_and_plots(tmp_path, pool, config):
    out = tmp_path / "kept.jsonl"
    report = run_filter(pool, out, config)
    kept = read_lines(out)
    source = {row["id"]: row for row in read_lines(pool)}
    assert len(kept) == report["n_kept"] > 0 and report["n_input"] == 1500
    assert all(row == source[row["id"]] for row in kept)  # records pass through unchanged
    assert sum(report["counts_after"].values()) == len(kept)
    assert report["counts_before"] == {n: sum(r["label"] == n for r in source.values()) for n in NAMES}
    assert report["gold"]["precision_kept"] == pytest.approx(np.mean([r["label"] == r["gold"] for r in kept]))
    on_disk = json.loads((tmp_path / "kept.jsonl.report.json").read_text())
    assert on_disk["n_kept"] == report["n_kept"]
    for png in ("kept.jsonl.counts.png", "kept.jsonl.precision_coverage.png"):
        assert (tmp_path / png).stat().st_size > 1000
    assert not [name for name in outputs(tmp_path) if name.endswith(".tmp")]
    if config.method == "balanced":
        for name, share in report["details"]["target_shares"].items():
            assert abs(report["shares_after"][name] - share) <= 0.05


def test_selection_improves_precision(tmp_path, pool):
    report = run_filter(pool, tmp_path / "k.jsonl", FilterConfig(method="threshold", threshold=0.9))
    assert report["gold"]["precision_kept"] > report["gold"]["accuracy_all"] + 0.05


def test_conformal_precision_guarantee(tmp_path, pool, calibration):
    config = FilterConfig(method="conformal", calibration=str(calibration), target_precision=0.9, delta=0.1)
    report = run_filter(pool, tmp_path / "k.jsonl", config)
    guarantee = report["guarantee"]
    assert guarantee["guaranteed_precision"] == 0.9 and guarantee["probability"] == pytest.approx(0.9)
    assert guarantee["estimated_precision"] >= guarantee["precision_lower_bound"] >= 0.9
    assert report["gold"]["precision_kept"] >= 0.9  # the pool's own gold agrees
    threshold = report["details"]["threshold"]
    assert all(row["confidence"] >= threshold for row in read_lines(tmp_path / "k.jsonl"))
    assert report["details"]["calibration"]["rows"] == 300


@pytest.mark.parametrize("mode", ["lac", "aps"])
def test_conformal_singleton_sets_cover_held_out_rows(tmp_path, pool, calibration, mode):
    """Coverage is measured on the pool's 1500 gold rows, which the quantile never saw: it must reach the
    target up to sampling noise, and not overshoot it by much (sets that always hold every label would).
    Non-randomized APS is conservative (it always holds the top label), so it may overshoot more."""
    config = FilterConfig(method="conformal", conformal=mode, coverage=0.8, calibration=str(calibration))
    report = run_filter(pool, tmp_path / "k.jsonl", config)
    assert report["guarantee"]["type"] == "coverage" and report["guarantee"]["guaranteed_coverage"] == 0.8
    assert 0 < report["n_kept"] < 1500
    cal = read_labeled(calibration, gold_field="gold")
    rows = read_labeled(pool, gold_field="gold")
    sets = prediction_sets(rows.probs, cal_probs=cal.probs, cal_labels=cal.gold, coverage=0.8, method=mode)
    held_out = float(sets[np.arange(len(rows)), rows.gold].mean())
    # 300 calibration rows: the realized coverage is ~ Beta with sd ~ 0.023 around >= 0.8
    assert 0.76 <= held_out <= (0.88 if mode == "lac" else 0.97), held_out
    assert report["details"]["pool_coverage"] == pytest.approx(held_out)
    kept_ids = {r["id"] for r in read_lines(tmp_path / "k.jsonl")}
    assert kept_ids == {rows.ids[i] for i in np.flatnonzero(sets.sum(axis=1) == 1)}


def test_learned_selector_with_and_without_guarantee(tmp_path, pool, calibration):
    report = run_filter(
        pool, tmp_path / "a.jsonl", FilterConfig(method="learned", calibration=str(calibration))
    )
    assert report["details"]["features"] == ["confidence", "margin", "entropy", "log_length"]
    assert report["gold"]["precision_kept"] > report["gold"]["accuracy_all"]
    config = FilterConfig(method="learned", calibration=str(calibration), target_precision=0.9, delta=0.2)
    report = run_filter(pool, tmp_path / "b.jsonl", config)
    assert report["guarantee"]["guaranteed_precision"] == 0.9
    assert report["details"]["fit_rows"] == report["details"]["certify_rows"] == 150


def test_aggregate_then_agreement_filter(tmp_path):
    rows = labeled_rows(600, seed=2)
    files = []
    for s, noise in enumerate((0.1, 0.25, 0.4)):
        rng = np.random.default_rng(10 + s)
        noisy = []
        for row in rows:  # each source relabels the same corpus, wrong with probability `noise`
            label = row["gold"] if rng.uniform() > noise else NAMES[(NAMES.index(row["gold"]) + 1) % 3]
            probs = {n: (0.8 if n == label else 0.1) for n in NAMES}
            noisy.append({**row, "label": label, "probs": probs, "model": f"m{s}"})
        rng.shuffle(noisy)  # order differs between files: records are joined on id
        files.append(write_jsonl(tmp_path / f"src{s}.jsonl", noisy))
    out = tmp_path / "fused.jsonl"
    report = run_aggregate(files, out, AggregateConfig(method="dawid-skene"))
    fused = read_lines(out)
    assert [r["id"] for r in fused] == [r["id"] for r in read_lines(files[0])]
    assert set(fused[0]["sources"]) == {"src0", "src1", "src2"}
    assert fused[0]["model"] == "aggregate:dawid-skene" and fused[0]["text"]
    estimated = [report["sources"][f"src{s}"]["estimated_accuracy"] for s in range(3)]
    assert estimated == pytest.approx([0.9, 0.75, 0.6], abs=0.05)
    assert report["gold"]["fused_accuracy"] >= report["sources"]["src0"]["gold_accuracy"] - 0.01
    assert (tmp_path / "fused.jsonl.sources.png").stat().st_size > 1000

    kept = tmp_path / "agree.jsonl"
    report = run_filter(out, kept, FilterConfig(method="agreement", min_agree=3))
    assert all(len(set(r["sources"].values())) == 1 for r in read_lines(kept))
    assert report["details"]["sources"] == ["src0", "src1", "src2"]
    assert report["gold"]["precision_kept"] > 0.95


def test_aggregate_with_labeling_functions(tmp_path):
    rows = labeled_rows(200, seed=3)
    a = write_jsonl(tmp_path / "a.jsonl", rows)
    b = write_jsonl(tmp_path / "b.jsonl", rows)
    rules = tmp_path / "rules.py"
    rules.write_text(
        "from llmst.aggregate import labeling_function\n\n"
        "@labeling_function\n"
        "def long_is_negative(record):\n"
        "    return 'negative' if len(record['text']) > 250 else None\n"
    )
    report = run_aggregate(
        [a, b], tmp_path / "f.jsonl", AggregateConfig(method="weighted", labeling_functions=str(rules))
    )
    assert list(report["sources"]) == ["a", "b", "lf:long_is_negative"]
    assert 0 < report["sources"]["lf:long_is_negative"]["coverage"] < 1
    first = read_lines(tmp_path / "f.jsonl")[0]
    assert first["sources"]["lf:long_is_negative"] in (None, "negative")
    report = run_aggregate(
        [a, b], tmp_path / "v.jsonl", AggregateConfig(method="vote", names="x,y", weights="2,1")
    )
    assert list(report["sources"]) == ["x", "y"]


# ------------------------------------------------------------------ bad input


def assert_nothing_written(tmp_path, before):
    assert outputs(tmp_path) == before


def test_records_without_probs(tmp_path):
    bad = write_jsonl(tmp_path / "pool.jsonl", [{"id": "1", "text": "hi", "label": "positive"}])
    with pytest.raises(ConfigError, match="no 'probs'") as err:
        run_filter(bad, tmp_path / "k.jsonl", FilterConfig())
    assert "llmst label" in err.value.hint
    assert_nothing_written(tmp_path, [])


def test_label_sets_that_differ(tmp_path, calibration):
    rows = labeled_rows(5, seed=4)
    rows[3]["probs"] = {"negative": 0.5, "positive": 0.5}
    bad = write_jsonl(tmp_path / "pool.jsonl", rows)
    with pytest.raises(ConfigError, match="line 4: labels"):
        run_filter(bad, tmp_path / "k.jsonl", FilterConfig())
    pool = write_jsonl(
        tmp_path / "pool.jsonl", [{**r, "probs": {"a": 0.4, "b": 0.6}, "label": "b"} for r in rows]
    )
    config = FilterConfig(method="conformal", calibration=str(calibration), target_precision=0.9)
    with pytest.raises(ConfigError, match="calibration file's labels"):
        run_filter(pool, tmp_path / "k.jsonl", config)
    assert_nothing_written(tmp_path, [])


def with_bias(rows, bias):
    return [
        {**r, "calibration": "prior", "calibration_bias": dict(zip(NAMES, bias, strict=True))} for r in rows
    ]


def test_a_calibration_file_calibrated_differently_from_the_pool_is_refused(tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", with_bias(labeled_rows(600, seed=0), [0.1, -0.2, 0.1]))
    other = write_jsonl(
        tmp_path / "cal.jsonl", with_bias(labeled_rows(300, seed=1, prefix="c"), [0.3, 0.0, -0.3])
    )
    config = FilterConfig(method="conformal", calibration=str(other), target_precision=0.8, delta=0.1)
    with pytest.raises(ConfigError, match="calibrated differently") as info:
        run_filter(pool, tmp_path / "k.jsonl", config)
    assert "--calibration-from" in info.value.hint and str(pool) in info.value.hint
    assert not (tmp_path / "k.jsonl").exists()
    # the same biases (as --calibration-from writes them) pass; so do files that do not say (older outputs)
    same = write_jsonl(
        tmp_path / "cal.jsonl", with_bias(labeled_rows(300, seed=1, prefix="c"), [0.1, -0.2, 0.1])
    )
    assert run_filter(pool, tmp_path / "k.jsonl", replace(config, calibration=str(same)))["n_kept"] > 0
    rows = labeled_rows(300, seed=1, prefix="c")
    silent = write_jsonl(
        tmp_path / "silent.jsonl", [{k: v for k, v in r.items() if k != "calibration"} for r in rows]
    )
    assert run_filter(pool, tmp_path / "k2.jsonl", replace(config, calibration=str(silent)))["n_kept"] > 0
    raw = write_jsonl(tmp_path / "raw.jsonl", rows)  # calibration 'none' against a 'prior' pool: refused
    with pytest.raises(ConfigError, match="calibrated differently"):
        run_filter(pool, tmp_path / "k3.jsonl", replace(config, calibration=str(raw)))


def test_calibration_too_small_for_the_guarantee(tmp_path, pool):
    small = write_jsonl(tmp_path / "cal.jsonl", labeled_rows(40, seed=5))
    config = FilterConfig(method="conformal", calibration=str(small), target_precision=0.95, delta=0.05)
    with pytest.raises(ConfigError, match="has 40 gold rows.*needs at least 59") as err:
        run_filter(pool, tmp_path / "k.jsonl", config)
    assert "label more calibration rows" in err.value.hint
    hopeless = write_jsonl(tmp_path / "cal.jsonl", labeled_rows(300, seed=5, accuracy_boost=0.0))
    config = FilterConfig(method="conformal", calibration=str(hopeless), target_precision=0.99, delta=0.05)
    with pytest.raises(ConfigError, match="no threshold certifies precision >= 0.99"):
        run_filter(pool, tmp_path / "k.jsonl", config)
    no_gold = write_jsonl(tmp_path / "cal.jsonl", [{**r, "gold": None} for r in labeled_rows(50, seed=5)])
    config = FilterConfig(method="conformal", calibration=str(no_gold), target_precision=0.9)
    with pytest.raises(ConfigError, match="no calibration row has a usable gold label"):
        run_filter(pool, tmp_path / "k.jsonl", config)
    assert_nothing_written(tmp_path, [])


def test_an_earlier_output_survives_a_failed_run(tmp_path, pool):
    out = tmp_path / "k.jsonl"
    run_filter(pool, out, FilterConfig(method="threshold", threshold=0.9))
    before = {name: (tmp_path / name).read_bytes() for name in outputs(tmp_path)}
    rows = read_lines(pool)
    rows[700] = {"id": "x", "text": "no probs here"}
    write_jsonl(pool, rows)
    with pytest.raises(ConfigError, match="line 701"):
        run_filter(pool, out, FilterConfig(method="balanced"))
    assert {name: (tmp_path / name).read_bytes() for name in outputs(tmp_path)} == before


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"method": "magic"}, "--method: unknown value 'magic'"),
        ({"method": "conformal"}, "needs a gold-labeled calibration set"),
        ({"method": "conformal", "calibration": "c.jsonl"}, "needs --target-precision"),
        ({"method": "curriculum"}, "one of --fraction or --round"),
        ({"method": "balanced", "fraction": 0.2, "size": 10}, "at most one"),
        ({"method": "threshold", "score": "entropy"}, "no default"),
        ({"prior": "0.5,x"}, "--prior: 'x' is not a number"),
        ({"schedule": "0.2"}, "START,STEP"),
        ({"text_fields": 3}, "--text-fields"),
        ({"method": "threshold", "threshold": 1.5}, "--threshold"),
        ({"delta": 1.5}, "--delta"),
    ],
)
def test_bad_filter_options(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FilterConfig(**kwargs)


def test_aggregate_bad_inputs(tmp_path):
    rows = labeled_rows(20, seed=6)
    a = write_jsonl(tmp_path / "a.jsonl", rows)
    other_ids = write_jsonl(tmp_path / "b.jsonl", [{**r, "id": r["id"] + "x"} for r in rows])
    with pytest.raises(ConfigError, match="ids do not match: .*lacks 20 ids") as err:
        run_aggregate([a, other_ids], tmp_path / "f.jsonl", AggregateConfig())
    assert "same corpus" in err.value.hint
    two_labels = write_jsonl(
        tmp_path / "c.jsonl", [{**r, "probs": {"x": 0.5, "y": 0.5}, "label": "x"} for r in rows]
    )
    with pytest.raises(ConfigError, match="label sets differ"):
        run_aggregate([a, two_labels], tmp_path / "f.jsonl", AggregateConfig())
    duplicated = write_jsonl(tmp_path / "d.jsonl", rows + rows[:1])
    with pytest.raises(ConfigError, match="duplicate id 'd0'"):
        run_aggregate([duplicated, a], tmp_path / "f.jsonl", AggregateConfig())
    no_ids = write_jsonl(tmp_path / "e.jsonl", [{k: v for k, v in r.items() if k != "id"} for r in rows])
    with pytest.raises(ConfigError, match="20 records of .*e.jsonl have no 'id'"):
        run_aggregate([a, no_ids], tmp_path / "f.jsonl", AggregateConfig())
    with pytest.raises(ConfigError, match="at least two sources"):
        run_aggregate([a], tmp_path / "f.jsonl", AggregateConfig())
    broken = tmp_path / "rules.py"
    broken.write_text("def oops(:\n")
    with pytest.raises(ConfigError, match="could not load labeling functions .*SyntaxError"):
        run_aggregate([a], tmp_path / "f.jsonl", AggregateConfig(labeling_functions=str(broken)))
    with pytest.raises(ConfigError, match="is also an input"):
        run_aggregate([a, a], a, AggregateConfig())
    assert not list(tmp_path.glob("f.jsonl*"))


# ------------------------------------------------------------------ CLI


def cli(args, cwd):
    return subprocess.run(LLMST + args, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_cli_filter_and_aggregate(tmp_path, pool, calibration):
    result = cli(
        [
            "filter",
            str(pool),
            "-o",
            str(tmp_path / "k.jsonl"),
            "--method",
            "conformal",
            "--calibration",
            str(calibration),
            "--target-precision",
            "0.9",
            "--no-plots",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["n_kept"] == len(read_lines(tmp_path / "k.jsonl"))
    assert summary["guarantee"]["guaranteed_precision"] == 0.9
    assert "curve" not in json.dumps(summary)
    assert not list(tmp_path.glob("*.png"))
    result = cli(
        ["aggregate", str(pool), str(pool), "-o", str(tmp_path / "f.jsonl"), "--names", "a,b"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sources"]["a"]["agreement_with_fused"] == 1.0


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, pool):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "1", "label": "x"}])
    other = write_jsonl(tmp_path / "other.jsonl", labeled_rows(10, seed=7, prefix="z"))
    cases = [
        (["filter", str(bad), "-o", str(tmp_path / "o.jsonl")], "no 'probs'"),
        (["filter", str(pool), "-o", str(tmp_path / "o.jsonl"), "--method", "conformal"], "calibration set"),
        (["filter", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o.jsonl")], "input not found"),
        (["aggregate", str(pool), str(other), "-o", str(tmp_path / "o.jsonl")], "ids do not match"),
    ]
    for args, message in cases:
        result = cli(args, tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert lines[0].startswith("error: ") and message in lines[0], result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "o.jsonl").exists()
    help_text = cli(["--help"], tmp_path).stdout
    assert "filter" in help_text and "aggregate" in help_text
    assert "--target-precision" in cli(["filter", "--help"], tmp_path).stdout


def test_agreement_needs_per_source_labels(tmp_path, pool):
    with pytest.raises(ConfigError, match="no per-source labels in field 'sources'") as err:
        run_filter(pool, tmp_path / "k.jsonl", FilterConfig(method="agreement"))
    assert "llmst aggregate" in err.value.hint
    assert_nothing_written(tmp_path, [])
