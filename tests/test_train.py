"""Students: losses against hand-computed values, batch plans, pooling, training, saving, predicting, resume."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_lines, sst2_rows, write_jsonl

from llmst import stage
from llmst.errors import ConfigError
from llmst.train import PredictConfig, TrainConfig, predict_file, predict_signature, train, train_signature
from llmst.train.data import batch_plan
from llmst.train.losses import DoublyRobustLoss, SoftCrossEntropyLoss
from llmst.train.model import StudentClassifier, build_classifier, last_token_index
from llmst.train.predict import load_student, predict_probs

NAMES = ["negative", "positive"]


def labeled_rows(n: int, *, flip_every: int = 0, split: str = "dev") -> list[dict]:
    """SST-2 rows with LLM-style records: probs leaning to the gold label (optionally some flipped)."""
    rows = []
    for i, row in enumerate(sst2_rows(split, n)):
        gold = row["gold"]
        label = 1 - gold if flip_every and i % flip_every == 0 else gold
        p = 0.8 if label == 1 else 0.2
        rows.append(
            {
                **row,
                "label": NAMES[label],
                "probs": {"negative": 1 - p, "positive": p},
                "confidence": max(p, 1 - p),
            }
        )
    return rows


# ------------------------------------------------------------------------------------------- configs


def test_configs_import_without_torch():
    code = (
        "import sys, llmst.train.config\n"
        "from llmst.train import PredictConfig, TrainConfig, predict_signature, train_signature\n"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "False", done.stderr[-2000:]


def test_config_fields_limits_and_list_options():
    config = TrainConfig(text_fields="title, body", labels="neg,pos")
    assert config.text_fields == ["title", "body"] and config.labels == ["neg", "pos"]
    assert PredictConfig(text_fields="a,b").text_fields == ["a", "b"]
    assert TrainConfig(limit=3).limit == 3 and PredictConfig().limit is None
    for bad in (0, -2):
        with pytest.raises(ConfigError, match="--limit must be"):
            TrainConfig(limit=bad)
        with pytest.raises(ConfigError, match="--limit must be"):
            PredictConfig(limit=bad)
    runtime = {f.name for f in fields(TrainConfig) if f.metadata.get("runtime")}
    assert runtime == {"save_steps", "resume", "overwrite", "progress"}
    assert {f.name for f in fields(PredictConfig) if f.metadata.get("runtime")} == {
        "batch_size",
        "overwrite",
        "progress",
        "engine",  # --engine ray writes what one local run writes, under the same signature
        "ray_address",
        "num_workers",
    }
    assert all(f.metadata.get("help") for f in (*fields(TrainConfig), *fields(PredictConfig)))


def test_student_kinds_come_from_a_registry():
    from llmst.train.classifier import train_classifier
    from llmst.train.run import student_trainer
    from llmst.train.sft import train_generative

    assert student_trainer("classifier") is train_classifier
    assert student_trainer("generative") is train_generative
    with pytest.raises(ConfigError, match="unknown student kind 'regression'"):
        student_trainer("regression")


# ------------------------------------------------------------------------------------------- losses


def test_soft_cross_entropy_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([[0.7, 0.3], [0.0, 1.0]])
    log_p0 = [2 - math.log(math.exp(2) + 1), -math.log(math.exp(2) + 1)]
    log_p1 = [-math.log(1 + math.e), 1 - math.log(1 + math.e)]
    row0 = -(0.7 * log_p0[0] + 0.3 * log_p0[1])
    row1 = -log_p1[1]
    loss = SoftCrossEntropyLoss().compute_loss_from_logits(logits, targets)
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    weighted = SoftCrossEntropyLoss().compute_loss_from_logits(logits, targets, torch.tensor([3.0, 1.0]))
    assert weighted.item() == pytest.approx((3 * row0 + row1) / 4, rel=1e-6)
    # one-hot targets = torch's hard-label cross-entropy
    hard = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
    assert SoftCrossEntropyLoss().compute_loss_from_logits(logits, hard).item() == pytest.approx(
        expected.item()
    )


def test_soft_cross_entropy_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="SoftCrossEntropyLoss"):
        SoftCrossEntropyLoss().compute_loss_from_logits(torch.zeros(2, 2), torch.zeros(2, 3))


def test_doubly_robust_loss_hand_computed():
    logits = torch.tensor([[1.0, -1.0], [0.5, 0.5], [-2.0, 2.0]])
    pseudo = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # the labeler says class 0 everywhere
    gold = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # rows 1, 2 are gold rows of class 1
    is_gold = torch.tensor([0.0, 1.0, 1.0])
    log_probs = torch.log_softmax(logits, dim=-1)
    l_pseudo = -log_probs[:, 0]
    l_gold = -log_probs[:, 1]
    expected = l_pseudo.mean() - l_pseudo[1:].mean() + l_gold[1:].mean()
    loss = DoublyRobustLoss().compute_loss_from_logits(logits, pseudo, gold, is_gold)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_doubly_robust_equals_cross_entropy_when_pseudo_labels_are_right():
    torch.manual_seed(0)
    logits = torch.randn(6, 3)
    targets = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])]
    is_gold = torch.tensor([0, 0, 0, 1.0, 1.0, 0])
    dr = DoublyRobustLoss().compute_loss_from_logits(logits, targets, targets, is_gold)
    ce = SoftCrossEntropyLoss().compute_loss_from_logits(logits, targets)
    assert dr.item() == pytest.approx(ce.item(), rel=1e-6)


def test_doubly_robust_needs_gold_rows():
    with pytest.raises(ValueError, match="gold row"):
        DoublyRobustLoss().compute_loss_from_logits(
            torch.zeros(2, 2), torch.eye(2), torch.eye(2), torch.zeros(2)
        )


# ------------------------------------------------------------------------------------------- batch plan


def test_batch_plan_mixes_gold_at_a_fixed_share_and_covers_every_row():
    plan = batch_plan(100, 7, epochs=2, batch_size=8, gold_share=0.25, seed=0)
    batches = [plan[i : i + 8] for i in range(0, len(plan), 8)]
    for batch in batches[:-1]:
        assert sum(is_gold for is_gold, _ in batch) == 2
    pseudo = [index for is_gold, index in plan if not is_gold]
    assert sorted(pseudo) == sorted(list(range(100)) * 2)
    assert {index for is_gold, index in plan if is_gold} == set(range(7))
    assert plan == batch_plan(100, 7, epochs=2, batch_size=8, gold_share=0.25, seed=0)
    assert plan != batch_plan(100, 7, epochs=2, batch_size=8, gold_share=0.25, seed=1)


def test_batch_plan_without_gold_and_bad_share():
    plan = batch_plan(10, 0, epochs=1.5, batch_size=4, gold_share=0.0, seed=0)
    assert len(plan) == 15 and not any(is_gold for is_gold, _ in plan)
    with pytest.raises(ConfigError, match="no room"):
        batch_plan(10, 5, epochs=1, batch_size=1, gold_share=0.5, seed=0)


# ------------------------------------------------------------------------------------------- pooling


def test_last_token_index_left_and_right_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [2, 4, 4]


def test_decoder_pooling_uses_the_mask_not_the_pad_id(tiny_model_dir):
    """Pad id = a token that also occurs in the text: pooling by pad id (transformers' default) picks the
    wrong token; llmst's mask pooling gives the same logits padded or alone."""
    model, tokenizer = build_classifier(tiny_model_dir, NAMES)
    model.eval()
    text_ids = tokenizer("the best movie of the year", add_special_tokens=False)["input_ids"]
    pad_id = text_ids[-1]  # the text's last token doubles as the pad token
    model.config.pad_token_id = pad_id
    student = StudentClassifier(model)
    short = torch.tensor([text_ids])
    padded = torch.tensor([text_ids + [pad_id] * 3, text_ids + text_ids[:3]])
    mask = torch.tensor([[1] * len(text_ids) + [0] * 3, [1] * (len(text_ids) + 3)])
    with torch.no_grad():
        alone = student(short, torch.ones_like(short))
        batch = student(padded, mask)
        native = model(input_ids=padded, attention_mask=mask).logits
    assert torch.allclose(batch[0], alone[0], atol=1e-5)
    assert not torch.allclose(native[0], alone[0], atol=1e-3)  # the bug llmst avoids


# ------------------------------------------------------------------------------------------- training


@pytest.fixture()
def labeled_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "labeled.jsonl", labeled_rows(48))


def _config(student: str, **options) -> TrainConfig:
    defaults = dict(student=student, epochs=1, batch_size=8, save_steps=1000, progress=False)
    defaults.update(options)
    return TrainConfig(**defaults)


def test_completed_outputs_record_their_signatures(tiny_bert_dir, labeled_file, tmp_path):
    config = _config(tiny_bert_dir)
    out = tmp_path / "student"
    train(labeled_file, out, config)
    expected = train_signature(labeled_file, config)
    assert stage.read_marker(out) == expected and stage.is_current(out, expected)
    # runtime options leave the signature alone; options and data that change the model change it
    same = replace(config, save_steps=7, overwrite=True, progress=True, resume=False)
    assert train_signature(labeled_file, same) == expected
    assert train_signature(labeled_file, replace(config, epochs=2)) != expected
    other = write_jsonl(tmp_path / "other.jsonl", labeled_rows(48, flip_every=4))
    assert train_signature(other, config) != expected
    # the base student counts by its weights, not its path: retrained in place, it is another model
    base = tmp_path / "base"
    shutil.copytree(tiny_bert_dir, base)
    before = train_signature(labeled_file, replace(config, student=str(base)))
    assert train_signature(labeled_file, replace(config, student=str(base))) == before
    weights = next(base.glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    assert train_signature(labeled_file, replace(config, student=str(base))) != before

    pred = tmp_path / "pred.jsonl"
    predict_file(out, labeled_file, pred, PredictConfig(limit=5, batch_size=2, progress=False))
    assert len(read_lines(pred)) == 5
    predicted = predict_signature(out, labeled_file, PredictConfig(limit=5))
    assert stage.read_marker(pred) == predicted
    assert predict_signature(out, labeled_file, PredictConfig(limit=6)) != predicted
    assert predict_signature(out, labeled_file) != predicted  # all rows
    with pytest.raises(ConfigError, match="exists"):
        predict_file(out, labeled_file, pred, PredictConfig(limit=5))

    # a retrained student (other seed) is another model: its old predictions are stale
    train(labeled_file, out, replace(config, seed=1, overwrite=True))
    assert stage.read_marker(out) == train_signature(labeled_file, replace(config, seed=1)) != expected
    assert predict_signature(out, labeled_file, PredictConfig(limit=5)) != predicted


def test_quiet_training_prints_no_load_report(tiny_bert_dir, labeled_file, tmp_path, capfd):
    """A fresh classifier head is what a student starts from; transformers' LOAD REPORT ("classifier.weight
    MISSING") reads like an error, so --quiet (progress=False) must not print it."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()  # a user's default (the test suite runs at error)
    to_stderr = logging.StreamHandler(sys.stderr)  # transformers' own handler kept pytest's first stderr
    logging.getLogger("transformers").addHandler(to_stderr)
    try:
        capfd.readouterr()
        train(labeled_file, tmp_path / "loud", _config(tiny_bert_dir, progress=True))
        loud = capfd.readouterr()
        train(labeled_file, tmp_path / "quiet", _config(tiny_bert_dir))
        quiet = capfd.readouterr()
        assert hf_logging.get_verbosity() == hf_logging.WARNING  # restored after the quiet run
    finally:
        hf_logging.set_verbosity(previous)
        logging.getLogger("transformers").removeHandler(to_stderr)
    assert "LOAD REPORT" in loud.err + loud.out  # what the quiet run must leave out
    assert "LOAD REPORT" not in quiet.err + quiet.out and "MISSING" not in quiet.err + quiet.out, quiet.err
    assert "Loading weights" not in quiet.err and "saved student to" in quiet.err


@pytest.mark.parametrize("lora", [False, True])
def test_decoder_classifier_trains_saves_and_predicts(tiny_model_dir, labeled_file, tmp_path, lora):
    out = tmp_path / "student"
    summary = train(labeled_file, out, _config(tiny_model_dir, lora=lora, soft_labels=True))
    assert summary.rows == 48 and summary.steps == 6 and summary.final_loss is not None
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    assert not (out / "checkpoints").exists()
    assert not (out / "adapter_config.json").exists()  # LoRA merged: a plain HF folder
    card = (out / "README.md").read_text()
    assert "labeled.jsonl" in card and ("LoRA" in card) == lora
    from transformers import AutoModelForSequenceClassification

    plain = AutoModelForSequenceClassification.from_pretrained(out)
    assert plain.config.id2label == {0: "negative", 1: "positive"}

    predicted = predict_file(out, labeled_file, tmp_path / "pred.jsonl")
    rows = read_lines(tmp_path / "pred.jsonl")
    assert predicted["labeled"] == 48 and len(rows) == 48
    first = rows[0]
    for field in ("id", "label", "probs", "confidence", "margin", "entropy", "model", "task", "prompt_hash"):
        assert field in first
    assert first["input_label"] in NAMES and first["input_probs"]  # the LLM's label is kept, renamed
    assert sum(first["probs"].values()) == pytest.approx(1.0)
    assert datasets_can_open(tmp_path / "pred.jsonl")


def datasets_can_open(path: Path) -> bool:
    import datasets

    return len(datasets.load_dataset("json", data_files=str(path), split="train")) > 0


def test_merged_lora_student_predicts_like_the_adapter_model(tiny_model_dir, tmp_path):
    """Merging LoRA into the weights (what llmst saves) must not change a prediction."""
    from llmst.train.model import unwrap_for_saving

    torch.manual_seed(0)
    model, tokenizer = build_classifier(
        tiny_model_dir, NAMES, lora=True, lora_options={"r": 4, "target": "all-linear"}
    )
    with torch.no_grad():  # make the adapters non-trivial (lora_B starts at zero)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    texts = [r["text"] for r in sst2_rows("dev", 10)]
    with_adapters = predict_probs(StudentClassifier(model).eval(), tokenizer, texts)
    with model.disable_adapter():  # the same model with its adapters switched off: the base weights alone
        base_only = predict_probs(StudentClassifier(model).eval(), tokenizer, texts)
    plain = unwrap_for_saving(model)
    plain.save_pretrained(tmp_path / "merged")
    tokenizer.save_pretrained(tmp_path / "merged")
    (tmp_path / "merged" / "llmst_student.json").write_text(
        json.dumps({"kind": "classifier", "labels": NAMES, "text_fields": ["text"], "max_length": 128})
    )
    student, tokenizer2, _ = load_student(tmp_path / "merged")
    merged = predict_probs(student, tokenizer2, texts)
    again = predict_probs(student, tokenizer2, texts, batch_size=3)  # other padding, same answers
    assert np.allclose(merged, with_adapters, atol=1e-4)
    assert np.allclose(merged, again, atol=1e-5)
    assert with_adapters.shape == (10, 2) and np.allclose(with_adapters.sum(axis=1), 1.0)
    # the adapters matter: without them (the base weights alone) the answers differ, so the merge kept them
    assert np.abs(base_only - with_adapters).max() > 1e-2
    assert not np.allclose(merged, base_only, atol=1e-3)


def test_doubly_robust_recovers_from_wrong_pseudo_labels(tiny_bert_dir, tmp_path):
    """Every pseudo-label is flipped; gold rows (the same texts, labeled by the same labeler) are right.
    Cross-entropy with the gold rows mixed in sees contradicting targets and ends near chance at best;
    the doubly robust loss cancels the pseudo terms and learns the gold rule."""
    rows = []
    for i in range(64):
        label = i % 2
        wrong = NAMES[1 - label]
        p = 0.9 if wrong == "positive" else 0.1
        rows.append(
            {
                "text": "excellent film" if label else "terrible film",
                "label": wrong,
                "probs": {"negative": 1 - p, "positive": p},
            }
        )
    data = write_jsonl(tmp_path / "pseudo.jsonl", rows)
    gold = write_jsonl(
        tmp_path / "gold.jsonl", [{**r, "gold": 1 - NAMES.index(r["label"])} for r in rows[:8]]
    )
    evaluation = write_jsonl(
        tmp_path / "eval.jsonl", [{"text": "excellent film", "gold": 1}, {"text": "terrible film", "gold": 0}]
    )
    common = dict(
        epochs=4, learning_rate=3e-3, gold=str(gold), gold_share=0.25, eval=str(evaluation), labels=NAMES
    )
    ce = train(data, tmp_path / "ce", _config(tiny_bert_dir, **common))
    dr = train(data, tmp_path / "dr", _config(tiny_bert_dir, loss="doubly-robust", **common))
    assert ce.metrics["accuracy"] == 0.0  # 3 of 4 rows per batch say the flipped rule
    assert dr.metrics["accuracy"] == 1.0


def test_encoder_student_learns_separable_labels(tiny_bert_dir, tmp_path):
    """A tiny BERT learns a trivially separable task: a keyword decides the label."""
    rows = []
    for i in range(64):
        label = i % 2
        word = "excellent" if label else "terrible"
        rows.append({"id": str(i), "text": f"{word} film number {i}", "label": NAMES[label]})
    data = write_jsonl(tmp_path / "kw.jsonl", rows)
    gold = write_jsonl(tmp_path / "gold.jsonl", [{**r, "gold": r["label"]} for r in rows[:16]])
    out = tmp_path / "bert"
    config = _config(tiny_bert_dir, epochs=8, learning_rate=3e-3, eval=str(gold), labels=NAMES)
    summary = train(data, out, config)
    assert summary.metrics["accuracy"] == 1.0
    assert "accuracy: 1.0" in (out / "README.md").read_text()


def test_weights_and_gold_mixing_and_doubly_robust_run(tiny_bert_dir, tmp_path, labeled_file):
    gold = write_jsonl(tmp_path / "gold.jsonl", labeled_rows(10, split="train"))
    out = tmp_path / "dr"
    config = _config(
        tiny_bert_dir, loss="doubly-robust", gold=str(gold), gold_share=0.25, weight_field="confidence"
    )
    summary = train(labeled_file, out, config)
    assert summary.gold_rows == 10 and summary.steps == 8  # 48 pseudo rows, 6 per batch of 8
    meta = json.loads((out / "llmst_student.json").read_text())
    assert meta["loss"] == "doubly-robust" and meta["gold_share"] == 0.25
    assert meta["loss_config"] == {"loss": "doubly-robust"}  # the loss's get_config_dict and citation
    assert "@inproceedings{zhu2023doubly" in (out / "README.md").read_text()


def test_resume_after_interruption_gives_the_same_model(tiny_bert_dir, labeled_file, tmp_path):
    """Stop training after 3 steps (a fault injected by a callback), rerun: it resumes from the checkpoint
    and ends with the same weights as an uninterrupted run."""
    from transformers import TrainerCallback

    import llmst.train.classifier as classifier_module

    class StopAt3(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    config = _config(tiny_bert_dir, epochs=2, save_steps=2, learning_rate=1e-3)
    reference = tmp_path / "reference"
    train(labeled_file, reference, config)

    out = tmp_path / "resumed"
    original = classifier_module._make_trainer_class

    def interrupting_class():
        cls = original()

        class Interrupting(cls):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.add_callback(StopAt3())

        return Interrupting

    classifier_module._make_trainer_class = interrupting_class
    try:
        with pytest.raises(KeyboardInterrupt):
            train(labeled_file, out, config)
    finally:
        classifier_module._make_trainer_class = original
    assert (out / "checkpoints" / "checkpoint-2").exists() and not (out / "config.json").exists()
    assert stage.read_marker(out) is None  # an interrupted run is not complete
    with pytest.raises(ConfigError, match="different run"):  # other options never resume these checkpoints
        train(labeled_file, out, _config(tiny_bert_dir, epochs=2, save_steps=2, learning_rate=2e-3))
    original_rows = labeled_file.read_bytes()
    write_jsonl(labeled_file, labeled_rows(48, flip_every=3))  # same path, other labels
    with pytest.raises(ConfigError, match="different run"):  # ... nor other data under the same name
        train(labeled_file, out, config)
    labeled_file.write_bytes(original_rows)
    # runtime options (checkpoint interval, progress) are not part of the run: it still resumes
    summary = train(labeled_file, out, _config(tiny_bert_dir, epochs=2, save_steps=3, learning_rate=1e-3))
    assert summary.resumed_from and summary.resumed_from.endswith("checkpoint-2")
    assert not (out / "checkpoints").exists()
    from safetensors.torch import load_file

    a, b = load_file(reference / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_generative_student_sft_and_predict(tiny_model_dir, labeled_file, tmp_path):
    out = tmp_path / "sft"
    summary = train(labeled_file, out, _config(tiny_model_dir, kind="generative", lora=True))
    assert summary.steps == 6
    assert (out / "task.yaml").exists() and (out / "config.json").exists()
    result = predict_file(out, labeled_file, tmp_path / "pred.jsonl", PredictConfig(progress=False))
    rows = read_lines(tmp_path / "pred.jsonl")
    assert result["labeled"] == 48 and set(rows[0]["probs"]) == set(NAMES)


# ------------------------------------------------------------------------------------------- bad input


def test_bad_training_inputs_give_clear_errors(tiny_bert_dir, tmp_path, labeled_file):
    no_probs = write_jsonl(tmp_path / "np.jsonl", [{"text": "a", "label": "positive"}])
    with pytest.raises(ConfigError, match="label set"):
        train(no_probs, tmp_path / "x", _config(tiny_bert_dir))
    with pytest.raises(ConfigError, match="soft-labels needs probs"):
        train(no_probs, tmp_path / "x", _config(tiny_bert_dir, labels=NAMES, soft_labels=True))
    no_text = write_jsonl(
        tmp_path / "nt.jsonl", [{"label": "positive", "probs": {"negative": 0, "positive": 1}}]
    )
    with pytest.raises(ConfigError, match="no text"):
        train(no_text, tmp_path / "x", _config(tiny_bert_dir))
    with pytest.raises(ConfigError, match="doubly-robust needs gold"):
        TrainConfig(loss="doubly-robust")
    with pytest.raises(ConfigError, match="gold-share needs"):
        TrainConfig(gold_share=0.2)
    gold_without_probs = write_jsonl(tmp_path / "g.jsonl", [{"text": "fine", "gold": 1}])
    with pytest.raises(ConfigError, match="probs on gold rows"):
        train(
            labeled_file,
            tmp_path / "x",
            _config(tiny_bert_dir, loss="doubly-robust", gold=str(gold_without_probs), gold_share=0.25),
        )
    out = tmp_path / "done"
    train(labeled_file, out, _config(tiny_bert_dir))
    with pytest.raises(ConfigError, match="already holds a trained model of this data and these options"):
        train(labeled_file, out, _config(tiny_bert_dir, save_steps=5))  # a runtime option: the same model
    with pytest.raises(ConfigError, match=r"trained model \(pass --overwrite"):  # another model
        train(labeled_file, out, _config(tiny_bert_dir, seed=3))
    with pytest.raises(ConfigError, match="not an llmst student"):
        predict_file(tmp_path, labeled_file, tmp_path / "p.jsonl")


def test_records_missing_required_fields_name_file_line_and_field(tiny_bert_dir, tmp_path):
    def train_on(rows: list[dict], name: str, **options) -> None:
        train(write_jsonl(tmp_path / name, rows), tmp_path / "never", _config(tiny_bert_dir, **options))

    good = labeled_rows(3)
    with pytest.raises(
        ConfigError, match=r"bad_label\.jsonl, line 2: no field 'probs' and field 'label' is 'meh'"
    ):
        train_on([good[0], {"text": "fine", "label": "meh"}, good[2]], "bad_label.jsonl")
    with pytest.raises(ConfigError, match=r"no_label\.jsonl, line 3: no field 'probs' and no field 'label'"):
        train_on([good[0], good[1], {"text": "fine"}], "no_label.jsonl")
    with pytest.raises(
        ConfigError, match=r"no_text\.jsonl, line 2: no text in field 'text' \(fields present: id"
    ):
        train_on([good[0], {"id": "7", "label": "positive"}, good[2]], "no_text.jsonl")
    with pytest.raises(ConfigError, match=r"title\.jsonl, line 1: no text in field 'title'"):
        train_on(good, "title.jsonl", text_fields="text,title")
    gold = write_jsonl(tmp_path / "gold.jsonl", [{"text": "fine", "verdict": 1}])
    with pytest.raises(ConfigError, match=r"gold\.jsonl, line 1: no field 'gold'"):
        train_on(good, "ok.jsonl", gold=str(gold), gold_share=0.25)
    assert not (tmp_path / "never").exists()  # a bad input never claims the output folder


def test_predict_rejects_bad_rows(tiny_bert_dir, labeled_file, tmp_path):
    out = tmp_path / "student"
    train(labeled_file, out, _config(tiny_bert_dir))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "1", "text": "good"}\n{not json\n{"id": "3", "other": "x"}\n{"id": "4", "text": "bad"}\n'
    )
    result = predict_file(out, bad, tmp_path / "pred.jsonl")
    assert result["labeled"] == 2 and result["rejected"] == 2
    rejects = read_lines(tmp_path / "pred.jsonl.rejects.jsonl")
    assert [r["line"] for r in rejects] == [2, 3]


# ------------------------------------------------------------------------------------------- distributed


def test_two_rank_torchrun_trains_the_same_kind_of_model(tiny_bert_dir, tmp_path):
    """`torchrun --nproc_per_node 2 -m llmst train` (DDP over gloo on CPU) saves the same kind of model as one
    process, in half the optimiser steps per rank, and both learn the task equally well."""
    rows = []
    for i in range(64):
        label = i % 2
        rows.append(
            {"text": f"{'excellent' if label else 'terrible'} film number {i}", "label": NAMES[label]}
        )
    data = write_jsonl(tmp_path / "kw.jsonl", rows)
    held_out = write_jsonl(
        tmp_path / "held.jsonl",
        [
            {"text": f"{'excellent' if i % 2 else 'terrible'} film number {100 + i}", "gold": i % 2}
            for i in range(20)
        ],
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [data.as_posix(), "--student", tiny_bert_dir, "--epochs", "8", "--batch-size", "8", "--quiet"]
    common += ["--learning-rate", "3e-3", "--labels", "negative,positive", "--eval", held_out.as_posix()]
    one = subprocess.run(
        [sys.executable, "-m", "llmst", "train", *common, "-o", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "llmst", "train"]
        + [*common, "-o", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    summary_one = json.loads(one.stdout[one.stdout.index("{") :])
    summary_two = json.loads(two.stdout[two.stdout.index("{") :])
    assert summary_one["steps"] == 64 and summary_two["steps"] == 32
    assert summary_one["metrics"]["accuracy"] >= 0.95 and summary_two["metrics"]["accuracy"] >= 0.95
    files_one = {p.name for p in (tmp_path / "one").iterdir()}
    files_two = {p.name for p in (tmp_path / "two").iterdir()}
    assert files_one == files_two and "model.safetensors" in files_two
    meta_one = json.loads((tmp_path / "one" / "llmst_student.json").read_text())
    meta_two = json.loads((tmp_path / "two" / "llmst_student.json").read_text())
    assert meta_one["labels"] == meta_two["labels"] and meta_one["kind"] == meta_two["kind"]


def test_cli_train_and_predict_errors_are_one_line(tmp_path):
    missing = subprocess.run(
        [sys.executable, "-m", "llmst", "train", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2 and missing.stderr.startswith("error: input not found")
    bad_loss = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmst",
            "train",
            "x.jsonl",
            "-o",
            str(tmp_path / "m"),
            "--loss",
            "doubly-robust",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad_loss.returncode == 2 and "doubly-robust needs gold rows" in bad_loss.stderr
    not_student = subprocess.run(
        [sys.executable, "-m", "llmst", "predict", str(tmp_path), "x.jsonl", "-o", str(tmp_path / "p.jsonl")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert not_student.returncode == 2 and "not an llmst student" in not_student.stderr
    assert "Traceback" not in missing.stderr + bad_loss.stderr + not_student.stderr


@pytest.mark.integration
def test_real_minilm_student_learns_sst2_from_gold(tmp_path):
    """The bundled MiniLM, fine-tuned on 400 SST-2 train rows for 2 epochs, beats chance clearly on dev."""
    rows = [{"text": r["text"], "label": NAMES[r["gold"]]} for r in sst2_rows("train", 400)]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    dev = write_jsonl(tmp_path / "dev.jsonl", sst2_rows("dev", 200))
    config = TrainConfig(
        student="minilm-l6",
        epochs=2,
        batch_size=16,
        max_length=64,
        labels=NAMES,
        eval=str(dev),
        learning_rate=1e-4,
        save_steps=10_000,
        progress=False,
    )
    summary = train(data, tmp_path / "minilm", config)
    assert summary.metrics["accuracy"] > 0.65


def test_model_card_names_the_filter_that_made_the_data(tiny_bert_dir, tmp_path):
    from llmst.filter.config import FilterConfig
    from llmst.filter.stage import run_filter

    labeled = write_jsonl(tmp_path / "labeled.jsonl", labeled_rows(48, flip_every=5))
    run_filter(labeled, tmp_path / "kept.jsonl", FilterConfig(method="balanced", fraction=0.5, plots=False))
    train(tmp_path / "kept.jsonl", tmp_path / "s", _config(tiny_bert_dir))
    card = (tmp_path / "s" / "README.md").read_text()
    assert "Filter: balanced: kept 24 of 48 rows" in card
