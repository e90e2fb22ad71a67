"""Plain `model.generate` (transformers) for machines without vLLM, and as a cross-check of it."""

from __future__ import annotations

import gc
from typing import Sequence

from distill.core.schema import content_id
from distill.engines.base import Completion, Request, Result, SamplingParams, has_cuda, render_prompts


class TransformersEngine:
    """Plain `model.generate` for machines without vLLM (and as a cross-check of it)."""

    name = "transformers"

    def __init__(self, model: str, seed: int = 0, chat_template: str | None = None, batch_size: int = 16, dtype: str = "auto"):
        # heavy: loaded only when this engine is built
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        torch_dtype = torch.float32 if dtype == "auto" and not has_cuda() else dtype
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype)
        self.model.eval()
        if has_cuda():
            self.model.to("cuda")
        self.seed = seed
        self.chat_template = chat_template
        self.batch_size = batch_size
        import transformers  # heavy: its version, for the manifest

        self.version = transformers.__version__

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def generate(self, requests: Sequence[Request], params: SamplingParams) -> list[Result]:
        import torch  # heavy: loaded only when this engine is built

        ids = render_prompts(self.tokenizer, requests, self.chat_template)
        eos = self._eos_ids()
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(eos)
        results: list[Result] = []
        for start in range(0, len(ids), self.batch_size):
            batch = ids[start : start + self.batch_size]
            batch_reqs = requests[start : start + self.batch_size]
            width = max(len(x) for x in batch)
            input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch])  # left padding
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch])
            # Seeded by what is asked, not by position: a shard regenerated after a crash gets the same
            # samples, and extra samples for a prompt (first_index > 0) are new draws, not repeats.
            torch.manual_seed(int(content_id(self.seed, [(r.request_id, r.first_index) for r in batch_reqs]), 16) % 2**63)
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
