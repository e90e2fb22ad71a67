"""Memory per GPU for SFT (bytes; P parameters, N GPUs, bf16 mixed precision, AdamW); docs/planning.md.

Full fine-tuning keeps 16 bytes per parameter of model states (ZeRO paper: bf16 weights 2 + bf16 grads 2
+ fp32 master weights, Adam m and v 12): all of it per GPU under DDP, 2 + 14/N under ZeRO-2, 16/N
under ZeRO-3 and FSDP full sharding (plus the gathered working set: two blocks' weights in flight and
the embedding), 2/N on the GPU with the rest in CPU memory under ZeRO-3 offload.
LoRA freezes the base (2 bytes per parameter, sharded like the weights above) and trains r·(d_in+d_out)
per adapted matrix with 16 bytes each; QLoRA stores the adapted base matrices in NF4 with double
quantisation (4.127 bits per parameter), embeddings and norms in bf16.
Activations (distill/planning/activations.py, formula and sources there) with gradient checkpointing: one
bf16 hidden state per layer per token, plus one layer's activations and their gradients while it is
recomputed. TRL's trainers (1.16) score tokens through a tiled LM head, so the (tokens x vocabulary)
logits are never materialised; a trainer that materialises them (`fused_logits=False`) adds 10 bytes per
token per vocabulary entry (bf16 logits, fp32 copy, fp32 grad).
GRPO (`grpo_memory`) is the same model states and a micro-batch of per_device_train_batch_size
completions of prompt + max_completion_length tokens, plus the reference model when beta > 0 (bf16,
sharded like the weights; LoRA uses the base with adapters off instead) and vLLM's share of each GPU in
colocate mode unless sleep mode frees it while the trainer steps.
A fit leaves 2.5 GiB of each GPU to the CUDA context, NCCL and cuBLAS and 10% to fragmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from distill.core.hardware import GPU
from distill.planning.activations import GiB, Activations, activations, grpo_micro_batch, micro_batch_activations
from distill.planning.archs import Arch

RESERVED_GIB = 2.5  # CUDA context, NCCL buffers, cuBLAS workspace
FRAGMENTATION = 1.10  # allocator slack on top of activations and working buffers
NF4_BYTES = 4.127 / 8  # NF4 + double-quantised absmax (QLoRA paper: 0.127 bits of constants per parameter)


@dataclass
class SFTMemory:
    strategy: str
    method: str  # full | lora | qlora
    gpus: int
    params: float
    trainable: float
    micro_batch_tokens: int
    gradient_checkpointing: bool
    fused_logits: bool
    weights_gib: float
    grads_gib: float
    optimizer_gib: float
    working_gib: float  # gathered shards (ZeRO-3 / FSDP)
    activations_gib: float
    logits_gib: float
    reserved_gib: float
    total_gib: float
    capacity_gib: float
    fits: bool
    cpu_offload_gib_per_node: float = 0.0
    notes: list[str] = field(default_factory=list)


def sft_memory(arch: Arch, *, gpu: GPU, gpus: int, gpus_per_node: int, strategy: str, method: str,
               lora_r: int = 16, lora_targets: list[str] | str = "all-linear", micro_batch: int = 1,
               seq_len: int = 4096, gradient_checkpointing: bool = True, fused_logits: bool = True) -> SFTMemory:
    P = arch.params()
    n = gpus
    emb = arch.embedding_params()
    notes: list[str] = []
    sharded = strategy in ("zero3", "zero3-offload", "fsdp")
    trainable = P if method == "full" else float(arch.lora_params(lora_r, lora_targets))

    # the base model's weights (trainable under full fine-tuning, frozen under LoRA/QLoRA)
    if method == "qlora":
        quantised = P - emb - arch.layers * 2 * arch.hidden  # the block matrices; embeddings and norms stay bf16
        weights = quantised * NF4_BYTES + (P - quantised) * 2
    else:
        weights = P * 2.0
    # what training adds per trainable parameter: bf16 gradient, fp32 master copy + Adam m, v
    adapters = trainable * 2 if method != "full" else 0.0
    grads = trainable * 2
    optimizer = trainable * 12
    cpu = 0.0
    if strategy == "zero2":
        grads, optimizer = grads / n, optimizer / n
    elif strategy in ("zero3", "fsdp"):
        weights, adapters, grads, optimizer = weights / n, adapters / n, grads / n, optimizer / n
    elif strategy == "zero3-offload":
        # parameters and optimizer states in CPU memory; gradient partitions pass through the GPU
        cpu = (weights + adapters + optimizer) * gpus_per_node / n
        weights, adapters, grads, optimizer = 0.0, 0.0, grads / n, 0.0
        notes.append("ZeRO-3 offload: parameters and optimizer states live in CPU memory")
    weights += adapters

    working = 0.0
    if sharded:
        # two blocks gathered at once (prefetch) and the embedding/lm_head while it is used
        per_param = NF4_BYTES if method == "qlora" else 2
        working = 2 * arch.block_params() * per_param + arch.vocab * arch.hidden * 2

    tokens = micro_batch * seq_len
    act = activations(arch, tokens, gradient_checkpointing=gradient_checkpointing, fused_logits=fused_logits)
    activations_b = (act.checkpoints_gib + act.recompute_gib) * GiB
    logits = act.logits_gib * GiB
    activations_b *= FRAGMENTATION
    logits *= FRAGMENTATION
    working *= FRAGMENTATION

    total = weights + grads + optimizer + working + activations_b + logits + RESERVED_GIB * GiB
    return SFTMemory(
        strategy=strategy, method=method, gpus=n, params=P, trainable=trainable, micro_batch_tokens=tokens,
        gradient_checkpointing=gradient_checkpointing, fused_logits=fused_logits,
        weights_gib=weights / GiB, grads_gib=grads / GiB, optimizer_gib=optimizer / GiB, working_gib=working / GiB,
        activations_gib=activations_b / GiB, logits_gib=logits / GiB, reserved_gib=RESERVED_GIB,
        total_gib=total / GiB, capacity_gib=gpu.memory_gib, fits=total / GiB <= gpu.memory_gib,
        cpu_offload_gib_per_node=cpu / GiB, notes=notes,
    )


@dataclass
class GRPOMemory:
    model: SFTMemory  # model states, gathered shards, this micro-batch's activations and logits tile, reserved
    micro_batch: dict[str, Any]  # sequences, prompt_tokens, completion_tokens, gradient_checkpointing
    activations: Activations  # the micro-batch's activations, before allocator slack
    reference_gib: float
    rollout_gib: float
    total_gib: float
    capacity_gib: float
    fits: bool
    notes: list[str] = field(default_factory=list)


def grpo_memory(arch: Arch, training_args: Mapping[str, Any], *, gpu: GPU, gpus: int = 1, gpus_per_node: int = 8,
                strategy: str = "zero3", method: str = "full", lora_r: int = 16, lora_targets: list[str] | str = "all-linear",
                prompt_tokens: int | None = None) -> GRPOMemory:
    """Memory per GPU of a GRPO step under TRL 1.16 (`training_args`: GRPOConfig fields as the trainer gets them)."""
    mb = grpo_micro_batch(training_args, **({"prompt_tokens": prompt_tokens} if prompt_tokens else {}))
    model = sft_memory(arch, gpu=gpu, gpus=gpus, gpus_per_node=gpus_per_node, strategy=strategy, method=method, lora_r=lora_r,
                       lora_targets=lora_targets, micro_batch=mb["sequences"], seq_len=mb["prompt_tokens"] + mb["completion_tokens"],
                       gradient_checkpointing=mb["gradient_checkpointing"])
    act = micro_batch_activations(arch, **mb)
    notes = list(model.notes)
    reference = 0.0
    if float(training_args.get("beta") or 0) > 0 and method == "full":
        reference = arch.params() * 2 / (gpus if strategy in ("zero3", "zero3-offload", "fsdp") else 1) / GiB
    rollout = 0.0
    if training_args.get("use_vllm") and training_args.get("vllm_mode", "colocate") == "colocate":
        if training_args.get("vllm_enable_sleep_mode"):
            notes.append("vLLM colocate with sleep mode: its weights and KV cache leave the GPU while the trainer steps")
        else:
            rollout = float(training_args.get("vllm_gpu_memory_utilization", 0.3)) * gpu.memory_gib
    total = model.total_gib + reference + rollout
    return GRPOMemory(model=model, micro_batch=mb, activations=act, reference_gib=reference, rollout_gib=rollout,
                      total_gib=total, capacity_gib=gpu.memory_gib, fits=total <= gpu.memory_gib, notes=notes)
