"""The engines' shared interface: requests and results, the `Engine` protocol, prompt rendering.

Prompts are rendered to token ids once, here, with the model's chat template (or the recipe's), so every
engine sees exactly the same prompt (the HTTP engine's `chat` endpoint excepted: the server renders).

Besides `generate`, an engine may offer `stream(batches, params)`, yielding `(batch index, results)` as
whole batches finish while it keeps working on the next ones: vLLM and the HTTP engine then never drain
between shards. `stream_batches` falls back to one `generate` call per batch for engines without it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Protocol, Sequence

from distill.core.schema import content_id

log = logging.getLogger(__name__)


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


class CudaRequired(ValueError):
    """A recipe asks for GPUs (or a GPU-only kernel) that this machine cannot give (the CLI prints it, exit 2)."""


ALLOW_CPU_ENV = "DISTILL_ALLOW_CPU"  # "1": run a GPU recipe on CPU anyway, said out loud (a rehearsal)
# attn_implementation -> the distribution transformers looks for (it fails at model load, after sampling, without
# it); FA2 and FA4 share the `flash_attn` import name, so the distribution is what tells them apart
ATTENTION_PACKAGES = {"flash_attention_2": "flash-attn", "flash_attention_3": "flash-attn-3", "flash_attention_4": "flash-attn-4"}


def _training_sections(recipe) -> list[tuple[str, Any]]:
    """(field path, section) of every training run: the teacher's cold start and GRPO, each student."""
    out = []
    if recipe.teacher.enabled:
        out += [("teacher.cold_start", recipe.teacher.cold_start), ("teacher.grpo", recipe.teacher.grpo)]
    return out + [(f"students.{i}", s) for i, s in enumerate(recipe.students)]


def cuda_requests(recipe) -> list[str]:
    """The recipe's fields that ask for CUDA, as `field = value`: a stated training `hardware` (a GPU kind and
    count; `launch: always` asks for CPU processes instead), QLoRA (bitsandbytes, CUDA only), and a vLLM engine
    over several devices (sampling, eval)."""
    found = []
    hardware = [("teacher", recipe.teacher.hardware if recipe.teacher.enabled else None)]
    hardware += [(f"students.{i}", s.hardware if "hardware" in s.model_fields_set else None) for i, s in enumerate(recipe.students)]
    for where, hw in hardware:
        if hw is not None and hw.launch != "always":
            found.append(f"{where}.hardware.gpus = {hw.gpus} ({hw.gpu})")
    for where, section in _training_sections(recipe):
        lora = getattr(section, "lora", None)
        if lora is not None and lora.load_in_4bit:
            found.append(f"{where}.lora.load_in_4bit = true (QLoRA)")
    for where in ("sampling", "eval"):
        section = getattr(recipe, where)
        v = section.vllm
        devices = v.tensor_parallel_size * v.pipeline_parallel_size * v.data_parallel_size
        if section.engine == "vllm" and devices > 1 and getattr(section, "enabled", True):
            found.append(f"{where}.vllm: tensor {v.tensor_parallel_size} x pipeline {v.pipeline_parallel_size} "
                         f"x data parallel {v.data_parallel_size} = {devices} GPUs")
    return found


def missing_attention(recipe) -> list[str]:
    """`training_args.model_init_kwargs.attn_implementation` settings whose kernels are not installed."""
    out = []
    for where, section in _training_sections(recipe):
        attn = ((section.training_args or {}).get("model_init_kwargs") or {}).get("attn_implementation")
        package = ATTENTION_PACKAGES.get(attn)
        if package is None:
            continue
        try:
            importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{where}.training_args.model_init_kwargs.attn_implementation = {attn} (`{package}` is not installed)")
    return out


def require_cuda(recipe, environ: dict | None = None) -> None:
    """Fail at once, naming the fields, when a recipe asks for GPUs and CUDA is not usable, or asks for an
    attention kernel that is not installed: never a silent fp32 CPU run, never a failure after sampling.
    `DISTILL_ALLOW_CPU=1` runs a GPU recipe on CPU anyway (a rehearsal)."""
    environ = os.environ if environ is None else environ
    asks = cuda_requests(recipe)
    if asks and not has_cuda():
        if environ.get(ALLOW_CPU_ENV) == "1":
            log.warning("%s=1: running a GPU recipe on CPU (%s)", ALLOW_CPU_ENV, "; ".join(asks))
            return
        raise CudaRequired(f"recipe {recipe.name!r} asks for GPUs but CUDA is not usable here (torch sees no CUDA "
                           f"device): {'; '.join(asks)}. Run it on a GPU machine set up with `make setup-gpu`, or "
                           f"set {ALLOW_CPU_ENV}=1 to run it on CPU anyway.")
    missing = missing_attention(recipe)  # checked first: has_cuda imports torch (seconds), a CPU recipe needs none
    if missing and has_cuda():
        raise CudaRequired(f"recipe {recipe.name!r}: {'; '.join(missing)}. flash_attention_4 comes with the GPU lock "
                           "(Hopper/Blackwell); flash_attention_2 needs `FLASH_ATTN2=1 make setup-gpu` (a CUDA build); "
                           "sdpa needs nothing.")
