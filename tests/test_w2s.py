"""Weak-to-strong: PGR arithmetic and bootstrap, the logconf loss, and `llmst w2s` on tiny random-init models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import read_lines, sst2_rows, write_jsonl

from llmst.errors import ConfigError
from llmst.experiments.pgr import Scored, compare, metric, pgr, summarize
from llmst.experiments.w2s import run_w2s
from llmst.experiments.w2s_config import load_w2s_config
from llmst.train.losses import LogConfidenceLoss, harden, ramped_weight


def _one_hot_probs(predicted: list[int]) -> np.ndarray:
    return np.eye(2)[predicted] * 0.8 + 0.1


def test_pgr_arithmetic_and_undefined_gap():
    assert pgr(0.6, 0.7, 0.8) == pytest.approx(0.5)
    assert pgr(0.6, 0.55, 0.8) == pytest.approx(-0.25)
    assert pgr(0.6, 0.9, 0.61, min_gap=0.02) is None  # no gap to recover
    assert pgr(0.6, float("nan"), 0.8) is None


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    gold = np.array([0, 0, 1, 1, 1, 0, 1])
    scores = np.array([0.2, 0.5, 0.5, 0.9, 0.1, 0.5, 0.7])
    probs = np.stack([1 - scores, scores], axis=1)
    assert metric("auroc", gold, probs) == pytest.approx(roc_auc_score(gold, scores))
    assert np.isnan(metric("auroc", np.ones(3, int), probs[:3]))


def test_summarize_point_values_and_bootstrap_against_a_hand_computed_loop():
    gold = np.array([0, 1, 0, 1, 0, 1, 0, 1, 1, 0])
    weak = _one_hot_probs([0, 0, 0, 0, 1, 1, 0, 1, 0, 1])  # 5/10 right
    transfer = _one_hot_probs([0, 1, 0, 0, 1, 1, 0, 1, 1, 1])  # 7/10
    ceiling = _one_hot_probs([0, 1, 0, 1, 0, 1, 0, 1, 1, 1])  # 9/10
    seed = Scored(gold, {"weak": weak, "transfer": transfer, "ceiling": ceiling})
    report = summarize([seed], min_gap=0.02, n_boot=300, rng_seed=7)
    mean = report["mean"]
    assert (mean["weak"]["accuracy"], mean["transfer"]["accuracy"], mean["ceiling"]["accuracy"]) == (
        0.5,
        0.7,
        0.9,
    )
    assert mean["pgr"]["accuracy"] == pytest.approx(0.5)  # (0.7 - 0.5) / (0.9 - 0.5)

    # the same draws by hand: rows with replacement, PGR of the resampled accuracies, 2.5/97.5 percentiles
    rng = np.random.default_rng(7)
    rows = rng.integers(0, 10, (300, 10))
    right = {name: (p.argmax(1) == gold) for name, p in (("w", weak), ("t", transfer), ("c", ceiling))}
    values = []
    for draw in rows:
        w, t, c = (right[k][draw].mean() for k in ("w", "t", "c"))
        values.append(None if c - w < 0.02 else (t - w) / (c - w))
    finite = [v for v in values if v is not None]
    expected = [np.percentile(finite, 2.5), np.percentile(finite, 97.5)]
    assert report["seeds"][0]["pgr"]["accuracy_ci"] == pytest.approx(expected, abs=1e-4)


def test_pgr_interval_is_exact_when_transfer_equals_weak_or_ceiling():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 200)
    weak = _one_hot_probs(list(np.where(rng.random(200) < 0.6, gold, 1 - gold)))
    ceiling = _one_hot_probs(list(gold))
    at_weak = Scored(gold, {"weak": weak, "transfer": weak, "ceiling": ceiling})
    at_ceiling = Scored(gold, {"weak": weak, "transfer": ceiling, "ceiling": ceiling})
    low, high = summarize([at_weak] * 2, n_boot=200), summarize([at_ceiling] * 2, n_boot=200)
    assert low["mean"]["pgr"]["accuracy"] == 0.0 and low["mean"]["pgr"]["accuracy_ci"] == [0.0, 0.0]
    assert high["mean"]["pgr"]["accuracy"] == 1.0 and high["mean"]["pgr"]["accuracy_ci"] == [1.0, 1.0]
    diff = compare([at_ceiling] * 2, [at_weak] * 2, n_boot=200)
    assert diff["accuracy"] == 1.0 and diff["accuracy_ci"] == [1.0, 1.0]
    # the models' own paired differences: same weak model (0 exactly), transfer = ceiling minus weak accuracy
    assert diff["weak"]["accuracy"] == 0.0 and diff["weak"]["accuracy_ci"] == [0.0, 0.0]
    gain = round(1.0 - float(np.mean(weak.argmax(1) == gold)), 4)
    assert diff["transfer"]["accuracy"] == gain
    low_ci, high_ci = diff["transfer"]["accuracy_ci"]
    assert 0 < low_ci < gain < high_ci
    # two identical noisy variants: the paired draws cancel exactly, so the difference and its interval are 0
    noisy = _one_hot_probs(list(np.where(rng.random(200) < 0.8, gold, 1 - gold)))
    middle = Scored(gold, {"weak": weak, "transfer": noisy, "ceiling": ceiling})
    same = compare([middle] * 2, [middle] * 2, n_boot=200)
    assert same["accuracy"] == 0.0 and same["accuracy_ci"] == [0.0, 0.0]
    assert summarize([middle] * 2, n_boot=200)["mean"]["pgr"]["accuracy_ci"][0] < 1.0
    # no gap (weak = ceiling): PGR undefined in both, the transfer models' difference still measured
    no_gap = Scored(gold, {"weak": ceiling, "transfer": noisy, "ceiling": ceiling})
    perfect = Scored(gold, {"weak": ceiling, "transfer": ceiling, "ceiling": ceiling})
    undefined = compare([no_gap] * 2, [perfect] * 2, n_boot=200)
    assert undefined["accuracy"] is None and undefined["accuracy_ci"] is None
    loss = round(float(np.mean(noisy.argmax(1) == gold)) - 1.0, 4)
    assert undefined["transfer"]["accuracy"] == loss < 0 and undefined["transfer"]["accuracy_ci"][1] < 0
    # one gold class: no ROC AUC at all, so its differences are None, never a crash or a NaN
    ones = np.ones(200, dtype=int)
    one_class = compare([Scored(ones, middle.probs)], [Scored(ones, no_gap.probs)], n_boot=50)
    assert one_class["transfer"]["auroc"] is None and one_class["transfer"]["auroc_ci"] is None
    assert one_class["transfer"]["accuracy"] is not None
    with pytest.raises(ValueError, match="same seeds and test rows"):
        compare([middle], [Scored(1 - gold, middle.probs)], n_boot=200)


def test_logconf_ramp_and_targets_hand_computed():
    assert ramped_weight(0.75, 0.2, 0.0) == 0.0
    assert ramped_weight(0.75, 0.2, 0.1) == pytest.approx(0.375)  # halfway through warm-up: half the weight
    assert ramped_weight(0.75, 0.2, 0.2) == pytest.approx(0.75)
    assert ramped_weight(0.75, 0.2, 0.9) == pytest.approx(0.75)  # no jump, no growth after warm-up
    assert ramped_weight(0.75, 0.0, 0.0) == 0.75

    loss = LogConfidenceLoss(weight=0.75, warmup=0.2)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.5], [0.0, 3.0]])
    weak = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    # weak share of class 1 is 0.5, so the two rows with the highest p(class 0) are hardened to class 0
    assert harden(torch.softmax(logits, -1), weak).tolist() == [[1, 0], [0, 1], [1, 0], [0, 1]]
    # a weak class-1 share of 0.25: only the row least likely class 0 is hardened to class 1 (argmax would
    # give two rows class 1)
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.4, 0.6]])
    quarter = torch.tensor([[0.75, 0.25]] * 4)
    assert harden(probs, quarter).tolist() == [[1, 0], [0, 1], [1, 0], [1, 0]]
    targets = loss.targets(logits, weak, progress=0.1)
    hardened = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(targets, 0.625 * weak + 0.375 * hardened)
    log_p = torch.log_softmax(logits, -1)
    expected = -(targets * log_p).sum(-1).mean()
    assert loss.compute_loss_from_logits(logits, weak, progress=0.1).item() == pytest.approx(expected.item())
    # at the first step logconf is plain soft cross-entropy on the weak labels
    assert loss.compute_loss_from_logits(logits, weak, progress=0.0).item() == pytest.approx(
        -(weak * log_p).sum(-1).mean().item()
    )


def _w2s_yaml(tmp_path, tiny_bert_dir, **extra) -> str:
    train = [{"id": r["id"], "text": r["text"], "gold": r["gold"]} for r in sst2_rows("dev", 40)]
    test = [{"text": r["text"], "gold": r["gold"]} for r in sst2_rows("test", 20)]
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "test.jsonl", test)
    config = {
        "out_dir": "run",
        "data": {
            "train": "train.jsonl",
            "test": "test.jsonl",
            "gold_field": "gold",
            "labels": ["negative", "positive"],
        },
        "seeds": [0, 1],
        "weak": {"student": tiny_bert_dir, "epochs": 1, "batch_size": 8},
        "strong": {"student": tiny_bert_dir, "epochs": 2, "batch_size": 8},
        "loss": ["xent", "logconf"],
        "select": [{"method": "per-class", "fraction": 0.5}],
        "bootstrap": 200,
        **extra,
    }
    path = tmp_path / "w2s.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _outputs(run) -> dict[str, int]:
    skip = {"report.json", "report.md", "pgr.png", "config.yaml"}
    return {
        str(p.relative_to(run)): p.stat().st_mtime_ns
        for p in run.rglob("*")
        if p.is_file() and p.name not in skip
    }


def test_w2s_runs_reports_and_reruns_only_changed_stages(tmp_path, tiny_bert_dir):
    path = _w2s_yaml(tmp_path, tiny_bert_dir)
    report = run_w2s(load_w2s_config(path))
    run = tmp_path / "run"
    for name in ("report.json", "report.md", "pgr.png", "config.yaml"):
        assert (run / name).exists(), name
    assert list(report["variants"]) == ["xent", "logconf", "xent+per-class"]
    assert report["primary"] == "xent" and len(report["seeds"]) == 2
    for summary in report["variants"].values():
        for entry in [*summary["seeds"], summary["mean"]]:
            w, t, c = (entry[role]["accuracy"] for role in ("weak", "transfer", "ceiling"))
            expected = None if c - w < 0.02 else round((t - w) / (c - w), 4)
            assert entry["pgr"]["accuracy"] == (
                pytest.approx(expected, abs=2e-4) if expected is not None else None
            )
    assert set(report["versus_xent"]) == {"logconf", "xent+per-class"}
    # halves A and B: disjoint, 20 rows each, together the train rows; the selection kept half of each class
    split = run / "seed0" / "split"
    a, b = read_lines(split / "A.jsonl"), read_lines(split / "B.jsonl")
    assert len(a) == len(b) == 20 and not {r["id"] for r in a} & {r["id"] for r in b}
    assert {r["label"] for r in b} <= {"negative", "positive"} and all(r["label"] == r["gold"] for r in b)
    kept = read_lines(run / "seed0" / "kept-xent+per-class.jsonl")
    assert 0 < len(kept) < 20
    card = json.loads((run / "seed0" / "transfer-logconf" / "llmst_student.json").read_text())
    assert card["loss"] == "logconf" and card["soft_labels"] is True
    assert card["processes"] == 1 and card["steps"] == 5  # 20 rows of B x 2 epochs in batches of 8
    # every test row has one prediction per model
    predicted = read_lines(run / "seed1" / "transfer-xent.test.jsonl")
    assert len(predicted) == 20 and len({r["id"] for r in predicted}) == 20
    assert "| **xent** | all |" in (run / "report.md").read_text()

    first = _outputs(run)
    again = run_w2s(load_w2s_config(path))  # nothing changed: nothing recomputed, same numbers
    assert _outputs(run) == first and again["variants"] == report["variants"]

    data = yaml.safe_load(open(path))
    data["strong"]["epochs"] = 1  # only the strong students and their predictions change
    open(path, "w").write(yaml.safe_dump(data))
    run_w2s(load_w2s_config(path))
    after = _outputs(run)
    for kept_stage in (
        "seed0/split/A.jsonl",
        "seed0/weak/model.safetensors",
        "seed0/weak.B.jsonl",
        "seed1/weak.test.jsonl",
        "seed0/kept-xent+per-class.jsonl",
    ):
        assert after[kept_stage] == first[kept_stage], kept_stage
    for changed in ("seed0/ceiling/model.safetensors", "seed1/transfer-logconf.test.jsonl"):
        assert after[changed] != first[changed], changed


def test_w2s_killed_mid_run_resumes_without_recomputing_or_duplicating(tmp_path, tiny_bert_dir):
    from unittest import mock

    import transformers

    import llmst.train as train_module

    strong = {"student": tiny_bert_dir, "epochs": 2, "batch_size": 4, "save_steps": 2}
    path = _w2s_yaml(tmp_path, tiny_bert_dir, seeds=[0], loss="xent", select=[], strong=strong)
    run = tmp_path / "run"
    real, real_step = train_module.train, transformers.Trainer.training_step
    calls, steps = [], []

    def killed_in_step_4(self, *args, **kwargs):  # a kill in the middle of training, after a checkpoint
        steps.append(1)
        if len(steps) == 4:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    def dies_while_training_the_third(labeled, out, config):
        calls.append(str(out))
        if len(calls) < 3:  # weak and ceiling train to the end; the transfer model is killed mid-training
            return real(labeled, out, config)
        with mock.patch.object(transformers.Trainer, "training_step", killed_in_step_4):
            return real(labeled, out, config)

    with mock.patch.object(train_module, "train", side_effect=dies_while_training_the_third):
        with pytest.raises(KeyboardInterrupt):
            run_w2s(load_w2s_config(path))
    assert len(steps) == 4
    assert any((run / "seed0" / "transfer-xent").rglob("checkpoint-2")), "no checkpoint before the kill"
    done = _outputs(run)
    assert (run / "seed0" / "transfer-xent.stage-pending").exists()
    calls.clear()
    with mock.patch.object(
        train_module, "train", side_effect=lambda *a: (calls.append(str(a[1])), real(*a))[1]
    ):
        report = run_w2s(load_w2s_config(path))
    assert [c.rsplit("/", 1)[-1] for c in calls] == ["transfer-xent"]  # weak and ceiling were not retrained
    after = _outputs(run)
    for name in ("seed0/weak/model.safetensors", "seed0/ceiling/model.safetensors", "seed0/weak.B.jsonl"):
        assert after[name] == done[name], name
    predicted = read_lines(run / "seed0" / "transfer-xent.test.jsonl")
    assert len(predicted) == len({r["id"] for r in predicted}) == 20
    accuracy = np.mean([max(r["probs"], key=r["probs"].get) == r["gold"] for r in predicted])
    assert report["mean"]["transfer"]["accuracy"] == pytest.approx(accuracy, abs=1e-4)


def test_w2s_weak_ensemble_with_an_llm_labeler(tmp_path, tiny_bert_dir, tiny_model_dir):
    label = {"model": tiny_model_dir, "labels": "negative,positive", "cache_path": str(tmp_path / "c.sqlite")}
    weak = {"ensemble": [{"student": tiny_bert_dir, "epochs": 1}, {"label": label}]}
    path = _w2s_yaml(tmp_path, tiny_bert_dir, seeds=[0], loss="hard", select=[], weak=weak)
    report = run_w2s(load_w2s_config(path))
    run = tmp_path / "run" / "seed0"
    members = [read_lines(run / f"weak{i}.B.jsonl") for i in (0, 1)]
    mean = {r["id"]: r["probs"] for r in read_lines(run / "weak.B.jsonl")}
    for first, second in zip(*members, strict=True):
        for name in ("negative", "positive"):
            assert mean[first["id"]][name] == pytest.approx(
                (first["probs"][name] + second["probs"][name]) / 2
            )
    # the LLM labeler's test labels carry B's fitted calibration: nothing was fitted on the test rows
    on_b, on_test = read_lines(run / "weak1.B.jsonl"), read_lines(run / "weak1.test.jsonl")
    assert on_b[0]["calibration"] == "prior" and on_b[0]["calibration_bias"]
    assert {r["calibration_bias"]["positive"] for r in on_test} == {on_b[0]["calibration_bias"]["positive"]}
    weak_accuracy = np.mean(
        [max(r["probs"], key=r["probs"].get) == r["gold"] for r in read_lines(run / "weak.test.jsonl")]
    )
    assert report["variants"]["hard"]["mean"]["weak"]["accuracy"] == pytest.approx(weak_accuracy, abs=1e-4)


def test_w2s_config_errors(tmp_path, tiny_bert_dir):
    def load(**extra):
        return load_w2s_config(_w2s_yaml(tmp_path, tiny_bert_dir, **extra))

    with pytest.raises(ConfigError, match="unknown keys"):
        load(seedz=[1])
    with pytest.raises(ConfigError, match="loss must be"):
        load(loss="mse")
    with pytest.raises(ConfigError, match="needs 'student', 'label' or 'ensemble'"):
        load(weak={"epochs": 2})
    with pytest.raises(ConfigError, match="may not set"):
        load(strong={"student": tiny_bert_dir, "seed": 3})
    with pytest.raises(ConfigError, match="bad 'strong' options"):
        load(strong={"student": tiny_bert_dir, "epochz": 3})
    with pytest.raises(ConfigError, match="'strong' options: --learning-rate: expected a number, got 'fast'"):
        load(strong={"student": tiny_bert_dir, "learning_rate": "fast"})
    with pytest.raises(ConfigError, match="at least two"):
        load(weak={"ensemble": [{"student": tiny_bert_dir}]})
    with pytest.raises(ConfigError, match="data.train not found"):
        load(data={"train": "nope.jsonl", "test": "test.jsonl"})
    for seeds in ([], [0, 0], [True], ["1"]):
        with pytest.raises(ConfigError, match="seeds must be"):
            load(seeds=seeds)
    with pytest.raises(ConfigError, match="may not set"):
        load(weak={"student": tiny_bert_dir, "progress": True})
    with pytest.raises(ConfigError, match="may not set"):
        load(weak={"label": {"model": "x", "labels": "a,b", "calibration_from": "train.jsonl"}})
    with pytest.raises(ConfigError, match="bootstrap"):
        load(bootstrap="many")
    # YAML 1.1 reads unquoted no/yes as booleans: one clear error, not the labels 'False' and 'True'
    path = Path(_w2s_yaml(tmp_path, tiny_bert_dir))
    path.write_text(path.read_text().replace("labels:\n  - negative\n  - positive", "labels: [no, yes]"))
    assert "[no, yes]" in path.read_text()
    with pytest.raises(ConfigError, match="holds booleans") as error:
        load_w2s_config(path)
    assert "quote them" in error.value.hint
    # a test row that is also a train row (same text) would leak its gold label: refused
    train = read_lines(tmp_path / "train.jsonl")
    write_jsonl(
        tmp_path / "leaky.jsonl",
        [{"text": train[3]["text"], "gold": train[3]["gold"]}, {"text": "x", "gold": "negative"}],
    )
    with pytest.raises(ConfigError, match="is also in"):
        run_w2s(
            load(data={"train": "train.jsonl", "test": "leaky.jsonl", "labels": ["negative", "positive"]})
        )
    write_jsonl(tmp_path / "blank.jsonl", [{"text": "  ", "gold": "negative"}])
    with pytest.raises(ConfigError, match="line 1: no text"):
        run_w2s(
            load(data={"train": "train.jsonl", "test": "blank.jsonl", "labels": ["negative", "positive"]})
        )
    # a gold value outside the label set is an error naming the line, found before any training
    write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine", "gold": 0}, {"text": "odd", "gold": "maybe"}])
    config = load(data={"train": "bad.jsonl", "test": "bad.jsonl", "labels": ["negative", "positive"]})
    with pytest.raises(ConfigError, match="line 2: gold 'maybe' is not one of"):
        run_w2s(config)


def test_w2s_refuses_weak_labels_that_lost_rows(tmp_path, tiny_bert_dir):
    from unittest import mock

    import llmst.train as train_module

    real = train_module.predict_file

    def loses_a_row(model, source, out, config):  # fault injection: one row of B goes missing
        real(model, source, out, config)
        if out.name == "weak.B.jsonl":
            out.write_text("".join(out.read_text().splitlines(keepends=True)[:-1]))

    path = _w2s_yaml(tmp_path, tiny_bert_dir, seeds=[0], loss="xent", select=[])
    with mock.patch.object(train_module, "predict_file", side_effect=loses_a_row):
        with pytest.raises(ConfigError, match="weak.B.jsonl has 19 rows"):
            run_w2s(load_w2s_config(path))


def test_w2s_weak_members_read_the_debate_transcript(tmp_path, tiny_bert_dir):
    path = _w2s_yaml(tmp_path, tiny_bert_dir, seeds=[0], loss="xent", select=[])
    train, test = read_lines(tmp_path / "train.jsonl"), read_lines(tmp_path / "test.jsonl")
    test_ids = [f"test-{line}" for line in range(1, len(test) + 1)]  # w2s's ids for rows without one
    debates = [
        {
            "id": row_id,
            "assigned": {"A": "positive", "B": "negative"},
            "turns": [{"speaker": "A", "text": "It is kind."}, {"speaker": "B", "text": "It is dull."}],
        }
        for row_id in [r["id"] for r in train] + test_ids
    ]
    write_jsonl(tmp_path / "debates.jsonl", debates)
    data = yaml.safe_load(open(path))
    data["weak"] = {
        "ensemble": [
            {"student": tiny_bert_dir, "epochs": 1},
            {"student": tiny_bert_dir, "epochs": 1, "learning_rate": 1e-4},
        ],
        "context": "debates.jsonl",
    }
    open(path, "w").write(yaml.safe_dump(data))
    report = run_w2s(load_w2s_config(path))
    run = tmp_path / "run" / "seed0"
    card = json.loads((run / "weak0" / "llmst_student.json").read_text())
    assert card["text_fields"] == ["text", "debate"]
    assert (
        read_lines(run / "context" / "A.jsonl")[0]["debate"]
        == "Debater A (positive): It is kind.\nDebater B (negative): It is dull."
    )
    strong = json.loads((run / "transfer-xent" / "llmst_student.json").read_text())
    assert strong["text_fields"] == ["text"]  # the strong model never sees the transcript
    weak_test = read_lines(run / "weak0.test.jsonl")  # the weak test predictions read it too
    assert [r["id"] for r in weak_test] == test_ids and all(r["debate"] for r in weak_test)
    assert report["mean"]["weak"]["accuracy"] == pytest.approx(
        np.mean(
            [max(r["probs"], key=r["probs"].get) == r["gold"] for r in read_lines(run / "weak.test.jsonl")]
        ),
        abs=1e-4,
    )

    write_jsonl(tmp_path / "debates.jsonl", [*debates, debates[0]])  # two transcripts for one row: an error
    with pytest.raises(ConfigError, match="a second transcript"):
        run_w2s(load_w2s_config(path))

    write_jsonl(tmp_path / "debates.jsonl", debates[:-1])  # one test row lost its transcript: an error
    with pytest.raises(ConfigError, match="has no transcript"):
        run_w2s(load_w2s_config(path))


def test_w2s_llm_labeler_judges_the_debate(tmp_path, tiny_bert_dir, tiny_model_dir):
    """An LLM labeler with `weak.context` reads each row's transcript in its prompt (B, test); the strong
    model does not; without the transcript its probabilities differ; a task that cannot show it is refused."""
    path = _w2s_yaml(tmp_path, tiny_bert_dir, seeds=[0], loss="xent", select=[])
    train, test = read_lines(tmp_path / "train.jsonl"), read_lines(tmp_path / "test.jsonl")
    test_ids = [f"test-{line}" for line in range(1, len(test) + 1)]
    debates = [
        {
            "id": row_id,
            "assigned": {"A": "positive", "B": "negative"},
            "turns": [{"speaker": "A", "text": f"Row {row_id} is kind."}, {"speaker": "B", "text": "Dull."}],
        }
        for row_id in [r["id"] for r in train] + test_ids
    ]
    write_jsonl(tmp_path / "debates.jsonl", debates)
    label = {"model": tiny_model_dir, "labels": "negative,positive", "cache_path": str(tmp_path / "c.sqlite")}
    data = yaml.safe_load(open(path))
    data["weak"] = {"label": label, "context": "debates.jsonl"}
    open(path, "w").write(yaml.safe_dump(data))
    run_w2s(load_w2s_config(path))
    run = tmp_path / "run" / "seed0"
    on_test = read_lines(run / "weak.test.jsonl")
    assert [r["id"] for r in on_test] == test_ids
    assert all(r["debate"].startswith(f"Debater A (positive): Row {r['id']} is kind.") for r in on_test)
    assert not (run / "context" / "A.jsonl").exists()  # an LLM labeler never reads half A
    assert on_test[0]["calibration_bias"] == read_lines(run / "weak.B.jsonl")[0]["calibration_bias"]
    strong = json.loads((run / "transfer-xent" / "llmst_student.json").read_text())
    assert strong["text_fields"] == ["text"]

    data["weak"] = {"label": label}  # without the transcript: relabeled, other probabilities
    data["out_dir"] = str(tmp_path / "plain")
    open(path, "w").write(yaml.safe_dump(data))
    run_w2s(load_w2s_config(path))
    plain = read_lines(tmp_path / "plain" / "seed0" / "weak.test.jsonl")
    assert "debate" not in plain[0]
    assert [r["probs"] for r in plain] != [r["probs"] for r in on_test]

    # the shipped sentiment task shows only the `text` field: it would label as if there were no debate
    sentiment = {"model": tiny_model_dir, "task": "sentiment", "cache_path": label["cache_path"]}
    data["weak"] = {"label": sentiment, "context": "debates.jsonl"}
    data["out_dir"] = str(tmp_path / "blind")
    open(path, "w").write(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="does not show the transcript"):
        run_w2s(load_w2s_config(path))


def test_w2s_conformal_selection_calibrates_on_a_gold_slice_of_a_held_out_of_weak_training(
    tmp_path, tiny_bert_dir
):
    select = [{"method": "conformal", "conformal": "lac", "coverage": 0.5}]
    path = _w2s_yaml(tmp_path, tiny_bert_dir, seeds=[0], loss="xent", select=select, calibration_rows=8)
    report = run_w2s(load_w2s_config(path))
    run = tmp_path / "run" / "seed0"
    a, b = read_lines(run / "split" / "A.jsonl"), read_lines(run / "split" / "B.jsonl")
    held_out = read_lines(run / "split" / "A-calibration.jsonl")
    ids = [{r["id"] for r in part} for part in (a, held_out, b)]
    assert [len(part) for part in ids] == [12, 8, 20]  # A's 20 rows: 12 train the weak model, 8 calibrate
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    card = json.loads((run / "weak" / "llmst_student.json").read_text())
    assert card["rows"] == 12  # the weak model never saw the calibration slice
    # the weak model labeled the slice, keeping its gold labels, and conformal selection calibrated on it
    on_slice = read_lines(run / "weak.calibration.jsonl")
    assert {r["id"] for r in on_slice} == ids[1] and all(r["gold"] == r["label"] for r in held_out)
    assert {r["id"]: r["gold"] for r in on_slice} == {r["id"]: r["gold"] for r in held_out}
    selection = json.loads((run / "kept-xent+conformal.jsonl.report.json").read_text())
    calibration = selection["details"]["calibration"]
    assert calibration["rows"] == 8 and calibration["file"] == str(run / "weak.calibration.jsonl")
    assert "xent+conformal" in report["variants"]


def test_w2s_calibrated_selection_needs_a_held_out_slice(tmp_path, tiny_bert_dir):
    def load(**extra):
        return load_w2s_config(_w2s_yaml(tmp_path, tiny_bert_dir, **extra))

    conformal = {"method": "conformal", "target_precision": 0.9}
    with pytest.raises(ConfigError, match="needs gold rows the weak model never trained on"):
        load(select=[conformal])
    with pytest.raises(ConfigError, match="may not set"):
        load(select=[{**conformal, "calibration": "train.jsonl"}], calibration_rows=8)
    with pytest.raises(ConfigError, match="calibration_rows must be"):
        load(select=[conformal], calibration_rows=-1)
    with pytest.raises(ConfigError, match="fewer than 2 rows of A"):
        load(select=[conformal], calibration_rows=20, n_train=40)
    assert load(select=[conformal], calibration_rows=8).calibration_rows == 8
    # without n_train the halves are only known once the train rows are read: refused there, before training
    with pytest.raises(ConfigError, match="fewer than 2 rows of A"):
        run_w2s(load(select=[conformal], calibration_rows=19))


def test_w2s_under_two_rank_torchrun_trains_on_every_rank_and_runs_other_stages_once(tmp_path, tiny_bert_dir):
    """`torchrun --nproc_per_node 2 -m llmst w2s` (DDP over gloo on CPU): every student trains on both ranks,
    rank 0 alone runs the other stages and writes the report; a rerun under torchrun recomputes nothing."""
    import os
    import subprocess
    import sys

    path = _w2s_yaml(tmp_path, tiny_bert_dir, seeds=[0], loss="xent")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "llmst",
        "w2s",
        path,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("| **xent** | all |") == 1  # the report is printed once, by rank 0
    for stage in ("split", "weak labels B.jsonl", "select weak labels (per-class)", "train ceiling"):
        assert sum(stage in line and "computing" in line for line in first.stderr.splitlines()) == 1, stage
    run = tmp_path / "run"
    report = json.loads((run / "report.json").read_text())
    assert list(report["variants"]) == ["xent", "xent+per-class"]
    for model in ("weak", "ceiling", "transfer-xent", "transfer-xent+per-class"):
        assert (run / "seed0" / model / "model.safetensors").exists(), model
    # both ranks trained each student, each on half of the batches (20 rows of B x 2 epochs in batches of 8:
    # 5 steps in one process, 3 on each of 2 ranks)
    card = json.loads((run / "seed0" / "ceiling" / "llmst_student.json").read_text())
    assert card["processes"] == 2 and card["steps"] == 3, card
    done = _outputs(run)
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "computing" not in again.stderr and _outputs(run) == done


def test_pgr_plot_marks_undefined_seeds(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from llmst.experiments.w2s_report import plot_pgr

    def entry(value):
        scores = {"accuracy": 0.7, "auroc": 0.8}
        ci = None if value is None else [value - 0.1, value + 0.1]
        pgr_ = {"accuracy": value, "accuracy_ci": ci, "auroc": value, "auroc_ci": ci}
        return {"weak": scores, "transfer": scores, "ceiling": scores, "pgr": pgr_}

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to read its texts
    report = {
        "config": {"seeds": [0, 1]},
        "variants": {"xent": {"seeds": [entry(None), entry(0.4)], "mean": entry(0.3)}},
    }
    plot_pgr(report, tmp_path / "pgr.png")
    left = figures[0].axes[0]
    assert [t.get_text() for t in left.texts] == ["undefined (gap < min_gap)"]
    assert left.texts[0].get_position()[0] == 0  # at seed 0's column
    # the variant is in the legend though its first seed has no point
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["xent"]
    assert (tmp_path / "pgr.png").stat().st_size > 0
