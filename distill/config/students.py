"""The students: each one's base model, chat template, RoPE, adapters, trainer arguments and hardware."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_serializer

from distill.config.base import EMBEDDED_MODEL, Section, check_trainer_keys
from distill.config.hardware import HardwareConfig, LoraConfig


class RopeSettings(Section):
    """RoPE applied when the student loads for SFT (and saved with it): open-r1 starts Qwen2.5-Math
    (4,096 positions, base 10k) as a 32,768-position model with base 300k."""

    theta: float | None = Field(None, gt=0)  # the RoPE base (rope_theta)
    max_position_embeddings: int | None = Field(None, ge=1)


# Fields added after run directories existed: left out of the dump (and so of the stage fingerprints)
# while they hold their default, so a recipe that does not set them keeps its fingerprints.
_OMITTED_WHEN_DEFAULT = ("rope",)


class StudentConfig(Section):
    """`chat_template`: Jinja text, a `.jinja` / `tokenizer_config.json` file, a model folder, or a model
    (hub id) whose template is borrowed, e.g. `meta-llama/Llama-3.3-70B-Instruct` for Llama-3.1-8B base,
    which has none (distill.training.student.resolve_chat_template). The token that ends an assistant turn
    in that template becomes the student's EOS unless `training_args.eos_token` names one."""

    name: str
    model: str = EMBEDDED_MODEL
    lora: LoraConfig = LoraConfig()
    chat_template: str | None = None
    rope: RopeSettings | None = None
    training_args: dict[str, Any] = Field(default_factory=dict)
    hardware: HardwareConfig = HardwareConfig()  # for `distill plan` and `distill launch`

    _check = field_validator("training_args")(lambda v: check_trainer_keys("sft", v))

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        data = handler(self)
        for key in _OMITTED_WHEN_DEFAULT:
            if isinstance(data, dict) and getattr(self, key) is None:
                data.pop(key, None)
        return data

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\ ") or v.startswith("."):
            raise ValueError(f"student name {v!r} must be a plain directory name")
        return v
