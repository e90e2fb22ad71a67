"""Generation engines behind one small interface: `generate(requests, params) -> results`.

- `base`: requests, results, `SamplingParams`, the `Engine` protocol, prompt rendering;
- `vllm`: vLLM offline, in-process (tensor/pipeline parallel from the recipe);
- `openai`: any OpenAI-compatible server (`vllm serve`, SGLang, a hosted API) over HTTP, with bounded
  concurrency, retries with exponential backoff, and request/token rate limits;
- `transformers`: plain `model.generate`, for machines without vLLM;
- `factory`: `engine_for(section, model)` / `engine_factory(...)`, one recipe field (`engine`) choosing,
  and the accelerators a section's engines hold.

Sharding, resume and accounting live above this, in `distill.generation.sample`, not in each engine.
Import from the submodules; this file re-exports nothing.
"""
