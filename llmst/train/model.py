"""Sequence-classifier students: any HF encoder or decoder, full fine-tune or LoRA, saved as a normal HF folder.

Decoders (heads named `score`: Llama, Gemma, Qwen, GPT-2, ...) are pooled at the last token that the
attention mask marks as real. transformers' own `*ForSequenceClassification` instead looks for the last
token that differs from `pad_token_id`, which breaks when the pad id is also a real token (many decoders
pad with EOS). Encoders keep their own pooling (BERT-style [CLS] pooler).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmst.errors import ConfigError

STUDENT_FILE = "llmst_student.json"


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index (B,) of the last position with mask 1 in each row; works for left and right padding."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=-1)


class StudentClassifier(nn.Module):
    """Wraps a `*ForSequenceClassification` model; `forward(input_ids, attention_mask)` returns logits (B, K)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model  # a transformers model, or a peft model wrapping one
        # FSDP's transformer-based auto-wrap looks for the decoder/encoder layer classes here
        self._no_split_modules = getattr(self._transformers_model(), "_no_split_modules", None)

    def _transformers_model(self) -> nn.Module:
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> torch.Tensor:
        hf_model = self._transformers_model()
        if not hasattr(hf_model, "score"):  # encoders: their own pooler and classifier head
            return hf_model(input_ids=input_ids, attention_mask=attention_mask).logits
        backbone = getattr(hf_model, hf_model.base_model_prefix)
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hf_model.score(hidden[rows, last_token_index(attention_mask)])


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    return tokenizer


def lora_targets(spec: str) -> str | list[str]:
    """peft `target_modules` from the CLI form: `all-linear` or comma-separated module names."""
    return spec if spec == "all-linear" else [name.strip() for name in spec.split(",") if name.strip()]


def build_classifier(path: str, names: list[str], *, lora: bool = False, lora_options: dict | None = None):
    """A fresh classifier student from a model folder (head randomly initialised) and its tokenizer."""
    from transformers import AutoModelForSequenceClassification

    tokenizer = load_tokenizer(path)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
            dtype=torch.float32,
        )
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot load a sequence classifier from {path}: {error}") from error
    model.config.pad_token_id = tokenizer.pad_token_id
    if lora:
        from peft import LoraConfig, get_peft_model

        options = dict(lora_options or {})
        config = LoraConfig(
            task_type="SEQ_CLS", target_modules=lora_targets(options.pop("target", "all-linear")), **options
        )
        model = get_peft_model(model, config)
    return model, tokenizer


def unwrap_for_saving(model: nn.Module) -> nn.Module:
    """The plain transformers model: LoRA adapters merged into the weights."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return model.merge_and_unload()
    return model


def write_student_card(folder: Path, meta: dict[str, Any]) -> None:
    """`llmst_student.json` (what `llmst predict` needs) and a short README.md model card."""
    (folder / STUDENT_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    metrics = meta.get("metrics") or {}
    pairs = meta.get("score_field") is not None
    lines = [
        "---",
        f"library_name: {'sentence-transformers' if pairs else 'transformers'}",
        "tags: [llmst, pseudo-labels, self-training]",
        "---",
        f"# {meta['kind']} student trained by llmst",
        "",
        f"- Base model: `{meta['base_model']}`" + (" with LoRA (merged)" if meta.get("lora") else ""),
    ]
    if not pairs:
        lines.append(f"- Labels: {', '.join(meta['labels'])}")
    lines += [
        f"- Training data: `{meta['data']}` ({meta['rows']} rows)",
        f"- Teacher (labeler): {', '.join(meta.get('teachers') or ['unknown'])}",
        f"- Filter: {meta.get('filter') or 'none recorded'}",
    ]
    if pairs:
        lines.append(f"- Targets: pair scores (field `{meta['score_field']}`); loss: {meta['loss']}")
    else:
        lines.append(
            f"- Targets: {'soft (probs)' if meta.get('soft_labels') else 'hard labels'}; loss: {meta['loss']}"
        )
    if meta.get("gold"):
        lines.append(f"- Gold rows mixed in: `{meta['gold']}` at share {meta['gold_share']}")
    for key, value in metrics.items():
        lines.append(f"- {key}: {value}")
    usage = {
        "bi-encoder": "Embed texts: `SentenceTransformer(THIS_FOLDER).encode(texts)` (sentence-transformers).",
        "cross-encoder": "Score pairs: `CrossEncoder(THIS_FOLDER).predict(pairs)` (sentence-transformers).",
    }.get(meta["kind"], "Relabel a corpus: `llmst predict THIS_FOLDER INPUT.jsonl -o OUT.jsonl`.")
    lines += ["", usage, ""]
    if meta.get("loss_config"):
        lines += ["## Loss", "", "```json", json.dumps(meta["loss_config"], indent=2), "```", ""]
    if meta.get("citation"):
        lines += ["## Citation", "", "```bibtex", meta["citation"], "```", ""]
    (folder / "README.md").write_text("\n".join(lines))


def read_student_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / STUDENT_FILE
    if not path.exists():
        raise ConfigError(
            f"{folder} is not an llmst student (no {STUDENT_FILE})", hint="train one with llmst train"
        )
    return json.loads(path.read_text())
