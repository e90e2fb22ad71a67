"""How a model trains on its hardware: LoRA/QLoRA adapters, and the GPUs and sharding strategy."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_serializer, model_validator

from distill.config.base import Section
from distill.core.hardware import gpu_spec


class LoraConfig(Section):
    enabled: bool = True
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    # QLoRA: the frozen base loaded in 4-bit NF4 with double quantization (bitsandbytes, CUDA only)
    load_in_4bit: bool = False

    @model_validator(mode="after")
    def _qlora_needs_lora(self) -> "LoraConfig":
        if self.load_in_4bit and not self.enabled:
            raise ValueError("lora.load_in_4bit (QLoRA) needs lora.enabled: true (a 4-bit base cannot be fully fine-tuned)")
        return self


Strategy = Literal["ddp", "zero2", "zero3", "zero3-offload", "fsdp"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
Launch = Literal["auto", "always", "never"]


def omit_defaults(data: dict[str, Any], section: Section, names: tuple[str, ...]) -> dict[str, Any]:
    """`data` (a section's dump) without the named fields where they hold their default: a field added
    later leaves the hashes of recipes that do not set it (the stage fingerprints) unchanged."""
    fields = type(section).model_fields
    return {k: v for k, v in data.items() if not (k in names and getattr(section, k) == fields[k].get_default(call_default_factory=True))}


class HardwareConfig(Section):
    """Where a student trains: the GPU kind and count, and how the model is sharded across them.

    `strategy` names the accelerate config under configs/accelerate/ (DeepSpeed ZeRO-2/3, ZeRO-3 with CPU
    offload, FSDP full sharding, plain DDP) unless `accelerate_config` points elsewhere; `distill plan`
    uses the same fields for its memory and time estimates, and `distill launch` for the command.
    """

    gpu: str = "H100-80GB"  # a name from distill.core.hardware.GPUS
    gpus_per_node: int = Field(8, ge=1)
    nodes: int = Field(1, ge=1)
    strategy: Strategy = "zero3"
    accelerate_config: str | None = None  # default: configs/accelerate/<strategy>.yaml
    # `distill run` trains on several processes (`accelerate launch` from the stage) when this asks for more
    # than one GPU: `auto` where CUDA shows more than one device, `always` also on CPU (gloo processes: the
    # rehearsal), `never` in-process. Multi-node training starts with `distill launch` on each node.
    launch: Launch = "auto"

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict[str, Any]:
        return omit_defaults(handler(self), self, ("launch",))

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, v: str) -> str:
        return gpu_spec(v).name

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.nodes
