"""Activation memory of one training micro-batch per GPU (GRPO and SFT), which model states leave out.

The formula (bytes; bf16 = 2; h hidden, I intermediate, q = heads x head_dim, kv = kv_heads x head_dim):

    tokens      = sequences x (prompt + completion tokens)        (GRPO: per_device_train_batch_size
                                                                   completions; SFT: x max_length)
    checkpoints = layers x tokens x h x 2                          (gradient checkpointing: each layer's
                                                                   bf16 input is kept for the backward)
    recompute   = 2 x tokens x 2 x (4h + 2q + 2kv + 4I)            (the layer being recomputed: what one
                                                                   block saves per token - two norm inputs,
                                                                   q, k, v, attention output, projection
                                                                   inputs, the MLP's gate, up, activation
                                                                   and product - and its gradients)
    no checkpointing: layers x tokens x 2 x (4h + 2q + 2kv + 4I)
    logits      = one LM-head tile 4,096 tokens x 32,768 vocabulary entries, fp32, and its gradient (1 GiB)
                  or, where logits are materialised, logit tokens x vocab x 10 (bf16 + fp32 copy + fp32 grad)

Sources: the checkpointing terms are the standard accounting of Korthikanti et al., "Reducing Activation
Recomputation in Large Transformer Models" (2022), sec. 4 (with full recomputation only each layer's
input stays: 2·s·b·h bytes per layer), for FlashAttention/SDPA (no s² score matrix). The logits term
follows TRL 1.16: GRPOTrainer (`_get_per_token_logps_and_entropies`: `model(..., fused_lm_head=True)`)
and SFTTrainer score tokens through `trl.kernels.chunked_logprob` (TOKEN_CHUNK_SIZE 4096 tokens x
`_CHUNKED_LOGPROB_CHUNK_SIZE` 32768 vocabulary per tile), so the tokens x vocabulary logits never exist.
GRPO's reference and old-policy log-probabilities run without gradient, one micro-batch at a time: they
keep nothing for the backward. Sequence parallelism does not apply (TRL 1.16's GRPOConfig refuses it), so
every GPU holds a whole micro-batch: ZeRO and FSDP shard model states, never activations.

Measured: autograd's saved-tensor hooks on a tiny bf16 Qwen2 with checkpointing keep exactly 2·tokens·h bytes
per layer (tests/test_scale_grpo.py); outside the layers only the final norm's input (6·tokens·h, left out).
The recompute and logits terms are not measured here (CPU kernels differ from CUDA's).

Check: Qwen2.5-32B (64 layers, h 5120), 8 completions x (16,384 + 512) tokens: checkpoints alone are
64 x 135,168 x 5,120 x 2 = 88.6 GB (82.5 GiB), more than an 80 GB GPU before any weight is loaded.

`grpo_activation_gib(arch, training_args)` is the number `distill check` and `distill plan` compare with
the GPU; `grpo_micro_batch` reads the micro-batch from GRPOConfig fields (TRL 1.16 defaults where absent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from distill.planning.archs import Arch

GiB = 1024**3
BF16 = 2
TILE_TOKENS = 4096  # trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE
TILE_VOCAB = 32768  # trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE
LOGIT_BYTES = 2 + 4 + 4  # materialised logits: bf16, their fp32 upcast for the loss, the fp32 gradient
GRPO_PROMPT_TOKENS = 512  # TRL 1.16 does not truncate prompts: a math problem in a chat template, with margin
# GRPOConfig defaults (TRL 1.16) for fields a recipe leaves out
TRL_GRPO_DEFAULTS: dict[str, Any] = {"per_device_train_batch_size": 8, "max_completion_length": 512,
                                     "gradient_checkpointing": True, "num_generations": 8, "beta": 0.0}


@dataclass(frozen=True)
class Activations:
    tokens: int  # tokens in the micro-batch
    checkpoints_gib: float  # layer inputs kept for the backward pass
    recompute_gib: float  # the layer being recomputed: its activations and their gradients (or every layer's)
    logits_gib: float  # one fused LM-head tile and its gradient, or the materialised logits

    @property
    def total_gib(self) -> float:
        return self.checkpoints_gib + self.recompute_gib + self.logits_gib


def layer_bytes_per_token(arch: Arch) -> int:
    """bf16 bytes one transformer block keeps per token for its backward: norm inputs, q/k/v, attention
    output, the projections' inputs, the MLP's gate, up, activation and product."""
    q, kv = arch.heads * arch.hd, arch.kv_heads * arch.hd
    return BF16 * (4 * arch.hidden + 2 * q + 2 * kv + 4 * arch.intermediate)


def activations(arch: Arch, tokens: int, *, logit_tokens: int | None = None, gradient_checkpointing: bool = True,
                fused_logits: bool = True) -> Activations:
    """Activation memory of one micro-batch of `tokens` tokens; `logit_tokens` are the scored ones
    (default: all), which matter only when logits are materialised (`fused_logits=False`)."""
    per_layer = layer_bytes_per_token(arch) * tokens
    if gradient_checkpointing:
        kept, recompute = arch.layers * tokens * arch.hidden * BF16, 2 * per_layer
    else:
        kept, recompute = 0, arch.layers * per_layer
    scored = tokens if logit_tokens is None else logit_tokens
    logits = 2 * TILE_TOKENS * TILE_VOCAB * 4 if fused_logits else scored * arch.vocab * LOGIT_BYTES
    return Activations(tokens=tokens, checkpoints_gib=kept / GiB, recompute_gib=recompute / GiB, logits_gib=logits / GiB)


def micro_batch_activations(arch: Arch, *, sequences: int, prompt_tokens: int, completion_tokens: int,
                            gradient_checkpointing: bool = True, fused_logits: bool = True) -> Activations:
    """Activation memory of `sequences` rows of prompt + completion tokens in one forward/backward
    (only the completion is scored, as in GRPO)."""
    return activations(arch, sequences * (prompt_tokens + completion_tokens), logit_tokens=sequences * completion_tokens,
                       gradient_checkpointing=gradient_checkpointing, fused_logits=fused_logits)


def grpo_micro_batch(training_args: Mapping[str, Any], prompt_tokens: int = GRPO_PROMPT_TOKENS) -> dict[str, Any]:
    """What one GRPO backward holds, from GRPOConfig fields (TRL 1.16 defaults for absent ones)."""
    a = {**TRL_GRPO_DEFAULTS, **{k: v for k, v in training_args.items() if v is not None}}
    return {"sequences": int(a["per_device_train_batch_size"]), "prompt_tokens": int(prompt_tokens),
            "completion_tokens": int(a["max_completion_length"]), "gradient_checkpointing": bool(a["gradient_checkpointing"])}


def grpo_activations(arch: Arch, training_args: Mapping[str, Any], prompt_tokens: int = GRPO_PROMPT_TOKENS) -> Activations:
    return micro_batch_activations(arch, **grpo_micro_batch(training_args, prompt_tokens))


def grpo_activation_gib(arch: Arch, training_args: Mapping[str, Any], prompt_tokens: int = GRPO_PROMPT_TOKENS) -> float:
    """GiB of activations one GPU holds for a GRPO micro-batch of this GRPOConfig (`teacher.grpo.training_args`
    as the trainer gets them): checkpoints + the recomputed layer + the LM-head tile, before allocator slack."""
    return grpo_activations(arch, training_args, prompt_tokens).total_gib
