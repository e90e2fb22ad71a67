"""The students: each one's base model, adapters, trainer arguments and hardware."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from distill.config.base import EMBEDDED_MODEL, Section, check_trainer_keys
from distill.config.hardware import HardwareConfig, LoraConfig


class StudentConfig(Section):
    name: str
    model: str = EMBEDDED_MODEL
    lora: LoraConfig = LoraConfig()
    chat_template: str | None = None
    training_args: dict[str, Any] = Field(default_factory=dict)
    hardware: HardwareConfig = HardwareConfig()  # for `distill plan` and `distill launch`

    _check = field_validator("training_args")(lambda v: check_trainer_keys("sft", v))

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\ ") or v.startswith("."):
            raise ValueError(f"student name {v!r} must be a plain directory name")
        return v
