"""Shared fixtures: a tiny random-init Llama model (real tokenizer of the bundled SmolLM2) and small corpora."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    """The bundled default labeler, converted once to a transformers folder."""
    from llmst.models import resolve_model

    return resolve_model("smollm2-135m-instruct").path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_dir) -> str:
    """A 2-layer random-init Llama with SmolLM2's tokenizer: real code paths, seconds to run."""
    from llmst.testing import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2_dir)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> str:
    """A 2-layer random-init BERT encoder with MiniLM's real tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from llmst.models import resolve_model

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l6").path)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_cross_encoder(tiny_bert_dir, tmp_path_factory) -> str:
    """A random-init one-label CrossEncoder folder (scores in 0..1, different per pair)."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-ce")
    CrossEncoder(tiny_bert_dir, num_labels=1).save_pretrained(str(folder))
    return str(folder)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def sst2_rows(split: str = "dev", limit: int | None = None) -> list[dict]:
    """SST-2 rows from ../shared/data as {id, text, gold}."""
    rows = []
    with open(SHARED_DATA / "sst2" / f"stsa.binary.{split}", encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            gold, text = line.rstrip("\n").split(" ", 1)
            rows.append({"id": f"{split}-{index}", "text": text, "gold": int(gold)})
            if limit and len(rows) >= limit:
                break
    return rows
