"""The engines' shared interface: requests and results, the `Engine` protocol, prompt rendering.

Prompts are rendered to token ids once, here, with the model's chat template (or the recipe's), so every
engine sees exactly the same prompt (the HTTP engine's `chat` endpoint excepted: the server renders).

Besides `generate`, an engine may offer `stream(batches, params)`, yielding `(batch index, results)` as
whole batches finish while it keeps working on the next ones: vLLM and the HTTP engine then never drain
between shards. `stream_batches` falls back to one `generate` call per batch for engines without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Protocol, Sequence

from distill.core.schema import content_id


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int = 0

    @classmethod
    def from_section(cls, section, **override) -> "SamplingParams":
        """The sampling settings of a recipe section (sampling, eval, merge.generator, ...): its `n`,
        `temperature`, `top_p`, `max_tokens` and `seed` where it has them, the defaults above where it
        does not, then `override` (a section whose count is named otherwise, e.g. eval's `k`)."""
        values = {f: getattr(section, f) for f in ("n", "temperature", "top_p", "max_tokens", "seed") if hasattr(section, f)}
        return cls(**values | override)

    def as_dict(self) -> dict:
        return {"n": self.n, "temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens, "seed": self.seed}


@dataclass(frozen=True)
class Request:
    request_id: str
    messages: list[dict]
    # Sample index of this request's first completion: extra samples for a prompt (adaptive sampling) start
    # after the ones it has, and engines that seed per request must not redraw the first ones.
    first_index: int = 0


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


class EngineError(RuntimeError):
    """A generation request that failed for good (after retries, or with an error retrying cannot fix)."""


def stream_batches(engine: Engine, batches: Iterable[Sequence[Request]], params: SamplingParams) -> Iterator[tuple[int, list[Result]]]:
    """`(batch index, results)` for every batch, in completion order (any order for streaming engines)."""
    stream = getattr(engine, "stream", None)
    if stream is not None:
        yield from stream(batches, params)
        return
    for b, requests in enumerate(batches):
        yield b, engine.generate(requests, params)


def render_prompts(tokenizer, requests: Sequence[Request], chat_template: str | None = None) -> list[list[int]]:
    """Token ids of each request's chat, ending with the assistant generation prompt."""
    out = []
    for r in requests:
        text = tokenizer.apply_chat_template(
            r.messages, tokenize=False, add_generation_prompt=True, chat_template=chat_template
        )
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def request_seed(seed: int, request: Request) -> int:
    """A per-request seed from the run's seed, the request and its first sample index (31 bits)."""
    return int(content_id(seed, request.request_id, request.first_index), 16) % (2**31 - 1)



def has_cuda() -> bool:
    """Whether torch sees a CUDA device (the offline engines run on CPU otherwise)."""
    import torch  # heavy: only the offline engines and their callers need it

    return torch.cuda.is_available()
