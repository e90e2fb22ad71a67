"""Choosing an engine from a recipe section, and the accelerators it holds.

A section is any recipe section with `engine` and `vllm` (optionally `openai`, `seed`, `chat_template`):
`sampling`, `eval`, `verify.judge`, `merge.generator`, `teacher.cold_start.fewshot`. One field, `engine`,
picks the backend; its own sub-section configures it.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from distill.engines.base import Engine
from distill.engines.openai import OpenAIEngine
from distill.engines.transformers import TransformersEngine
from distill.engines.vllm import VLLMEngine

ENGINES = ("vllm", "openai", "transformers")


def make_engine(kind: str, model: str, *, seed: int = 0, chat_template: str | None = None, vllm_settings=None, openai_settings=None) -> Engine:
    """An engine by name, with its settings given one by one (`engine_for` reads them from a section)."""
    if kind == "vllm":
        return VLLMEngine(model, vllm_settings, seed=seed, chat_template=chat_template)
    if kind == "openai":
        return OpenAIEngine(model, openai_settings, seed=seed, chat_template=chat_template)
    if kind == "transformers":
        return TransformersEngine(model, seed=seed, chat_template=chat_template)
    raise ValueError(f"unknown engine {kind!r} (known: {', '.join(ENGINES)})")


def engine_for(section, model: str | None, *, seed: int | None = None, chat_template: str | None = None) -> Engine:
    """The engine `section.engine` names, for `model`, configured by the section. `seed` and
    `chat_template` default to the section's own (`seed` 0 and the model's template where it has none)."""
    return make_engine(
        section.engine, model,
        seed=seed if seed is not None else getattr(section, "seed", 0),
        chat_template=chat_template if chat_template is not None else getattr(section, "chat_template", None),
        vllm_settings=section.vllm, openai_settings=getattr(section, "openai", None),
    )


def engine_factory(section, model: str | None, *, seed: int | None = None, chat_template: str | None = None) -> Callable[[], Engine]:
    """`engine_for` deferred: a picklable callable (data-parallel workers build their own engine from it)."""
    return partial(engine_for, section, model, seed=seed, chat_template=chat_template)


def devices_per_engine(vllm_settings) -> int:
    """Accelerators one vLLM engine spans: tensor parallel × pipeline parallel."""
    return vllm_settings.tensor_parallel_size * vllm_settings.pipeline_parallel_size


def data_parallel_workers(section) -> int:
    """Engines a data-parallel stage (sampling) runs at once: vLLM's `data_parallel_size`, else one."""
    return section.vllm.data_parallel_size if section.engine == "vllm" else 1


def gpus_for(section, *, data_parallel: bool = False) -> int:
    """Accelerators a section's engines hold: a stated `cost.gpus` wins; else vLLM's devices per engine
    (times its data-parallel workers where the stage runs them), 1 for transformers, 0 for an HTTP API
    (a hosted API is priced per token)."""
    cost = getattr(section, "cost", None)
    if cost is not None and cost.gpus is not None:
        return cost.gpus
    if section.engine == "vllm":
        return devices_per_engine(section.vllm) * (data_parallel_workers(section) if data_parallel else 1)
    return 1 if section.engine == "transformers" else 0
