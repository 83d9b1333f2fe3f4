"""In-process vLLM backend (`vllm.LLM`) for GPU users. Optional: `pip install "llmst[vllm]"`.

Scoring feeds prompt + candidate token ids and reads `prompt_logprobs` of the candidate positions, so
multi-token verbalizers are exact; vLLM's prefix caching shares the prompt across a request's candidates.
"""

from __future__ import annotations

import importlib.util

from llmst.backends.base import ScoreRequest, chat_text, truncate_with_tokenizer
from llmst.errors import ConfigError
from llmst.models import resolve_model


def is_vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _device_kind() -> str:
    """The kind of device vLLM runs on ("cuda", "cpu", ...): see `llmst.backends.base.device_kind`."""
    try:
        from vllm.platforms import current_platform

        return str(getattr(current_platform, "device_type", "") or "cuda")
    except Exception:  # an older vLLM without `platforms`: GPU only
        return "cuda"


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str, *, dtype: str = "auto", max_context: int | None = None, **engine_kwargs):
        if not is_vllm_available():
            raise ConfigError(
                "the vllm backend needs vLLM installed",
                hint='pip install "llmst[vllm]" (GPU), or serve the model and use --backend openai',
            )
        from vllm import LLM

        resolved = resolve_model(model)
        self.model_id = model
        self.fingerprint = resolved.fingerprint
        self.llm = LLM(
            model=resolved.path,
            dtype=dtype,
            max_model_len=max_context,
            enable_prefix_caching=True,
            **engine_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        model_config = self.llm.llm_engine.model_config
        self.max_context = model_config.max_model_len
        self.dtype = str(model_config.dtype).removeprefix("torch.")  # the dtype actually used
        self.device_kind = _device_kind()
        self.chunk_size = 1024  # vLLM schedules its own batches

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> str:
        return truncate_with_tokenizer(self.tokenizer, text, max_tokens)

    def score(self, requests: list[ScoreRequest]) -> list[list[float]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts, spans = [], []
        for request in requests:
            context = self.tokenizer(request.prompt)["input_ids"]
            for candidate in request.candidates:
                cand = self.tokenizer(candidate, add_special_tokens=False)["input_ids"]
                prompts.append(TokensPrompt(prompt_token_ids=context + cand))
                spans.append((len(context), cand))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        flat = []
        for output, (start, cand) in zip(outputs, spans, strict=True):
            logprobs = output.prompt_logprobs
            flat.append(sum(logprobs[start + j][token].logprob for j, token in enumerate(cand)))
        results, position = [], 0
        for request in requests:
            results.append(flat[position : position + len(request.candidates)])
            position += len(request.candidates)
        return results

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
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(
            n=n, temperature=temperature, max_tokens=max_tokens, stop=list(stop or []) or None
        )
        if chat:  # token ids, so vLLM adds no second set of special tokens to the template's
            texts = [chat_text(self.tokenizer, p, self.model_id) for p in prompts]
            ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
            prompts = [TokensPrompt(prompt_token_ids=i) for i in ids]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [[choice.text for choice in output.outputs] for output in outputs]

    def close(self) -> None:
        del self.llm
