"""Memory per GPU for SFT (bytes; P parameters, N GPUs, bf16 mixed precision, AdamW); docs/planning.md.

Full fine-tuning keeps 16 bytes per parameter of model states (ZeRO paper: bf16 weights 2 + bf16 grads 2
+ fp32 master weights, Adam m and v 12): all of it per GPU under DDP, 2 + 14/N under ZeRO-2, 16/N
under ZeRO-3 and FSDP full sharding (plus the gathered working set: two blocks' weights in flight and
the embedding), 2/N on the GPU with the rest in CPU memory under ZeRO-3 offload.
LoRA freezes the base (2 bytes per parameter, sharded like the weights above) and trains r·(d_in+d_out)
per adapted matrix with 16 bytes each; QLoRA stores the adapted base matrices in NF4 with double
quantisation (4.127 bits per parameter), embeddings and norms in bf16.
Activations with gradient checkpointing: one bf16 hidden state per layer per token, plus one layer's
activations and their gradients while it is recomputed. TRL's SFTTrainer (1.x) scores tokens through a
tiled LM head, so the (tokens x vocabulary) logits are never materialised; a trainer that materialises
them (`fused_logits=False`) adds 10 bytes per token per vocabulary entry (bf16 logits, fp32 copy, fp32 grad).
A fit leaves 2.5 GiB of each GPU to the CUDA context, NCCL and cuBLAS and 10% to fragmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distill.core.hardware import GPU
from distill.planning.archs import Arch

GiB = 1024**3
RESERVED_GIB = 2.5  # CUDA context, NCCL buffers, cuBLAS workspace
FRAGMENTATION = 1.10  # allocator slack on top of activations and working buffers
NF4_BYTES = 4.127 / 8  # NF4 + double-quantised absmax (QLoRA paper: 0.127 bits of constants per parameter)
LOGIT_BYTES = 2 + 4 + 4  # bf16 logits, their fp32 upcast for the loss, the fp32 gradient


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
    h, kv, i = arch.hidden, arch.kv_heads * arch.hd, arch.intermediate
    q = arch.heads * arch.hd
    # bf16 tensors a block keeps for its backward pass, per token: norm inputs, q/k/v, attention output,
    # projections' inputs, the MLP's gate, up, activation and product (flash/SDPA attention: no s^2 term)
    per_token_layer = 2 * (4 * h + q + 2 * kv + q + 4 * i)
    if gradient_checkpointing:
        activations = arch.layers * tokens * h * 2 + 2 * tokens * per_token_layer
    else:
        activations = arch.layers * tokens * per_token_layer
    # fused: one tile of 4096 tokens x 32768 vocabulary entries (fp32) and its gradient at a time
    logits = 2 * 4096 * 32768 * 4 if fused_logits else tokens * arch.vocab * LOGIT_BYTES
    activations *= FRAGMENTATION
    logits *= FRAGMENTATION
    working *= FRAGMENTATION

    total = weights + grads + optimizer + working + activations + logits + RESERVED_GIB * GiB
    return SFTMemory(
        strategy=strategy, method=method, gpus=n, params=P, trainable=trainable, micro_batch_tokens=tokens,
        gradient_checkpointing=gradient_checkpointing, fused_logits=fused_logits,
        weights_gib=weights / GiB, grads_gib=grads / GiB, optimizer_gib=optimizer / GiB, working_gib=working / GiB,
        activations_gib=activations / GiB, logits_gib=logits / GiB, reserved_gib=RESERVED_GIB,
        total_gib=total / GiB, capacity_gib=gpu.memory_gib, fits=total / GiB <= gpu.memory_gib,
        cpu_offload_gib_per_node=cpu / GiB, notes=notes,
    )
