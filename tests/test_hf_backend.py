"""The hf backend's scores equal a brute-force forward pass, whatever the batching, padding or prefix reuse."""

from __future__ import annotations

import os

import pytest
import torch

import llmst.backends.hf as hf_module
from llmst.backends.base import ScoreRequest
from llmst.backends.hf import HFBackend

CANDIDATES = (" positive", " negative", " not bad at all")  # the last one is several tokens


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return HFBackend(tiny_model_dir, dtype="float32", batch_size=3)


def brute_force(backend: HFBackend, prefix: str, rest: str, candidate: str) -> float:
    tok = backend.tokenizer
    context = (
        tok(prefix)["input_ids"] + tok(rest, add_special_tokens=False)["input_ids"]
        if prefix
        else tok(rest)["input_ids"]
    )
    cand = tok(candidate, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = backend.model(torch.tensor([context + cand])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(logprobs[len(context) - 1 + j, t].item() for j, t in enumerate(cand))


def test_scores_match_brute_force_with_padding(backend):
    prompts = [
        "short",
        "a much longer prompt with many more words than the first one, to force padding",
        "mid size",
    ]
    requests = [ScoreRequest(p, CANDIDATES) for p in prompts]
    scores = backend.score(requests)
    for prompt, row in zip(prompts, scores, strict=True):
        for candidate, value in zip(CANDIDATES, row, strict=True):
            assert value == pytest.approx(brute_force(backend, "", prompt, candidate), abs=1e-4)


@pytest.mark.parametrize("overhead", [0, 64, 1 << 30])
def test_length_batches_cover_every_request_once_and_pad_least(overhead):
    import random

    rng = random.Random(overhead)
    lengths = sorted(rng.randint(5, 120) for _ in range(100))
    spans = hf_module.length_batches(lengths, 32, overhead)
    assert [s for s, _ in spans] == [0] + [e for _, e in spans[:-1]] and spans[-1][1] == len(lengths)
    assert all(0 < end - start <= 32 for start, end in spans)

    def cost(parts):
        return sum(lengths[end - 1] * (end - start) + overhead for start, end in parts)

    fixed = [(s, min(s + 32, len(lengths))) for s in range(0, len(lengths), 32)]
    assert cost(spans) <= cost(fixed)
    if overhead == 0:  # batches of equal lengths only: nothing padded
        assert all(lengths[start] == lengths[end - 1] for start, end in spans)
    if overhead == 1 << 30:  # the fewest batches
        assert len(spans) == len(fixed)
    pairs = hf_module.length_batches(lengths, 32, overhead, min_rows=2)
    assert all(2 <= end - start <= 32 for start, end in pairs) and pairs[-1][1] == len(lengths)
    assert hf_module.length_batches([7], 32, overhead, min_rows=2) == [(0, 1)]
    assert max(e - s for s, e in hf_module.length_batches([5, 6, 7], 2, overhead, min_rows=2)) <= 2
    assert hf_module.length_batches([5, 6], 1, overhead, min_rows=2) == [(0, 1), (1, 2)]  # max_rows wins
    assert hf_module.length_batches([], 32, overhead) == []


@pytest.mark.parametrize("max_tokens", [40, 200, 1000])
def test_length_batches_keep_to_the_token_cap(max_tokens):
    import random

    rng = random.Random(max_tokens)
    lengths = sorted([rng.randint(5, 120) for _ in range(100)] + [300])  # 300: over the cap of 40 and 200
    for min_rows in (1, 2):
        spans = hf_module.length_batches(lengths, 256, 64, min_rows, max_tokens)
        assert [s for s, _ in spans] == [0] + [e for _, e in spans[:-1]] and spans[-1][1] == len(lengths)
        for start, end in spans:
            assert end - start == 1 or lengths[end - 1] * (end - start) <= max_tokens
        assert spans[-1] == (100, 101) or max_tokens == 1000  # the longest row alone when it is over the cap
    uncapped = hf_module.length_batches(lengths, 256, 64)
    assert len(uncapped) < len(hf_module.length_batches(lengths, 256, 64, max_tokens=max_tokens))
    assert hf_module.length_batches([90, 90], 32, 16, min_rows=2, max_tokens=100) == [(0, 1), (1, 2)]


def test_batching_defaults_follow_the_device(tmp_path, monkeypatch):
    amx, avx512, plain = tmp_path / "amx", tmp_path / "avx512", tmp_path / "plain"
    amx.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n")
    avx512.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\nbugs\t\t: spectre\n")
    plain.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx2 avx512_vnni\n")
    assert hf_module.cpu_has_bf16_matmul(str(amx)) and hf_module.cpu_has_bf16_matmul(str(avx512))
    assert not hf_module.cpu_has_bf16_matmul(str(plain))
    assert not hf_module.cpu_has_bf16_matmul(str(tmp_path / "missing"))
    monkeypatch.setattr(hf_module, "cpu_has_bf16_matmul", lambda: True)
    assert hf_module.batching("cpu", "bfloat16") == (256, 64, hf_module.CPU_MAX_BATCH_TOKENS)
    assert hf_module.batching("cpu", "float32") == (32, 16, hf_module.CPU_MAX_BATCH_TOKENS)  # bf16 only
    assert hf_module.batching("cuda", "bfloat16") == (32, 1 << 30, None)
    monkeypatch.setattr(hf_module, "cpu_has_bf16_matmul", lambda: False)
    assert hf_module.batching("cpu", "bfloat16") == (32, 16, hf_module.CPU_MAX_BATCH_TOKENS)


def test_batch_size_defaults_to_the_device_and_an_explicit_one_wins(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(hf_module, "batching", lambda kind, dtype: (7, 16, None))
    assert HFBackend(tiny_model_dir, dtype="float32").batch_size == 7
    explicit = HFBackend(tiny_model_dir, dtype="float32", batch_size=3)
    assert (explicit.batch_size, explicit.chunk_size) == (3, 12)


def test_a_cpu_backend_caps_the_kernel_caches_unless_the_user_did(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "unset")  # restored after the test
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY")
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "8")
    HFBackend(tiny_model_dir, dtype="float32")
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(hf_module.CPU_KERNEL_CACHE_ENTRIES)
    assert os.environ["LRU_CACHE_CAPACITY"] == "8"


def test_uneven_batches_score_like_brute_force(tiny_model_dir, monkeypatch):
    """Many lengths, a small split overhead: batches of several sizes, each request scored as alone."""
    monkeypatch.setattr(hf_module, "CPU_BATCH_OVERHEAD_TOKENS", 2)
    built = HFBackend(tiny_model_dir, dtype="float32", batch_size=4)
    prompts = [" ".join(["word"] * n) for n in (1, 2, 2, 3, 9, 10, 10, 30)]
    batches = []
    forward = built._forward_batch
    monkeypatch.setattr(built, "_forward_batch", lambda b, *a: batches.append(len(b)) or forward(b, *a))
    rows = built.score([ScoreRequest(p, (" yes", " no")) for p in prompts])
    assert sorted(set(batches)) != [4] and sum(batches) == len(prompts)
    for prompt, row in zip(prompts, rows, strict=True):
        assert row == pytest.approx([brute_force(built, "", prompt, c) for c in (" yes", " no")], abs=1e-4)


def test_single_token_fast_path_matches_brute_force(backend):
    requests = [ScoreRequest(p, (" yes", " no")) for p in ["one", "two three four five", "six seven"]]
    for request, row in zip(requests, backend.score(requests), strict=True):
        assert row == pytest.approx(
            [brute_force(backend, "", request.prompt, c) for c in (" yes", " no")], abs=1e-4
        )
    assert all(v < 0 for row in backend.score(requests) for v in row)


def test_next_token_distribution_matches_scores_and_words_are_single_tokens(backend):
    prompts = ["one", "two three four five", "six seven"]  # batch_size 3: one padded batch
    rows = backend.next_token_logprobs(prompts)
    words = backend.word_tokens()
    assert backend.word_tokens() is words  # one pass over the vocabulary per backend
    assert len(rows) == 3 and all(row.shape == (len(backend.tokenizer),) for row in rows)
    ids = [i for i, text in words.items() if text in (" yes", " no")]
    assert sorted(words[i] for i in ids) == [" no", " yes"]
    for prompt, row in zip(prompts, rows, strict=True):
        assert float(torch.logsumexp(torch.from_numpy(row), 0)) == pytest.approx(0.0, abs=1e-4)
        for i in ids:
            assert row[i] == pytest.approx(brute_force(backend, "", prompt, words[i]), abs=1e-4)
    # words: a space, then letters only, and each encodes back to exactly its own token
    assert len(words) > 1000 and all(t[0] == " " and t[1:].isalpha() and len(t) >= 3 for t in words.values())
    sample = list(words.items())[::997]
    assert all(backend.tokenizer(t, add_special_tokens=False)["input_ids"] == [i] for i, t in sample)


def test_prefix_reuse_equals_no_reuse(backend, monkeypatch):
    prefix = "Example: a film worth seeing twice. Answer: positive\n\n" * 6
    queries = ["Example: dull. Answer:", "Example: a joyous, moving and funny ride for all ages. Answer:"]
    requests = [ScoreRequest(prefix + q, CANDIDATES, len(prefix)) for q in queries]
    assert backend._shared_prefix, "a CPU Llama attends to the prefix without copying it per request"
    reused = backend.score(requests)
    assert backend._prefix_cache[prefix][1] is not None, "the prefix should have been cached"
    monkeypatch.setattr(backend, "_shared_prefix", False)  # the cache expanded to the batch (GPU path)
    expanded = backend.score(requests)
    backend._prefix_cache.clear()
    monkeypatch.setattr(hf_module, "MIN_PREFIX_TOKENS", 10**9)  # disable reuse
    fresh = backend.score(requests)
    for a, b, c in zip(reused, expanded, fresh, strict=True):
        assert a == pytest.approx(c, abs=1e-4) and b == pytest.approx(c, abs=1e-4)
    for query, row in zip(queries, fresh, strict=True):
        assert row[2] == pytest.approx(brute_force(backend, prefix, query, CANDIDATES[2]), abs=1e-4)


def test_shared_prefix_attention_only_for_plain_causal_attention():
    """Sliding windows (Mistral, Gemma-3's local layers) and soft-capped attention (Gemma-2) keep the expanded
    cache: the shared-prefix kernel attends to every prefix token with a plain softmax."""
    from transformers import Gemma2Config, Gemma3TextConfig, LlamaConfig, MistralConfig, Qwen2Config

    from llmst.backends.prefix_attention import supports_shared_prefix

    assert supports_shared_prefix(LlamaConfig()) and supports_shared_prefix(Qwen2Config())
    assert not supports_shared_prefix(MistralConfig(sliding_window=4096))
    assert not supports_shared_prefix(Gemma3TextConfig())
    assert not supports_shared_prefix(Gemma2Config(sliding_window=None))


def test_truncate_and_count(backend):
    text = "word " * 300
    cut = backend.truncate(text, 50)
    assert backend.count_tokens(cut) <= 50
    assert text.startswith(cut)
    assert backend.truncate("short text", 50) == "short text"


def test_too_long_prompt_is_a_clear_error(backend):
    from llmst.errors import BackendError

    with pytest.raises(BackendError, match="exceeds the context"):
        backend.score([ScoreRequest("word " * 1000, (" a", " b"))])


def test_generate_returns_n_samples(backend):
    outputs = backend.generate(["Hello", "Once upon a time"], n=2, temperature=0.8, max_tokens=5)
    assert len(outputs) == 2 and all(len(o) == 2 for o in outputs)
    greedy = backend.generate(["Hello"], max_tokens=5)
    assert greedy == backend.generate(["Hello"], max_tokens=5)
    repeated = backend.generate(["Hello"], n=3, max_tokens=5)  # greedy with n > 1: the same text n times
    assert repeated == [greedy[0] * 3]


def test_generate_keeps_the_callers_order_and_stops_at_a_stop_string(backend):
    prompts = ["Once upon a time in a land far away there was", "Hi", "The weather today is"]
    alone = [backend.generate([p], max_tokens=8)[0][0] for p in prompts]
    assert [o[0] for o in backend.generate(prompts, max_tokens=8)] == alone  # batched by length, same order
    full = alone[0]
    # a stop string in the first half of the text, so that several tokens would follow it
    stop = next((full[i : i + 2] for i in range(1, len(full) // 2) if full[i : i + 2].strip()), None)
    assert stop, f"no usable stop string in {full!r}"
    cut = backend.generate([prompts[0]], max_tokens=8, stop=[stop])[0][0]
    assert stop in cut and full.startswith(cut) and len(cut) < len(full)
    assert cut.find(stop) == full.find(stop)  # generation ended at the first occurrence


def test_chat_generation_replies_to_the_prompt_as_a_user_message(backend, monkeypatch):
    """`chat=True` generates what the model generates after its own chat template applied to one user message
    (the template's special tokens once: none added on top), and is refused without a template."""
    from llmst.errors import BackendError

    tok = backend.tokenizer
    messages = [{"role": "user", "content": "Is the sky blue?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        out = backend.model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=backend._pad_id)
    expected = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert backend.generate(["Is the sky blue?"], max_tokens=6, chat=True) == [[expected]]
    monkeypatch.setattr(tok, "chat_template", None)
    with pytest.raises(BackendError, match="has no chat template"):
        backend.generate(["Is the sky blue?"], max_tokens=6, chat=True)


def test_bad_model_path_is_a_config_error():
    from llmst.errors import ConfigError

    with pytest.raises(ConfigError, match="not found"):
        HFBackend("./no/such/model")


def test_backend_reports_the_dtype_and_device_it_computes_in(tiny_model_dir, backend):
    from llmst.backends import make_backend
    from llmst.backends.base import BackendSpec

    assert backend.dtype == "float32" and next(backend.model.parameters()).dtype == torch.float32
    assert backend.device_kind == "cpu"
    built = make_backend(BackendSpec(model=tiny_model_dir, dtype="bfloat16", batch_size=2))
    assert built.dtype == "bfloat16" and next(built.model.parameters()).dtype == torch.bfloat16
    assert built.batch_size == 2 and built.fingerprint == backend.fingerprint  # same weights
    auto = HFBackend(tiny_model_dir)  # "auto" resolves to what this machine computes in
    assert auto.dtype == hf_module.default_dtype(auto.device) != "auto"
    assert auto.device_kind == ("cuda" if torch.cuda.is_available() else "cpu")


def test_model_fingerprint_is_cheap_and_matches_the_loaded_model(smollm2_dir):
    from llmst.models import model_fingerprint, resolve_model

    fingerprint = model_fingerprint("smollm2-135m-instruct")  # never converts: the GGUF's content
    assert (
        fingerprint.startswith("gguf:") and fingerprint == resolve_model("smollm2-135m-instruct").fingerprint
    )
    assert model_fingerprint(smollm2_dir) != fingerprint  # the converted folder fingerprints by its content


def test_a_compiled_decoder_scores_like_eager_and_is_cached_apart(tiny_model_dir, backend, tmp_path):
    """`--compile`: torch.compile of the decoder (dynamic shapes) gives the eager scores (float32, 1e-4) for
    prompts of several lengths and a shared prefix; its answers have their own cache keys and signature."""
    from llmst.cache import score_key
    from llmst.errors import ConfigError
    from llmst.label.config import LabelConfig
    from llmst.label.run import label_signature

    compiled = HFBackend(tiny_model_dir, dtype="float32", batch_size=3, compile=True)
    prefix = "Example: a film worth seeing twice. Answer: positive\n\n" * 6
    requests = [ScoreRequest(p, CANDIDATES) for p in ("short", "a longer prompt, to pad the batch", "mid")]
    requests += [ScoreRequest(prefix + "Example: dull. Answer:", CANDIDATES, len(prefix))]
    assert compiled.score(requests) == [pytest.approx(row, abs=1e-4) for row in backend.score(requests)]
    assert compiled.scoring == "torch.compile+freezing" and backend.scoring is None  # a CPU: frozen weights
    assert score_key(compiled, "p", 0, CANDIDATES) != score_key(backend, "p", 0, CANDIDATES)
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "x"}\n')
    config = LabelConfig(task="sentiment", model=tiny_model_dir)
    assert label_signature(source, config) != label_signature(
        source, LabelConfig(**{**config.__dict__, "compile": True})
    )
    with pytest.raises(ConfigError, match="--compile is an option of --backend hf"):
        LabelConfig(task="sentiment", backend="vllm", compile=True)
