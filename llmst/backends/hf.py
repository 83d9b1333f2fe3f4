"""In-process transformers backend.

Scoring runs right-padded batches of requests sorted by length (on a CPU split where padding would cost more
than another forward call: `length_batches`) and reads logits only where they are needed (the hidden state of
the last prompt token, plus candidate positions for multi-token verbalizers), so the vocabulary projection is
paid once per prompt, not once per token. When every candidate is one token, a request costs a single forward
pass over its prompt. A shared prefix (a few-shot block) is encoded once and its key/value cache reused for
every request that starts with it; on a CPU the requests attend to it without a per-request copy
(`llmst.backends.prefix_attention`), elsewhere through a key/value cache expanded to the batch. A prompt with
`prefix_chars > 0` is always tokenized in two pieces (prefix, rest), whether or not the cache is reused, so
reuse never changes a score.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections import OrderedDict
from dataclasses import dataclass

from llmst.backends.base import ScoreRequest, chat_text, device_kind, truncate_with_tokenizer
from llmst.backends.prefix_attention import NAME as PREFIX_ATTENTION
from llmst.backends.prefix_attention import register as register_prefix_attention
from llmst.backends.prefix_attention import supports_shared_prefix
from llmst.errors import BackendError
from llmst.models import resolve_model

MIN_PREFIX_TOKENS = 32  # below this, re-encoding the prefix is cheaper than copying its cache
# What one more forward call costs on a CPU, in tokens of computation (see `length_batches`): chosen on SST-2
# dev among 16-128 (SmolLM2, 2 AVX-512 cores: 16 labeled 13-19% more docs/s than fixed batches of 32). Off
# CPUs a batch's time barely grows with its padding, so there the fewest batches win.
CPU_BATCH_OVERHEAD_TOKENS = 16
GPU_BATCH_OVERHEAD_TOKENS = 1 << 30
# A CPU with bf16 dot-product instructions (AMX tiles or AVX512_BF16) multiplies bf16 matrices fast enough
# (SmolLM2's MLP shape, 2 vCPUs: AMX 2.6-3.1 TFLOP/s, a recent EPYC's AVX512_BF16 0.85-0.93) that a forward
# call's fixed cost is worth more tokens and bigger batches pay. Chosen on SST-2 dev (`eval/batching.py`,
# SmolLM2, bf16) among caps 32-256 and overheads 16-128: on 2 AMX vCPUs 256 rows / 64 tokens labeled 97.8
# docs/s against 69.8 at 32 / 16 (eager, +40%) and 130.2 against 88.0 (--compile, +48%); on 2 EPYC cores
# (AVX512_BF16, 0.97 TFLOP/s) 61.2 against 57.8 (eager, 4 rounds) and 77.7 against 67.0 (--compile, 3).
# Not measured at these sizes: the older EPYC of sessions 8-11 (AVX512_BF16 at 0.4 TFLOP/s).
BF16_CPU_BATCH_SIZE = 256
BF16_CPU_BATCH_OVERHEAD_TOKENS = 64
DEFAULT_BATCH_SIZE = 32
# On a CPU no batch holds more than this many tokens (rows x longest, one row always fits), so a cap of 256
# rows does not multiply the activations' memory on long documents.
CPU_MAX_BATCH_TOKENS = 16384


def length_batches(
    lengths: list[int], max_rows: int, overhead: int, min_rows: int = 1, max_tokens: int | None = None
) -> list[tuple[int, int]]:
    """Split requests sorted by length (ascending) into consecutive batches of `min_rows` to `max_rows`
    (fewer only when there are fewer requests) of at most `max_tokens` padded tokens (a lone row always
    fits), minimising the tokens computed (each batch padded to its longest) plus `overhead` per batch, by
    dynamic programming over the split points; (start, end) spans. Fixed batches of 32 padded the SST-2
    prompts' tokens by 20% (chunks of 128 requests); this, by 3%."""
    n, min_rows = len(lengths), min(min_rows, max_rows)
    if n <= min_rows and (max_tokens is None or n <= 1 or lengths[-1] * n <= max_tokens):
        return [(0, n)] if n else []
    best, cut = [0] + [float("inf")] * n, [0] * (n + 1)
    for end in range(min_rows, n + 1):
        rows_cap = max_rows if max_tokens is None else max(1, min(max_rows, max_tokens // lengths[end - 1]))
        for start in range(max(0, end - rows_cap), end - min_rows + 1):
            cost = best[start] + lengths[end - 1] * (end - start) + overhead
            if cost < best[end]:
                best[end], cut[end] = cost, start
    if best[n] == float("inf"):  # no split fits the bounds (odd n, max_rows 2; long rows): lone rows allowed
        return length_batches(lengths, max_rows, overhead, max_tokens=max_tokens)
    spans, end = [], n
    while end > 0:
        spans.append((cut[end], end))
        end = cut[end]
    return spans[::-1]


# oneDNN's primitive cache and ideep's computation cache keep one compiled kernel per matmul shape (1,024 each
# by default), and batches of up to 256 rows of any length make many shapes: on 2 AMX vCPUs, labeling 100k rows
# peaked 39% above 10k rows (`eval/label_memory.py`, tiny model); at 128 entries each +3.3% (64: +0.3%, 256:
# +12%). An evicted shape that comes back is built again (2.2 ms per kernel, ~5 kernels per batch shape, against
# ~2.5 s for a batch of 256 SmolLM2 rows); 64 entries were ~7% slower on SST-2 dev, whose 84 shapes repeat each
# round (`eval/batching.py`). Both are read at the process's first matmul.
CPU_KERNEL_CACHE_ENTRIES = 128


def bound_cpu_kernel_caches() -> None:
    """Cap the CPU matmul kernel caches (`CPU_KERNEL_CACHE_ENTRIES`) unless the user set them; effective only
    before the process's first matmul."""
    for variable in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        os.environ.setdefault(variable, str(CPU_KERNEL_CACHE_ENTRIES))


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc `malloc_trim`; elsewhere nothing). Batches of many
    shapes fragment the heap, and glibc keeps what they freed: on 2 AMX vCPUs, labeling 100k rows (batches of
    up to 256 rows) peaked at 1,347 MiB without this and 1,148 with it (`eval/label_memory.py`, tiny model);
    with the kernel caches capped (`bound_cpu_kernel_caches`), 712 and 673 MiB (10k rows: 662 and 648)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    import ctypes
    import ctypes.util

    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return None
    trim.argtypes = [ctypes.c_size_t]
    return trim


def cpu_has_bf16_matmul(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True on a CPU with bf16 dot-product instructions, AMX tiles or AVX512_BF16 (Linux reports them in
    /proc/cpuinfo; elsewhere assumed absent)."""
    try:
        with open(cpuinfo_path, encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[-1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def batching(device_kind: str, dtype: str) -> tuple[int, int, int | None]:
    """(default rows per batch, per-call overhead in tokens, token cap) for `length_batches` on a device."""
    if device_kind != "cpu":
        return DEFAULT_BATCH_SIZE, GPU_BATCH_OVERHEAD_TOKENS, None
    if dtype == "bfloat16" and cpu_has_bf16_matmul():
        return BF16_CPU_BATCH_SIZE, BF16_CPU_BATCH_OVERHEAD_TOKENS, CPU_MAX_BATCH_TOKENS
    return DEFAULT_BATCH_SIZE, CPU_BATCH_OVERHEAD_TOKENS, CPU_MAX_BATCH_TOKENS


def default_dtype(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    try:
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return "bfloat16"
    except (AttributeError, RuntimeError):
        pass
    return "float32"


@dataclass
class _Seq:
    request: int  # index into the batch of requests
    candidate: int  # -1: prompt only (single-token fast path)
    tokens: list[int]  # suffix tokens after the shared prefix
    score_from: int  # first position (in `tokens`) whose next-token log-prob is scored
    targets: list[int]  # tokens to score, predicted at positions score_from .. score_from+len-1


class HFBackend:
    """transformers causal LM scored in-process."""

    name = "hf"

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int | None = None,
        max_context: int | None = None,
        quiet: bool = False,
        compile: bool = False,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        resolved = resolve_model(model)
        self.model_id = model
        self.fingerprint = resolved.fingerprint
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device_kind = device_kind(self.device)
        self.dtype = default_dtype(self.device) if dtype == "auto" else dtype  # the dtype actually used
        rows, self._batch_overhead, self._batch_tokens = batching(self.device_kind, self.dtype)
        if self.device_kind == "cpu":
            bound_cpu_kernel_caches()
        self.batch_size = batch_size or rows  # None: the device's default (`batching`)
        self._word_tokens: dict[int, str] | None = None  # `word_tokens`, found on first use
        bars = hf_logging.is_progress_bar_enabled()
        if quiet:
            hf_logging.disable_progress_bar()  # transformers' "Loading weights" bar
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(resolved.path)
            self.model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=getattr(torch, self.dtype))
        except OSError as err:
            raise BackendError(
                f"could not load model '{model}': {str(err).splitlines()[0]}",
                hint="pass a local folder, a .gguf file, or a bundled name (llmst models list)",
            ) from err
        finally:
            if quiet and bars:
                hf_logging.enable_progress_bar()
        self.model.to(self.device).eval()
        commit = getattr(self.model.config, "_commit_hash", None)
        if not resolved.is_local and commit:  # the hub snapshot actually loaded (maybe just downloaded)
            self.fingerprint = f"hub:{model}@{commit}"
        config = self.model.config
        context = getattr(config, "max_position_embeddings", None) or 2048
        self.max_context = min(max_context or context, context)
        self._pad_id = self.tokenizer.pad_token_id
        if self._pad_id is None:
            self._pad_id = self.tokenizer.eos_token_id or 0
        self._softcap = getattr(config, "final_logit_softcapping", None)
        self._prefix_cache: OrderedDict[str, tuple[list[int], object]] = OrderedDict()
        self._decoder = self.model.get_decoder()
        # transformers >= 5.2x renamed `past_key_values` to `cache`
        parameters = inspect.signature(self._decoder.forward).parameters
        self._cache_kwarg = "cache" if "cache" in parameters else "past_key_values"
        self.scoring = None  # part of the answer cache key (`llmst.cache.score_key`)
        # a shared prefix is attended once per batch, not copied per request (`prefix_attention`)
        self._shared_prefix = (
            self.device_kind == "cpu"
            and config._attn_implementation == "sdpa"
            and supports_shared_prefix(config)
        )
        if self._shared_prefix:
            register_prefix_attention()
            self.model.set_attn_implementation(PREFIX_ATTENTION)
        if compile:  # fused kernels round differently: compiled answers are cached apart from eager ones
            # On a CPU, inductor's freezing folds the weights in as constants and prepacks them for oneDNN's
            # matmuls: on 2 EPYC cores (AVX512_BF16) +15% docs/s over plain compiling, no change on AMX
            # (eval/RESULTS.md, issue 12). The weights must not change afterwards: scoring is inference only.
            freezing = self.device_kind == "cpu"
            self._decoder = torch.compile(self._decoder, dynamic=True, options={"freezing": freezing})
            self.scoring = "torch.compile+freezing" if freezing else "torch.compile"

    @property
    def chunk_size(self) -> int:
        """Requests per `score` call: several batches, sorted by length within the call to limit padding."""
        return self.batch_size * 4

    # ----------------------------------------------------------------- tokens
    def _encode(self, text: str, *, first: bool) -> list[int]:
        return self.tokenizer(text, add_special_tokens=first)["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text, first=False))

    def truncate(self, text: str, max_tokens: int) -> str:
        return truncate_with_tokenizer(self.tokenizer, text, max_tokens)

    # ---------------------------------------------------------------- scoring
    def score(self, requests: list[ScoreRequest]) -> list[list[float]]:
        """Log-probability of each candidate continuation (sum over its tokens)."""
        results: list[list[float]] = [[0.0] * len(r.candidates) for r in requests]
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.prompt[: request.prefix_chars], []).append(index)
        for prefix, indices in groups.items():
            self._score_group(prefix, [requests[i] for i in indices], indices, results)
        release_freed_memory()
        return results

    def next_token_logprobs(self, prompts: list[str]) -> list:
        """Log-probability of every vocabulary token as the next token after each prompt: one float32
        array of the vocabulary's size per prompt, in prompt order (`llmst tune` searches label words in it)."""
        rows: list = [None] * len(prompts)
        requests = [ScoreRequest(prompt, ()) for prompt in prompts]
        self._score_group("", requests, list(range(len(prompts))), rows)
        release_freed_memory()
        return rows

    def word_tokens(self) -> dict[int, str]:
        """Vocabulary tokens that are one word after a space (' good': letters only, at least two), by id,
        keeping only those that encode back to exactly that token (so a verbalizer ' good' scores it).
        Computed once per backend (a pass over the whole vocabulary; tune asks once per prompt family)."""
        if self._word_tokens is None:
            self._word_tokens = self._find_word_tokens()
        return self._word_tokens

    def _find_word_tokens(self) -> dict[int, str]:
        import re

        word = re.compile(r"^ [^\W\d_]{2,}$")
        decoded = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
        found = {i: text for i, text in enumerate(decoded) if word.match(text)}
        encoded = self.tokenizer(list(found.values()), add_special_tokens=False)["input_ids"]
        return {i: text for (i, text), ids in zip(found.items(), encoded, strict=True) if ids == [i]}

    def _prefix_state(self, prefix: str):
        """Token ids and key/value cache of a shared prefix (memoised), or ([], None) when not worth it."""
        if not prefix:
            return [], None
        if prefix in self._prefix_cache:
            self._prefix_cache.move_to_end(prefix)
            return self._prefix_cache[prefix]
        import torch

        ids = self._encode(prefix, first=True)
        if len(ids) < MIN_PREFIX_TOKENS:
            state = (ids, None)
        else:
            with torch.inference_mode():
                out = self.model(torch.tensor([ids], device=self.device), use_cache=True)
            cache = getattr(out, "cache", None) or out.past_key_values
            layers = [(layer.keys, layer.values) for layer in cache.layers]
            state = (ids, layers)
        self._prefix_cache[prefix] = state
        if len(self._prefix_cache) > 4:
            self._prefix_cache.popitem(last=False)
        return state

    def _build_seqs(self, prefix: str, prefix_ids: list[int], reuse: bool, requests: list[ScoreRequest]):
        seqs: list[_Seq] = []
        for r_index, request in enumerate(requests):
            if prefix:
                head = [] if reuse else prefix_ids
                tokens = head + self._encode(request.prompt[len(prefix) :], first=False)
            else:
                tokens = self._encode(request.prompt, first=True)
            cand_ids = [self._encode(c, first=False) for c in request.candidates]
            if any(len(c) == 0 for c in cand_ids):
                raise BackendError(f"a candidate continuation encodes to no tokens: {request.candidates}")
            if all(len(c) == 1 for c in cand_ids):
                targets = [c[0] for c in cand_ids]
                seqs.append(_Seq(r_index, -1, tokens, len(tokens) - 1, targets))
            else:
                for c_index, cand in enumerate(cand_ids):
                    seqs.append(_Seq(r_index, c_index, tokens + cand[:-1], len(tokens) - 1, cand))
        return seqs

    def _score_group(self, prefix, requests, indices, results) -> None:
        import torch

        prefix_ids, prefix_kv = self._prefix_state(prefix)
        seqs = self._build_seqs(prefix, prefix_ids, prefix_kv is not None, requests)
        offset = len(prefix_ids) if prefix_kv is not None else 0
        too_long = [s for s in seqs if offset + len(s.tokens) > self.max_context]
        if too_long:
            raise BackendError(
                f"prompt of {offset + len(too_long[0].tokens)} tokens exceeds the context of {self.max_context}"
            )
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i].tokens))
        # a compiled decoder specialises on a batch of one row: a second compile, so avoid lone rows
        min_rows = 1 if self.scoring is None else 2
        lengths = [len(seqs[i].tokens) for i in order]
        spans = length_batches(lengths, self.batch_size, self._batch_overhead, min_rows, self._batch_tokens)
        for start, end in spans:
            batch = [seqs[i] for i in order[start:end]]
            with torch.inference_mode():
                scores = self._forward_batch(batch, prefix_kv, offset)
            for seq, value in zip(batch, scores, strict=True):
                request_index = indices[seq.request]
                if seq.candidate < 0:
                    results[request_index] = value
                else:
                    results[request_index][seq.candidate] = value[0]

    def _forward_batch(self, batch: list[_Seq], prefix_kv, offset: int) -> list[list[float]]:
        import torch

        length = max(len(s.tokens) for s in batch)
        shared = prefix_kv is not None and self._shared_prefix
        visible = 0 if shared else offset  # the prefix columns of the mask (none: the prefix is shared)
        ids = torch.full((len(batch), length), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), visible + length), dtype=torch.long)
        mask[:, :visible] = 1
        for row, seq in enumerate(batch):
            ids[row, : len(seq.tokens)] = torch.tensor(seq.tokens)
            mask[row, visible : visible + len(seq.tokens)] = 1
        kwargs = {}
        if prefix_kv is not None:
            if shared:
                kwargs["shared_prefix"] = prefix_kv
            else:
                kwargs[self._cache_kwarg] = self._expand_prefix(prefix_kv, len(batch))
            kwargs["position_ids"] = (torch.arange(length) + offset).unsqueeze(0).expand(len(batch), -1)
            kwargs["position_ids"] = kwargs["position_ids"].to(self.device)
        hidden = self._decoder(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False, **kwargs
        ).last_hidden_state
        # gather only the positions that predict a scored token
        rows, cols, owners = [], [], []
        for row, seq in enumerate(batch):
            if seq.candidate < 0:
                rows.append(row)
                cols.append(seq.score_from)
                owners.append(row)
            else:
                for j in range(len(seq.targets)):
                    rows.append(row)
                    cols.append(seq.score_from + j)
                    owners.append(row)
        picked = hidden[torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device)]
        logits = self.model.get_output_embeddings()(picked).float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        logprobs = torch.log_softmax(logits, dim=-1).cpu()
        out: list[list[float]] = []
        position = 0
        for seq in batch:
            if seq.candidate < 0:  # no targets: the whole distribution (`next_token_logprobs`)
                row = logprobs[position]
                out.append(row[seq.targets].tolist() if seq.targets else row.numpy())
                position += 1
            else:
                n = len(seq.targets)
                picks = logprobs[position : position + n].gather(1, torch.tensor(seq.targets).unsqueeze(1))
                out.append([float(picks.sum())])
                position += n
        return out

    def _expand_prefix(self, prefix_kv, batch_size: int):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for layer_index, (keys, values) in enumerate(prefix_kv):
            cache.update(
                keys.expand(batch_size, -1, -1, -1).contiguous(),
                values.expand(batch_size, -1, -1, -1).contiguous(),
                layer_index,
            )
        return cache

    # ------------------------------------------------------------- generation
    def generate(
        self,
        prompts: list[str],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 64,
        stop: list[str] | None = None,
        chat: bool = False,
    ) -> list[list[str]]:
        import torch

        if chat:  # the template's own special tokens; the tokenizer adds none
            prompts = [chat_text(self.tokenizer, p, self.model_id) for p in prompts]
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = self._pad_id
        # batches of similar length (less padding); results go back to the caller's order
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        by_position: dict[int, list[str]] = {}
        for start in range(0, len(order), self.batch_size):
            positions = order[start : start + self.batch_size]
            chunk = [prompts[i] for i in positions]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=not chat)
            enc = enc.to(self.device)
            sample = temperature > 0
            returned = n if sample else 1  # greedy samples are identical: decode once, repeat
            with torch.inference_mode():
                generated = self.model.generate(
                    **enc,
                    max_new_tokens=max_tokens,
                    do_sample=sample,
                    temperature=temperature if sample else None,
                    top_p=None,
                    top_k=None,
                    num_return_sequences=returned,
                    pad_token_id=self._pad_id,
                    **({"stop_strings": list(stop), "tokenizer": self.tokenizer} if stop else {}),
                )
            new_tokens = generated[:, enc["input_ids"].shape[1] :]
            texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for i, position in enumerate(positions):
                group = texts[i * returned : (i + 1) * returned]
                by_position[position] = group if sample else group * n
        return [by_position[i] for i in range(len(prompts))]

    def close(self) -> None:
        self._prefix_cache.clear()
