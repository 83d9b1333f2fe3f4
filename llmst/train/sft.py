"""Generative students (`kind: generative`): supervised fine-tuning with TRL's SFTTrainer (prompt -> " <label>").

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
from llmst.train.model import load_tokenizer, lora_targets
from llmst.train.run import (
    TrainSummary,
    prepare_run,
    register_student_kind,
    run_and_save,
    student_meta,
    training_arguments,
)


@register_student_kind("generative")
def train_generative(labeled: str | Path, out: Path, config: TrainConfig) -> TrainSummary:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from llmst.label.task import task_from_dict

    run = prepare_run(labeled, out, config)  # hard labels, plain cross-entropy (TrainConfig checks it)
    task_spec = {
        "task": "student-sft",
        "text_fields": run.text_fields,
        "labels": {name: [f" {name}"] for name in run.names},
        "prompt": config.prompt,
    }
    task = task_from_dict(task_spec, "student-sft")
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
    for is_gold, index in run.plan:
        source = run.gold if is_gold else run.pseudo
        label = run.names[int(np.argmax(source.targets[index]))]
        text = truncate_with_tokenizer(tokenizer, source.texts[index], config.max_length - overhead)
        rows.append({"prompt": task.render({"text": text}, text), "completion": task.labels[label][0]})
    model = AutoModelForCausalLM.from_pretrained(spec.path, dtype=torch.float32)
    peft_config = None
    if config.lora:
        peft_config = LoraConfig(
            task_type="CAUSAL_LM",
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=lora_targets(config.lora_target),
        )
    args = SFTConfig(
        **training_arguments(out, config, len(rows)),
        max_length=config.max_length,
        completion_only_loss=True,
        packing=False,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    meta = student_meta(
        "generative",
        spec.spec,
        run,
        config,
        soft_labels=False,
        loss="sft (completion-only cross-entropy)",
        prompt=config.prompt,
    )
    return run_and_save(
        trainer,
        trainer.model,
        tokenizer,
        out,
        meta,
        config=config,
        labeled=labeled,
        rows=len(run.pseudo),
        gold_rows=len(run.gold) if run.gold else 0,
        planned=len(rows),
        resume_from=run.resume_from,
        state_prefix="",
        extra_files={"task.yaml": yaml.safe_dump(task_spec, sort_keys=False, allow_unicode=True)},
    )
