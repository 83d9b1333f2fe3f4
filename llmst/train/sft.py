"""Generative student: supervised fine-tuning with TRL's SFTTrainer (prompt -> " <label>"), LoRA by default.

The prompt template and label words are saved as `task.yaml` in the model folder, so `llmst predict` scores
each label as a continuation of the same prompt with llmst's own scorer (one distribution over labels, not
free text to parse).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from llmst.backends.base import truncate_with_tokenizer
from llmst.errors import ConfigError
from llmst.models import resolve_model
from llmst.train.config import TrainConfig
from llmst.train.data import batch_plan, label_names_of, load_gold, load_pseudo_labeled
from llmst.train.model import load_tokenizer


def train_generative(labeled: str | Path, out: str | Path, config: TrainConfig, *, progress: bool = True):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, set_seed
    from trl import SFTConfig, SFTTrainer

    from llmst.label.task import task_from_dict
    from llmst.train.trainer import (
        CHECKPOINTS,
        _check_distributed,
        _mark_run,
        _prepare_output,
        _run_fingerprint,
        _use_bf16,
        run_and_save,
    )

    out = Path(out)
    set_seed(config.seed)
    names = label_names_of(labeled, config.labels)
    text_fields = config.text_fields or ["text"]
    task_spec = {
        "task": "student-sft",
        "text_fields": text_fields,
        "labels": {name: [f" {name}"] for name in names},
        "prompt": config.prompt,
    }
    task = task_from_dict(task_spec, "student-sft")
    pseudo = load_pseudo_labeled(
        labeled, names, text_fields=text_fields, soft_labels=False, weight_field=None, limit=config.limit
    )
    gold = (
        load_gold(
            config.gold, names, text_fields=text_fields, gold_field=config.gold_field, need_pseudo=False
        )
        if config.gold
        else None
    )
    plan = batch_plan(
        len(pseudo),
        len(gold) if gold else 0,
        epochs=config.epochs,
        batch_size=config.batch_size,
        gold_share=config.gold_share,
        seed=config.seed,
    )
    _check_distributed(config)
    fingerprint = _run_fingerprint(labeled, config)
    resume_from = _prepare_output(out, config, fingerprint)
    _mark_run(out, fingerprint)
    spec = resolve_model(config.student)
    tokenizer = load_tokenizer(spec.path)
    # Cut long texts so prompt + label + EOS fit in max_length: TRL would otherwise cut the label off and drop
    # the row, which biases training toward short texts and breaks the gold share of the batch plan.
    label_tokens = max(
        len(tokenizer(v[0], add_special_tokens=False)["input_ids"]) for v in task.labels.values()
    )
    overhead = len(tokenizer(task.render({"text": ""}, ""))["input_ids"]) + label_tokens + 2
    if overhead >= config.max_length:
        raise ConfigError(f"--max-length {config.max_length} leaves no room for text in the prompt template")
    rows = []
    for is_gold, index in plan:
        source = gold if is_gold else pseudo
        label = names[int(np.argmax(source.targets[index]))]
        text = truncate_with_tokenizer(tokenizer, source.texts[index], config.max_length - overhead)
        rows.append({"prompt": task.render({"text": text}, text), "completion": task.labels[label][0]})
    model = AutoModelForCausalLM.from_pretrained(spec.path, dtype=torch.float32)
    peft_config = None
    if config.lora:
        target = config.lora_target
        peft_config = LoraConfig(
            task_type="CAUSAL_LM",
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=target if target == "all-linear" else [t.strip() for t in target.split(",")],
        )
    steps = -(-len(rows) // config.batch_size)
    args = SFTConfig(
        output_dir=str(out / CHECKPOINTS),
        per_device_train_batch_size=config.batch_size,
        num_train_epochs=1,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # < 1: a ratio of the steps each rank runs
        weight_decay=config.weight_decay,
        logging_steps=max(1, min(50, steps // 10)),
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        report_to="none",
        seed=config.seed,
        bf16=_use_bf16(config),
        use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="sequential",
        max_length=config.max_length,
        completion_only_loss=True,
        packing=False,
        disable_tqdm=not progress,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    meta = {
        "kind": "generative",
        "base_model": spec.spec,
        "labels": names,
        "text_fields": text_fields,
        "max_length": config.max_length,
        "lora": config.lora,
        "soft_labels": False,
        "loss": "sft (completion-only cross-entropy)",
        "prompt": config.prompt,
    }
    return run_and_save(
        trainer,
        trainer.model,
        tokenizer,
        out,
        meta,
        config=config,
        labeled=labeled,
        rows=len(pseudo),
        gold_rows=len(gold) if gold else 0,
        planned=len(rows),
        resume_from=resume_from,
        progress=progress,
        state_prefix="",
        extra_files={"task.yaml": yaml.safe_dump(task_spec, sort_keys=False, allow_unicode=True)},
    )
