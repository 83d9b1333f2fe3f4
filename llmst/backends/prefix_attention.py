"""Attention over a shared prefix without copying it per request (cascade attention), for the hf backend.

Scoring a few-shot batch attends every request's tokens to the same demonstration block. With a key/value cache
expanded to the batch, transformers copies the block once per request in every layer and SDPA repeats it
across the query heads of a key/value group, so on a CPU the prefix part runs at a fraction of the linear
layers' speed. Here the prefix is kept once: the queries of all requests (and of all heads that share a
key/value head) form one matrix that meets the prefix keys in a single large matmul; each request's own
tokens are attended separately (causal, padding-masked), and the two parts are joined with the softmax
normalisers of both (as FlashInfer's cascade attention and vLLM's prefix-cached attention do on GPUs; neither
runs in transformers on a CPU, hence this function).

`register()` adds the implementation `llmst_prefix` to transformers' attention registry; it is SDPA unless the
forward passes `shared_prefix` (one `(keys, values)` pair per layer, batch 1), so a model set to it behaves as
with `sdpa` everywhere else (generation included).
"""

from __future__ import annotations

from typing import Any

NAME = "llmst_prefix"


def supports_shared_prefix(config: Any) -> bool:
    """True for decoders whose attention is plain causal softmax attention on every layer (no sliding window:
    it would hide part of the prefix from some layers; no attention logit soft-capping), with torch's CPU
    flash-attention kernel at hand (a private op: it returns the softmax normalisers that SDPA keeps)."""
    import torch

    if not hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        return False
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "attn_logit_softcapping", None):
        return False
    if getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True) is not False:
        return False
    return not any("sliding" in str(kind) for kind in getattr(text, "layer_types", None) or [])


def prefix_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    shared_prefix: list[tuple[Any, Any]] | None = None,
    **kwargs: Any,
):
    """transformers attention interface: `query` (B, H, L, D), `key`/`value` (B, KV, L, D) of the requests'
    own tokens; `shared_prefix[layer]` the prefix's (1, KV, P, D) keys and values. Returns (B, L, H, D)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if shared_prefix is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu  # returns the softmax normalisers too
    prefix_keys, prefix_values = shared_prefix[module.layer_idx]
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    grouped = query.view(batch, kv_heads, group, length, dim)
    # every request's queries of one key/value head as the rows of one matrix, against the prefix once
    rows = grouped.permute(1, 0, 2, 3, 4).reshape(1, kv_heads, batch * group * length, dim)
    prefix_out, prefix_lse = flash(rows, prefix_keys, prefix_values, scale=scaling)
    prefix_out = prefix_out.reshape(kv_heads, batch, group, length, dim).transpose(0, 1)
    prefix_lse = prefix_lse.reshape(kv_heads, batch, group, length).transpose(0, 1)
    # each request's own tokens: causal and padding-masked, the heads of a group stacked along the queries
    own_mask = _own_mask(attention_mask, batch, length, query).expand(-1, group, -1, -1)
    own_out, own_lse = flash(
        grouped.reshape(batch, kv_heads, group * length, dim),
        key,
        value,
        attn_mask=own_mask.reshape(batch, 1, group * length, length),
        scale=scaling,
    )
    own_out = own_out.reshape(batch, kv_heads, group, length, dim)
    own_lse = own_lse.reshape(batch, kv_heads, group, length)
    # the share of each query's softmax mass on the prefix joins the two normalised parts
    share = torch.sigmoid(prefix_lse - own_lse).unsqueeze(-1).to(query.dtype)
    out = torch.lerp(own_out, prefix_out, share)
    return out.reshape(batch, heads, length, dim).transpose(1, 2).contiguous(), None


def _own_mask(attention_mask: Any, batch: int, length: int, query: Any):
    """(B, 1, L, L) additive mask in the query's dtype (the flash kernel's contract): 0 where a token may
    attend (causal, and not padding per the mask transformers built: None when there is none), -inf elsewhere."""
    import torch

    allowed = torch.ones(length, length, dtype=torch.bool, device=query.device).tril_()
    if attention_mask is not None:
        mask = attention_mask[..., -length:]
        allowed = allowed & (mask if mask.dtype == torch.bool else mask == 0)
    additive = torch.zeros(allowed.shape, dtype=query.dtype, device=query.device)
    return additive.masked_fill_(~allowed, float("-inf")).expand(batch, 1, length, length)


def register() -> None:
    """Add `llmst_prefix` to transformers' attention and mask registries (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, prefix_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
