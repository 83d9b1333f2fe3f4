"""Tiny random-init models for tests and pipeline benchmarks: every real code path, in seconds."""

from __future__ import annotations

from pathlib import Path


def save_tiny_llama(folder: str | Path, tokenizer_from: str, max_positions: int = 256) -> str:
    """Save a 2-layer random-init Llama (hidden 64, GQA 4/2 heads, seeded) with the tokenizer of
    `tokenizer_from` into `folder`; returns the folder. Its labels mean nothing: it exercises the code, not
    the model."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
