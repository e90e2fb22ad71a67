"""`distill plan`: memory per GPU and GPU-hours per stage for a recipe, without loading any weights.

Model shapes come from a table of the named architectures (the six R1 students, the usual teachers) or
from a local directory's config.json. Every number is arithmetic on those shapes, the recipe's settings
and the assumptions below; docs/planning.md derives them and compares the result with published runs.

Memory per GPU for SFT (bytes; P parameters, N GPUs, bf16 mixed precision, AdamW):
  full fine-tuning keeps 16 bytes per parameter of model states (ZeRO paper: bf16 weights 2 + bf16 grads 2
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

GPU-hours: generation from output tokens over an engine throughput (a decode roofline: each step reads
the weights and the batch's KV cache once, at a fraction of the GPU's memory bandwidth); SFT from model
FLOPs (6·P per token for full fine-tuning, 4·P with frozen weights, plus attention) over the GPUs' peak
bf16 FLOP/s times an MFU. Recomputation under gradient checkpointing is not counted in the model FLOPs:
it is part of what a realistic MFU absorbs.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GiB = 1024**3


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
_GPU_ALIASES = {"h100": "h100-80gb", "h100-sxm": "h100-80gb", "h200-141gb": "h200", "a100": "a100-80gb"}


def gpu_spec(name: str) -> GPU:
    key = name.strip().lower()
    key = _GPU_ALIASES.get(key, key)
    if key not in GPUS:
        raise ValueError(f"unknown GPU {name!r}: known GPUs are {', '.join(g.name for g in GPUS.values())}")
    return GPUS[key]


@dataclass(frozen=True)
class Arch:
    """The shape of a decoder-only transformer: what memory and FLOPs are computed from."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    head_dim: int | None = None
    qkv_bias: bool = False
    # Mixture of experts (DeepSeek-V3/R1): total and active parameters given directly, and the KV cache per
    # token (MLA caches a 512+64 latent per layer instead of keys and values per head)
    total_params: float | None = None
    active_params: float | None = None
    kv_bytes_per_token: float | None = None
    weight_bytes: float = 2.0  # as served: bf16 = 2, FP8 checkpoints = 1

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(d_in, d_out) of each adapted matrix in one block, by its usual module name."""
        h, q, kv, i = self.hidden, self.heads * self.hd, self.kv_heads * self.hd, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def block_params(self) -> int:
        n = sum(a * b for a, b in self.linear_shapes().values()) + 2 * self.hidden
        if self.qkv_bias:
            n += (self.heads + 2 * self.kv_heads) * self.hd
        return n

    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def params(self) -> float:
        if self.total_params:
            return self.total_params
        return self.layers * self.block_params() + self.embedding_params() + self.hidden

    def active(self) -> float:
        return self.active_params or self.params()

    def kv_per_token(self) -> float:
        """KV-cache bytes per token in bf16, all layers."""
        if self.kv_bytes_per_token:
            return self.kv_bytes_per_token
        return 2 * self.layers * self.kv_heads * self.hd * 2

    def lora_params(self, r: int, targets: list[str] | str) -> int:
        shapes = self.linear_shapes()
        names = list(shapes) if targets == "all-linear" else [t for t in targets if t in shapes]
        if targets != "all-linear" and not names:
            raise ValueError(f"lora.target_modules {targets} names none of {', '.join(shapes)}")
        return self.layers * sum(r * (shapes[n][0] + shapes[n][1]) for n in names)


# From each model's config.json (hidden_size, num_hidden_layers, intermediate_size, num_attention_heads,
# num_key_value_heads, vocab_size, tie_word_embeddings); DeepSeek-R1 from its model card (671B, 37B active).
ARCHS: dict[str, Arch] = {
    a.name.lower(): a
    for a in (
        Arch("Qwen2.5-Math-1.5B", 28, 1536, 8960, 12, 2, 151936, True, qkv_bias=True),
        Arch("Qwen2.5-Math-7B", 28, 3584, 18944, 28, 4, 152064, False, qkv_bias=True),
        Arch("Qwen2.5-7B", 28, 3584, 18944, 28, 4, 152064, False, qkv_bias=True),
        Arch("Qwen2.5-14B", 48, 5120, 13824, 40, 8, 152064, False, qkv_bias=True),
        Arch("Qwen2.5-32B", 64, 5120, 27648, 40, 8, 152064, False, qkv_bias=True),
        Arch("Qwen2.5-32B-Instruct", 64, 5120, 27648, 40, 8, 152064, False, qkv_bias=True),
        Arch("QwQ-32B", 64, 5120, 27648, 40, 8, 152064, False, qkv_bias=True),
        Arch("Llama-3.1-8B", 32, 4096, 14336, 32, 8, 128256, False),
        Arch("Llama-3.1-8B-Instruct", 32, 4096, 14336, 32, 8, 128256, False),
        Arch("Llama-3.3-70B-Instruct", 80, 8192, 28672, 64, 8, 128256, False),
        Arch("SmolLM2-135M-Instruct", 30, 576, 1536, 9, 3, 49152, True),
        Arch("DeepSeek-R1", 61, 7168, 18432, 128, 128, 129280, False, head_dim=128,
             total_params=671e9, active_params=37e9, kv_bytes_per_token=61 * (512 + 64) * 2, weight_bytes=1.0),
    )
}
_ARCH_ALIASES = {"embedded:smollm2-135m-instruct": "smollm2-135m-instruct", "deepseek-r1-0528": "deepseek-r1"}
for _distill in ("Qwen-1.5B", "Qwen-7B", "Qwen-14B", "Qwen-32B", "Llama-8B", "Llama-70B"):  # the R1 students' own names
    _base = {"Qwen-1.5B": "qwen2.5-math-1.5b", "Qwen-7B": "qwen2.5-math-7b", "Qwen-14B": "qwen2.5-14b",
             "Qwen-32B": "qwen2.5-32b", "Llama-8B": "llama-3.1-8b", "Llama-70B": "llama-3.3-70b-instruct"}[_distill]
    _ARCH_ALIASES[f"deepseek-r1-distill-{_distill.lower()}"] = _base


def arch_for(model: str) -> Arch:
    """The shape of `model`: a local directory's config.json, else the table by hub name."""
    path = Path(model)
    if (path / "config.json").is_file():
        return arch_from_config(path / "config.json")
    key = model.strip().lower()
    key = _ARCH_ALIASES.get(key, key)
    key = _ARCH_ALIASES.get(key.rsplit("/", 1)[-1], key.rsplit("/", 1)[-1])
    if key not in ARCHS:
        raise ValueError(
            f"unknown model {model!r}: give a local directory with a config.json, or one of "
            f"{', '.join(a.name for a in ARCHS.values())}"
        )
    return ARCHS[key]


def arch_from_config(path: Path) -> Arch:
    cfg = json.loads(Path(path).read_text())
    cfg = cfg.get("text_config", cfg)
    try:
        heads = cfg["num_attention_heads"]
        return Arch(
            name=cfg.get("_name_or_path") or Path(path).parent.name,
            layers=cfg["num_hidden_layers"],
            hidden=cfg["hidden_size"],
            intermediate=cfg["intermediate_size"],
            heads=heads,
            kv_heads=cfg.get("num_key_value_heads") or heads,
            vocab=cfg["vocab_size"],
            tied=bool(cfg.get("tie_word_embeddings", False)),
            head_dim=cfg.get("head_dim"),
            qkv_bias=bool(cfg.get("attention_bias", cfg.get("model_type") == "qwen2")),
        )
    except KeyError as e:
        raise ValueError(f"{path}: config.json lacks {e.args[0]!r}, which the planner needs") from None


# --- SFT memory ----------------------------------------------------------------------------------------

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


# --- time ----------------------------------------------------------------------------------------------

# Fractions of peak that real runs reach. MFU for SFT at long context with gradient checkpointing (model
# FLOPs only, recompute not counted): ~0.35 for ZeRO-3/FSDP on H100s; CPU offload is bound by PCIe and
# CPU Adam (Sky-T1's run implies ~0.1, docs/planning.md); QLoRA pays for dequantisation.
DEFAULT_MFU = {"ddp": 0.35, "zero2": 0.35, "zero3": 0.35, "fsdp": 0.35, "zero3-offload": 0.10}
QLORA_MFU_FACTOR = 0.6
DECODE_BW_EFFICIENCY = 0.5  # fraction of HBM bandwidth a decode step achieves (kernels, scheduling, sampling)
DEFAULT_BATCH = 256  # vLLM's default max_num_seqs
R1_MEAN_COMPLETION = 6000  # tokens: open-r1's measured mean of DeepSeek-R1 responses (OpenThoughts)


def sft_flops_per_token(arch: Arch, method: str, seq_len: int) -> float:
    """Model FLOPs per trained token: 6P (full) or 4P (frozen weights: no weight gradients), plus attention
    (causal, so half of a seq_len x seq_len score matrix on average; forward 4·L·s·d, backward twice that)."""
    dense = (6 if method == "full" else 4) * arch.active()
    attention = 3 * 4 * arch.layers * (seq_len / 2) * arch.heads * arch.hd
    return dense + attention


def decode_tokens_per_s_per_gpu(arch: Arch, gpu: GPU, *, gpus_per_engine: int, batch: int, context: float) -> float:
    """Roofline decode throughput of one engine, per GPU: each step reads the weights (all of an MoE's
    experts once the batch is large) and every sequence's KV cache; compute-bound if that takes longer."""
    weight_bytes = arch.params() * arch.weight_bytes
    kv_bytes = batch * context * arch.kv_per_token()
    bw = gpus_per_engine * gpu.bandwidth_tbs * 1e12 * DECODE_BW_EFFICIENCY
    t_memory = (weight_bytes + kv_bytes) / bw
    t_compute = 2 * arch.active() * batch / (gpus_per_engine * gpu.bf16_tflops * 1e12 * 0.5)
    return batch / max(t_memory, t_compute) / gpus_per_engine


@dataclass
class Assumptions:
    completion_tokens: float  # mean generated tokens per sample
    prompt_tokens: float = 200.0
    keep_rate: float = 0.5  # samples kept after verification and curation (R1: ~600k kept)
    mfu: float | None = None  # None: DEFAULT_MFU by strategy
    gen_tokens_per_s_per_gpu: float | None = None  # None: the roofline above
    sft_samples: int | None = None  # None: from the recipe's prompts, n, keep rate and merge ratio
    sft_tokens_per_sample: float | None = None  # None: prompt + completion tokens


def plan_recipe(recipe, *, gpu: str | None = None, gpus: int | None = None, gpus_per_node: int | None = None,
                assumptions: Assumptions | None = None) -> dict[str, Any]:
    """The whole plan: generation (teacher sampling) and SFT for each student, as a JSON-able dict."""
    s = recipe.sampling
    a = assumptions or Assumptions(completion_tokens=min(s.max_tokens, R1_MEAN_COMPLETION))
    out: dict[str, Any] = {"recipe": recipe.name, "assumptions": asdict(a), "stages": {}}

    # generation: the teacher's samples
    teacher = arch_for(recipe.teacher.model)
    gen_gpu = gpu_spec(gpu) if gpu else gpu_spec("H100-80GB")
    v = s.vllm
    per_engine = v.tensor_parallel_size * v.pipeline_parallel_size
    samples = recipe.prompts.n_train * s.n
    out_tokens = samples * a.completion_tokens
    context = a.prompt_tokens + a.completion_tokens / 2
    weights_per_gpu = teacher.params() * teacher.weight_bytes / per_engine / GiB
    if a.gen_tokens_per_s_per_gpu:
        tps, source = a.gen_tokens_per_s_per_gpu, "given"
    else:
        batch = v.max_num_seqs or DEFAULT_BATCH
        tps, source = decode_tokens_per_s_per_gpu(teacher, gen_gpu, gpus_per_engine=per_engine, batch=batch, context=context), "roofline"
    gen_hours = out_tokens / tps / 3600
    engine_gpus = per_engine * v.data_parallel_size
    out["stages"]["sample"] = {
        "teacher": teacher.name, "teacher_params_b": round(teacher.params() / 1e9, 2), "gpu": gen_gpu.name,
        "gpus_per_engine": per_engine, "weights_gib_per_gpu": round(weights_per_gpu, 1),
        "weights_fit": weights_per_gpu < gen_gpu.memory_gib * v.gpu_memory_utilization,
        "samples": samples, "output_tokens": out_tokens,
        "tokens_per_s_per_gpu": round(tps, 1), "throughput_source": source,
        "gpu_hours": round(gen_hours, 1),
        "wall_hours_on_engine_gpus": round(gen_hours / max(engine_gpus, 1), 1), "engine_gpus": engine_gpus,
    }

    # SFT: each student
    nr = recipe.merge.non_reasoning_fraction
    kept = samples * a.keep_rate
    if s.rejection.keep_k:
        kept = min(kept, recipe.prompts.n_train * s.rejection.keep_k)
    # the merge mixes by tokens: reasoning tokens are (1 - non_reasoning_fraction) of the set, unless
    # merge.total_tokens fixes the total; rows are counted as if every row had the reasoning rows' length
    per_sample = a.sft_tokens_per_sample or (a.prompt_tokens + a.completion_tokens)
    total = recipe.merge.total_tokens
    sft_samples = a.sft_samples or (int(total / per_sample) if total else int(kept / (1 - nr)))
    for st in recipe.students:
        hw = st.hardware
        g = gpu_spec(gpu) if gpu else gpu_spec(hw.gpu)
        per_node = gpus_per_node or min(gpus or hw.gpus_per_node, hw.gpus_per_node)
        n = gpus or hw.gpus
        ta = st.training_args
        method = "qlora" if st.lora.enabled and st.lora.load_in_4bit else ("lora" if st.lora.enabled else "full")
        seq = int(ta.get("max_length", 1024))
        mb = int(ta.get("per_device_train_batch_size", 8))
        arch = arch_for(st.model)
        mem = sft_memory(
            arch, gpu=g, gpus=n, gpus_per_node=per_node, strategy=hw.strategy, method=method,
            lora_r=st.lora.r, lora_targets=st.lora.target_modules, micro_batch=mb, seq_len=seq,
            gradient_checkpointing=bool(ta.get("gradient_checkpointing", False)),
        )
        epochs = float(ta.get("num_train_epochs", 1))
        tokens = sft_samples * per_sample * epochs
        mfu = a.mfu or DEFAULT_MFU[hw.strategy] * (QLORA_MFU_FACTOR if method == "qlora" else 1)
        # packed sequences: attention spans the packed row; padded ones: the sample's own length
        ctx = seq if ta.get("packing") else min(seq, per_sample)
        flops = tokens * sft_flops_per_token(arch, method, ctx)
        gpu_hours = flops / (g.bf16_tflops * 1e12 * mfu) / 3600
        ga = int(ta.get("gradient_accumulation_steps", 1))
        out["stages"][f"sft:{st.name}"] = {
            "model": arch.name, "params_b": round(arch.params() / 1e9, 2), "method": method, "gpu": g.name,
            "gpus": n, "nodes": math.ceil(n / per_node), "strategy": hw.strategy,
            "memory": {k: (round(x, 2) if isinstance(x, float) else x) for k, x in asdict(mem).items()},
            "samples": sft_samples, "tokens": tokens, "epochs": epochs, "mfu": mfu,
            "global_batch_sequences": mb * ga * n, "flops": flops,
            "gpu_hours": round(gpu_hours, 1), "wall_hours": round(gpu_hours / n, 1),
        }
    return out


def format_plan(plan: dict[str, Any]) -> str:
    """A plain-text table of the plan (the JSON form has every number)."""
    a = plan["assumptions"]
    lines = [f"plan for recipe {plan['recipe']}",
             f"assumptions: {a['completion_tokens']:.0f} completion + {a['prompt_tokens']:.0f} prompt tokens per sample, "
             f"keep rate {a['keep_rate']}" + (f", MFU {a['mfu']}" if a["mfu"] else "")]
    g = plan["stages"]["sample"]
    lines += [
        "",
        f"sample  teacher {g['teacher']} ({g['teacher_params_b']}B) on {g['gpu']}, {g['gpus_per_engine']} GPU(s) per engine: "
        f"weights {g['weights_gib_per_gpu']} GiB/GPU ({'fits' if g['weights_fit'] else 'DOES NOT FIT'})",
        f"        {g['samples']:,} samples x {a['completion_tokens']:.0f} tokens = {g['output_tokens']:.3g} tokens at "
        f"{g['tokens_per_s_per_gpu']} tok/s/GPU ({g['throughput_source']}): {g['gpu_hours']:,} GPU-hours "
        f"({g['wall_hours_on_engine_gpus']:,} h on {g['engine_gpus']} GPU(s))",
    ]
    if g["throughput_source"] == "roofline":
        lines.append("        the roofline is an upper bound on throughput (open-r1's R1 run reached 1/24 of it): "
                     "pass a measured rate with --gen-tok-s-per-gpu (docs/planning.md)")
    for name, s in plan["stages"].items():
        if not name.startswith("sft:"):
            continue
        m = s["memory"]
        verdict = "fits" if m["fits"] else "DOES NOT FIT"
        lines += [
            "",
            f"{name}  {s['model']} ({s['params_b']}B, {s['method']}) on {s['gpus']} x {s['gpu']} ({s['nodes']} node(s)), {s['strategy']}",
            f"        per GPU: weights {m['weights_gib']:.1f} + grads {m['grads_gib']:.1f} + optimizer {m['optimizer_gib']:.1f} "
            f"+ gathered {m['working_gib']:.1f} + activations {m['activations_gib']:.1f} + logits {m['logits_gib']:.1f} "
            f"+ reserved {m['reserved_gib']:.1f} = {m['total_gib']:.1f} of {m['capacity_gib']:.0f} GiB: {verdict}",
            f"        micro-batch {m['micro_batch_tokens']:,} tokens, gradient checkpointing {'on' if m['gradient_checkpointing'] else 'off'}"
            + (f", CPU memory {m['cpu_offload_gib_per_node']:.0f} GiB per node" if m["cpu_offload_gib_per_node"] else ""),
            f"        {s['samples']:,} samples, {s['tokens']:.3g} tokens over {s['epochs']:g} epoch(s), MFU {s['mfu']:.2f}: "
            f"{s['gpu_hours']:,} GPU-hours ({s['wall_hours']:,} h wall)",
        ]
        lines += [f"        note: {x}" for x in m["notes"]]
    return "\n".join(lines)
