"""Hardware across stages: vLLM engines against one node's GPUs, model weights against the GPUs an engine
holds (a 671B teacher evaluated at TP 2), and the GRPO micro-batch's activations against GPU memory.

GPUs per node and the GPU kind: a section's own `hardware` where the schema has one, else the first
student's `hardware` (the recipe's stated node), else 8 x H100-80GB. An engine spanning more GPUs than a
node needs a multi-node setting (MULTI_NODE_FIELDS on its `vllm` settings); vLLM's offline engine in one
process cannot schedule TP 8 x PP 2 on an 8-GPU node.
"""

from __future__ import annotations

from distill.check.findings import MISSING, Checker, setting
from distill.check.lengths import include_teacher
from distill.core.hardware import GPU, gpu_spec
from distill.engines.factory import devices_per_engine
from distill.planning.archs import Arch, arch_for, arch_from_config
from distill.planning.memory import RESERVED_GIB, GiB, grpo_memory, sft_memory
from rl.teacher import GRPO_DEFAULTS

DEFAULT_GPU, DEFAULT_GPUS_PER_NODE = "H100-80GB", 8
# vllm settings that run one engine across nodes (getattr: fields another change may add)
MULTI_NODE_FIELDS = ("nodes", "distributed_executor_backend", "multi_node")
LAUNCH_FIELD = "launch"  # hardware.launch: auto|always|never (`distill run` starts several processes itself)
SFT_DEFAULT_MAX_LENGTH = 512  # distill.training.sft's default
TEACHER_GPUS_DEFAULT = 8  # GPUs ZeRO-3 shards the teacher's model states over when teacher.hardware is unset


def node(c: Checker, section=None) -> tuple[GPU, int]:
    """(GPU kind, GPUs per node) for a section (see the module docstring); an engine's own
    `vllm.gpus_per_node` wins where the schema has it."""
    hw = getattr(section, "hardware", None) if section is not None else None
    if hw is None and c.recipe.students:
        hw = c.recipe.students[0].hardware
    gpu, per_node = (gpu_spec(hw.gpu), hw.gpus_per_node) if hw is not None else (gpu_spec(DEFAULT_GPU), DEFAULT_GPUS_PER_NODE)
    own = setting(getattr(section, "vllm", None), "gpus_per_node")
    return gpu, (per_node if own is MISSING or own is None else own)


def multi_node(vllm) -> bool:
    for name in MULTI_NODE_FIELDS:
        v = setting(vllm, name)
        if v is not MISSING and v not in (None, False, 1, "mp", "uni"):
            return True
    return False


def arch_of(c: Checker, model: str, where: str) -> Arch | None:
    """The model's shape: the planner's table by name (it knows MoE totals and FP8 weights), else its config."""
    try:
        return arch_for(model)
    except ValueError:
        info = c.model(model, where)
        if info is None:
            return None
        try:
            return arch_from_config(f"{info.source}/config.json")
        except (OSError, ValueError) as e:
            c.warn(where, f"no model shape for {model}: {e}")
            return None


def _engine_sections(c: Checker):
    """(field prefix, section) of every vLLM engine the recipe starts."""
    r = c.recipe
    out = [("sampling", r.sampling), ("eval", r.eval) if r.eval.enabled else None]
    cs = r.teacher.cold_start
    if r.teacher.enabled and cs.enabled and cs.source == "fewshot":
        out.append(("teacher.cold_start.fewshot", cs.fewshot))
    if any(s.generate for s in r.merge.non_reasoning):
        out.append(("merge.generator", r.merge.generator))
    return [(p, s) for p, s in filter(None, out) if s.engine == "vllm"]


def check_parallelism(c: Checker) -> None:
    for prefix, sec in _engine_sections(c):
        v = sec.vllm
        gpu, per_node = node(c, sec)
        per_engine = devices_per_engine(v)
        field = f"{prefix}.vllm.{'pipeline_parallel_size' if v.pipeline_parallel_size > 1 else 'tensor_parallel_size'}"
        if per_engine > per_node and not multi_node(v):
            c.error(field, f"tensor {v.tensor_parallel_size} x pipeline {v.pipeline_parallel_size} = {per_engine} GPUs per engine, "
                    f"more than one node's {per_node}: one vLLM process cannot schedule it; give the engine a multi-node setting "
                    f"({prefix}.vllm.{MULTI_NODE_FIELDS[0]}) or serve it across nodes and use engine: openai")
        elif per_engine * v.data_parallel_size > per_node and not multi_node(v):
            c.error(f"{prefix}.vllm.data_parallel_size", f"{v.data_parallel_size} engines x {per_engine} GPUs = "
                    f"{per_engine * v.data_parallel_size}, more than one node's {per_node}")
        else:
            c.ok(f"{prefix}: {per_engine} GPU(s) per engine x {v.data_parallel_size} on a {per_node}-GPU node")


def _fits(c: Checker, where: str, model: str, sec, gpu: GPU, what: str) -> None:
    arch = arch_of(c, model, where)
    if arch is None:
        return
    v = sec.vllm
    need = arch.params() * arch.weight_bytes / GiB
    have = devices_per_engine(v) * gpu.memory_gib * v.gpu_memory_utilization
    if need > have:
        c.error(where, f"{what} {model} needs {need:,.0f} GiB of weights, but {v.tensor_parallel_size} x {v.pipeline_parallel_size} "
                f"{gpu.name} at gpu_memory_utilization {v.gpu_memory_utilization} hold {have:,.0f} GiB")
    else:
        c.ok(f"{where}: {model} weights {need:,.0f} GiB within {have:,.0f} GiB")


def check_model_sizes(c: Checker) -> None:
    r = c.recipe
    if r.sampling.engine == "vllm":
        _fits(c, "sampling.vllm.tensor_parallel_size", r.teacher.model, r.sampling, node(c, r.sampling)[0], "the teacher")
    if not r.eval.enabled or r.eval.engine != "vllm":
        return
    gpu = node(c, r.eval)[0]
    if include_teacher(r):
        why = "evaluated" if "include_teacher" in r.eval.model_fields_set else "evaluated by default (eval.include_teacher)"
        _fits(c, "eval.include_teacher", r.teacher.model, r.eval, gpu, f"the teacher ({why})")
    for i, st in enumerate(r.students):
        _fits(c, "eval.vllm.tensor_parallel_size", st.model, r.eval, gpu, f"students[{i}]")


def check_grpo_memory(c: Checker) -> None:
    """The GRPO step's memory per GPU (distill.planning.memory.grpo_memory: model states, the micro-batch's
    activations, the reference model, vLLM's colocated share) against the GPU."""
    t = c.recipe.teacher
    if not (t.enabled and t.grpo.enabled):
        return
    arch = arch_of(c, t.model, "teacher.model")
    if arch is None:
        return
    args = {**GRPO_DEFAULTS, **t.grpo.training_args}
    hw = getattr(t, "hardware", None)
    gpu, gpus = (gpu_spec(hw.gpu), hw.gpus) if hw is not None else (node(c)[0], TEACHER_GPUS_DEFAULT)
    strategy = hw.strategy if hw is not None else "zero3"
    lora = t.grpo.lora
    method = "full" if not lora.enabled else ("qlora" if lora.load_in_4bit else "lora")
    mem = grpo_memory(arch, args, gpu=gpu, gpus=gpus, gpus_per_node=min(gpus, hw.gpus_per_node if hw else 8), strategy=strategy,
                      method=method, lora_r=lora.r, lora_targets=lora.target_modules)
    mb, act = mem.micro_batch, mem.activations
    where = "teacher.grpo.training_args.per_device_train_batch_size"
    assumed = "" if hw is not None else f" (teacher.hardware unset: {strategy} over {gpus} GPUs assumed)"
    detail = (f"{mb['sequences']} completion(s) x ({mb['completion_tokens']:,} + ~{mb['prompt_tokens']} prompt) tokens per micro-batch: "
              f"activations {act.total_gib:.1f} GiB (checkpoints {act.checkpoints_gib:.1f}), {mem.total_gib:.0f} GiB per GPU in all"
              f"{assumed}, of {mem.capacity_gib:.0f} GiB on a {gpu.name}")
    usable = mem.capacity_gib - RESERVED_GIB - mem.rollout_gib
    if act.total_gib > usable:
        fit = max(1, int(mb["sequences"] * usable / act.total_gib))
        c.error(where, f"{detail}: the activations alone exceed the GPU; lower it (to ~{fit}, raising gradient_accumulation_steps)")
    elif not mem.fits:
        (c.error if hw is not None else c.warn)(where, f"{detail}: does not fit; lower it, or shard over more GPUs (teacher.hardware)")
    else:
        c.ok(f"teacher.grpo: {detail}")


def _method(lora) -> str:
    return "full" if not lora.enabled else ("qlora" if lora.load_in_4bit else "lora")


def check_training_processes(c: Checker) -> None:
    """How `distill run` trains each student: a stage whose hardware spans several nodes stops the run (each
    node needs `distill launch`); one that stays in one process must fit one GPU."""
    for i, st in enumerate(c.recipe.students):
        hw, f = st.hardware, f"students[{i}].hardware"
        if hw.gpus <= 1:
            continue
        launch = setting(hw, LAUNCH_FIELD)
        if hw.nodes > 1 and launch is not MISSING and launch != "never":
            c.warn(f"{f}.nodes", f"{hw.nodes} nodes: `distill run` trains on one node and stops at sft:{st.name}; run "
                   f"`distill merge`, then `distill launch --config RECIPE --student {st.name}` on each node")
            continue
        if launch in ("auto", "always"):
            c.ok(f"{f}: `distill run` starts {hw.gpus_per_node} processes under accelerate ({hw.strategy})")
            continue
        arch = arch_of(c, st.model, f"students[{i}].model")
        if arch is None:
            continue
        ta = st.training_args
        mem = sft_memory(arch, gpu=gpu_spec(hw.gpu), gpus=1, gpus_per_node=1, strategy="ddp", method=_method(st.lora),
                         lora_r=st.lora.r, lora_targets=st.lora.target_modules, micro_batch=int(ta.get("per_device_train_batch_size", 8)),
                         seq_len=int(ta.get("max_length") or SFT_DEFAULT_MAX_LENGTH), gradient_checkpointing=bool(ta.get("gradient_checkpointing", True)))
        where = f"{f}.{LAUNCH_FIELD}" if launch is not MISSING else f
        if not mem.fits:
            c.error(where, f"`distill run` trains {st.model} in one process on one {hw.gpu} ({mem.total_gib:,.0f} of "
                    f"{mem.capacity_gib:,.0f} GiB), though the hardware asks for {hw.gpus} GPUs"
                    + ("" if launch is not MISSING else ": this version has no launcher; use `distill launch`"))
