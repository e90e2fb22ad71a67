"""The GPU kinds a recipe may name: memory, peak bf16 FLOP/s and bandwidth, for `distill plan` and the
recipe's own checks (plain data: nothing here imports torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gib: float
    bf16_tflops: float  # dense, no sparsity
    bandwidth_tbs: float  # HBM, TB/s


GPUS: dict[str, GPU] = {
    g.name.lower(): g
    for g in (
        GPU("H100-80GB", 80, 989, 3.35),  # SXM
        GPU("H100-PCIe", 80, 756, 2.0),
        GPU("H200", 141, 989, 4.8),
        GPU("B200", 180, 2250, 8.0),
        GPU("A100-80GB", 80, 312, 2.04),
        GPU("A100-40GB", 40, 312, 1.56),
        GPU("L40S", 48, 362, 0.864),
        GPU("A10", 24, 125, 0.6),
    )
}
GPU_ALIASES = {"h100": "h100-80gb", "h100-sxm": "h100-80gb", "h200-141gb": "h200", "a100": "a100-80gb"}


def gpu_spec(name: str) -> GPU:
    key = name.strip().lower()
    key = GPU_ALIASES.get(key, key)
    if key not in GPUS:
        raise ValueError(f"unknown GPU {name!r}: known GPUs are {', '.join(g.name for g in GPUS.values())}")
    return GPUS[key]
