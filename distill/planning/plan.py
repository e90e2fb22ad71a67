"""`distill plan`: memory per GPU and GPU-hours per stage for a recipe, without loading any weights.

Model shapes come from distill.planning.archs, GPUs from distill.core.hardware, memory per GPU from
distill.planning.memory. Every number is arithmetic on those shapes, the recipe's settings and the
assumptions below; docs/planning.md derives them and compares the result with published runs.

GPU-hours: generation from output tokens over an engine throughput (a decode roofline: each step reads
the weights and the batch's KV cache once, at a fraction of the GPU's memory bandwidth); SFT from model
FLOPs (6·P per token for full fine-tuning, 4·P with frozen weights, plus attention) over the GPUs' peak
bf16 FLOP/s times an MFU. Recomputation under gradient checkpointing is not counted in the model FLOPs:
it is part of what a realistic MFU absorbs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from distill.core.hardware import GPU, gpu_spec
from distill.engines.factory import devices_per_engine
from distill.planning.archs import Arch, arch_for
from distill.planning.memory import GiB, grpo_memory, sft_memory

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
    per_engine = devices_per_engine(v)
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
    if recipe.teacher.enabled and recipe.teacher.grpo.enabled:
        out["stages"]["teacher:grpo"] = plan_grpo(recipe.teacher, gpu=gpu, gpus=gpus, gpus_per_node=gpus_per_node)
    out["stages"]["sample"] = {
        "teacher": teacher.name, "teacher_params_b": round(teacher.params() / 1e9, 2), "gpu": gen_gpu.name,
        "gpus_per_engine": per_engine, "nodes_per_engine": v.nodes_per_engine,
        "executor": v.distributed_executor_backend or "vLLM default (one node)",
        "weights_gib_per_gpu": round(weights_per_gpu, 1),
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
            gradient_checkpointing=bool(ta.get("gradient_checkpointing", True)),  # TRL 1.16's SFTConfig default
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


def plan_grpo(teacher, *, gpu: str | None = None, gpus: int | None = None, gpus_per_node: int | None = None,
              training_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """GRPO's memory per GPU, activations of one micro-batch included, on `teacher.hardware` (when the recipe
    has one; else the --gpu/--gpus flags, else one node of 8 H100s under ZeRO-3, said so in the plan).
    `training_args`: the GRPOConfig fields as the trainer gets them (default: the recipe's, TRL's defaults
    for the rest)."""
    hw = getattr(teacher, "hardware", None)
    g = gpu_spec(gpu) if gpu else gpu_spec(hw.gpu if hw else "H100-80GB")
    n = gpus or (hw.gpus if hw else 8)
    per_node = gpus_per_node or min(n, hw.gpus_per_node if hw else 8)
    strategy = hw.strategy if hw else "zero3"
    lora = teacher.grpo.lora
    method = "qlora" if lora.enabled and lora.load_in_4bit else ("lora" if lora.enabled else "full")
    arch = arch_for(teacher.model)
    mem = grpo_memory(arch, teacher.grpo.training_args if training_args is None else training_args, gpu=g, gpus=n, gpus_per_node=per_node, strategy=strategy,
                      method=method, lora_r=lora.r, lora_targets=lora.target_modules)
    m = mem.model
    return {
        "model": arch.name, "params_b": round(arch.params() / 1e9, 2), "method": method, "gpu": g.name, "gpus": n,
        "strategy": strategy, "hardware_source": "teacher.hardware" if hw and not (gpu or gpus) else ("flags" if gpu or gpus else "assumed"),
        "micro_batch": mem.micro_batch, "micro_batch_tokens": m.micro_batch_tokens,
        "activations_gib": round(mem.activations.total_gib, 2),  # before allocator slack: what grpo_activation_gib gives
        "activations": {"checkpoints_gib": round(mem.activations.checkpoints_gib, 2), "recompute_gib": round(mem.activations.recompute_gib, 2),
                        "logits_gib": round(mem.activations.logits_gib, 2)},
        "memory": {"weights_gib": round(m.weights_gib, 2), "grads_gib": round(m.grads_gib, 2), "optimizer_gib": round(m.optimizer_gib, 2),
                   "working_gib": round(m.working_gib, 2), "activations_gib": round(m.activations_gib, 2), "logits_gib": round(m.logits_gib, 2),
                   "reference_gib": round(mem.reference_gib, 2), "rollout_gib": round(mem.rollout_gib, 2),
                   "reserved_gib": m.reserved_gib, "total_gib": round(mem.total_gib, 2), "capacity_gib": mem.capacity_gib, "fits": mem.fits},
        "notes": mem.notes,
    }


def _format_grpo(s: dict[str, Any]) -> list[str]:
    m, mb = s["memory"], s["micro_batch"]
    return [
        "",
        f"teacher:grpo  {s['model']} ({s['params_b']}B, {s['method']}) on {s['gpus']} x {s['gpu']}, {s['strategy']} ({s['hardware_source']})",
        f"        micro-batch {mb['sequences']} completion(s) x ({mb['prompt_tokens']} + {mb['completion_tokens']}) = {s['micro_batch_tokens']:,} tokens: "
        f"checkpoints {s['activations']['checkpoints_gib']:.1f} + recomputed layer(s) {s['activations']['recompute_gib']:.1f} + logit tile "
        f"{s['activations']['logits_gib']:.1f} = {s['activations_gib']:.1f} GiB of activations (checkpointing {'on' if mb['gradient_checkpointing'] else 'off'})",
        f"        per GPU: weights {m['weights_gib']:.1f} + grads {m['grads_gib']:.1f} + optimizer {m['optimizer_gib']:.1f} + gathered {m['working_gib']:.1f} "
        f"+ activations {m['activations_gib']:.1f} + logits {m['logits_gib']:.1f} + reference {m['reference_gib']:.1f} + vLLM {m['rollout_gib']:.1f} "
        f"+ reserved {m['reserved_gib']:.1f} = {m['total_gib']:.1f} of {m['capacity_gib']:.0f} GiB: {'fits' if m['fits'] else 'DOES NOT FIT'}",
    ] + [f"        note: {x}" for x in s["notes"]]


def format_plan(plan: dict[str, Any]) -> str:
    """A plain-text table of the plan (the JSON form has every number)."""
    a = plan["assumptions"]
    lines = [f"plan for recipe {plan['recipe']}",
             f"assumptions: {a['completion_tokens']:.0f} completion + {a['prompt_tokens']:.0f} prompt tokens per sample, "
             f"keep rate {a['keep_rate']}" + (f", MFU {a['mfu']}" if a["mfu"] else "")]
    if "teacher:grpo" in plan["stages"]:
        lines += _format_grpo(plan["stages"]["teacher:grpo"])
    g = plan["stages"]["sample"]
    nodes = f" over {g['nodes_per_engine']} nodes ({g['executor']})" if g["nodes_per_engine"] > 1 else ""
    lines += [
        "",
        f"sample  teacher {g['teacher']} ({g['teacher_params_b']}B) on {g['gpu']}, {g['gpus_per_engine']} GPU(s) per engine{nodes}: "
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
