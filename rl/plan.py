"""`distill teacher --plan`: what a teacher recipe will do, checked and printed without loading weights.

Validates what can be validated before a GPU is rented: TRL's GRPOConfig and SFTConfig are built from the
recipe's `training_args` (any value TRL refuses fails here), rewards are built with their options, the
batch arithmetic GRPO needs (the generation batch divisible by the group size) is checked, and the rollout
setup (vLLM colocate on one node or a `trl vllm-serve` server across nodes) is spelled out with a rough
memory budget from the model's size.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from distill.engines.base import has_cuda
from distill.training.common import cpu_bf16
from distill.planning.plan import plan_grpo
from rl.rewards import build_rewards
from rl.teacher import GRPO_DEFAULTS


def _size_b(model: str) -> float | None:
    """Parameters in billions from a hub-style name ("Qwen2.5-Math-7B" -> 7.0); None when it says none."""
    m = re.search(r"(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])", model.split("/")[-1])
    return float(m.group(1)) if m else None


def _config(cls, args: dict[str, Any], gpu: bool) -> tuple[dict[str, Any], str | None]:
    """Build TRL's config as it would be built on a GPU machine (or here); the error, if TRL refuses."""
    args = dict(args)
    if gpu:
        args.setdefault("bf16", True)
    else:  # the dtype is the hardware's business, not the recipe's: bf16 autocast only on a CPU with bf16 instructions
        args.update(use_cpu=True, bf16=cpu_bf16(), fp16=False)
    try:
        cfg = cls(**args)
    except Exception as e:  # noqa: BLE001 - reported in the plan as the reason the recipe cannot run
        return args, f"{type(e).__name__}: {e}"
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)}, None


def build_plan(recipe) -> dict[str, Any]:
    from trl import GRPOConfig, SFTConfig  # heavy: TRL validates the recipe's training_args; loads no weights

    t = recipe.teacher
    gpu = has_cuda()
    plan: dict[str, Any] = {"recipe": recipe.name, "teacher_enabled": t.enabled, "base_model": t.model, "errors": [], "notes": []}
    if not t.enabled:
        plan["notes"].append(f"no RL: {t.model} is the teacher as-is")
        return plan
    size = _size_b(t.model)
    plan["params_b"] = size
    plan["template"] = t.template.model_dump()
    if t.template.name == "chat" and t.template.prefill_think is None:
        plan["notes"].append("prefill: read from the model's chat template when the stage starts (R1-Distill templates prefill <think>)")

    if t.cold_start.enabled:
        cs = t.cold_start
        sft = {"max_steps": 20, "learning_rate": 2e-4, "max_length": 1024, **cs.training_args, "output_dir": "/tmp/plan"}
        resolved, err = _config(SFTConfig, sft, gpu)
        if err:
            plan["errors"].append(f"cold_start.training_args: {err}")
        src = {"file": cs.path, "hf": cs.path, "fewshot": cs.fewshot.examples}.get(cs.source)
        plan["cold_start"] = {"source": cs.source, "from": src, "n_examples": cs.n_examples, "lora": cs.lora.model_dump() if cs.lora.enabled else False,
                              "sft": {k: v for k, v in sft.items() if k != "output_dir"}}

    if t.grpo.enabled:
        g = t.grpo
        args = {**GRPO_DEFAULTS, **g.training_args, "output_dir": "/tmp/plan", "reward_weights": [r.weight for r in g.rewards]}
        resolved, err = _config(GRPOConfig, args, gpu)
        if err:
            plan["errors"].append(f"grpo.training_args: {err}")
        try:
            build_rewards(g.rewards, None, max_completion_length=args["max_completion_length"])
        except ValueError as e:
            plan["errors"].append(f"grpo.rewards: {e}")
        bs, accum = args["per_device_train_batch_size"], args.get("gradient_accumulation_steps", 1)
        group = args["num_generations"]
        # TRL: one generation batch (per process) is per_device_train_batch_size x steps_per_generation
        # (default: gradient_accumulation_steps) completions, num_generations of each prompt
        gen_batch = args.get("generation_batch_size") or bs * (args.get("steps_per_generation") or accum)
        if gen_batch % group:
            plan["errors"].append(f"grpo: the generation batch per process ({gen_batch}) must be a multiple of num_generations ({group})")
        rollouts: dict[str, Any] = {"use_vllm": bool(args.get("use_vllm"))}
        if args.get("use_vllm"):
            mode = args.get("vllm_mode", "colocate")
            rollouts["mode"] = mode
            if mode == "colocate":
                rollouts["gpu_memory_utilization"] = resolved.get("vllm_gpu_memory_utilization", args.get("vllm_gpu_memory_utilization"))
                rollouts["tensor_parallel_size"] = args.get("vllm_tensor_parallel_size", 1)
                rollouts["sleep_mode"] = args.get("vllm_enable_sleep_mode", False)
                rollouts["how"] = "vLLM shares each training GPU (one node): accelerate launch --num_processes <GPUs> -m distill.cli teacher ..."
            else:
                url = args.get("vllm_server_base_url") or f"http://{args.get('vllm_server_host', '0.0.0.0')}:{args.get('vllm_server_port', 8000)}"
                rollouts["server"] = url
                rollouts["how"] = (f"on the generation node: trl vllm-serve --model {t.model} --tensor-parallel-size <its GPUs> "
                                   f"(the trainer pushes its weights after each step); training nodes: accelerate launch ... (server at {url})")
        else:
            rollouts["how"] = "transformers generate inside the trainer (the CPU path)"
        if not gpu:
            plan["notes"].append("this machine has no GPU: here rollouts would use transformers, fp32")
        plan["grpo"] = {
            "template_answer": t.template.answer_format or ("answer_tag" if t.template.name == "r1_zero" else "boxed"),
            "rewards": [{"name": r.name, "weight": r.weight, **({"options": o} if (o := r.options.model_dump()) else {})} for r in g.rewards],
            "group_size": group,
            "prompts_per_step_per_process": gen_batch // group if group else None,
            "completions_per_step_per_process": gen_batch,
            "max_steps": args.get("max_steps"),
            "kl_beta": args.get("beta"),
            "clip_epsilon": [resolved.get("epsilon"), resolved.get("epsilon_high")],
            "learning_rate": args.get("learning_rate"),
            "max_completion_length": args["max_completion_length"],
            "loss_type": resolved.get("loss_type"),
            "lora": g.lora.model_dump() if g.lora.enabled else False,
            "checkpoints_every": args.get("save_steps"),
            "rollouts": rollouts,
        }
        if size:
            full = not g.lora.enabled
            # bf16 weights + grads, fp32 master weights and two Adam moments: 16 bytes a parameter (ZeRO-3 shards it)
            train_gb = size * (16 if full else 2.2)
            plan["grpo"]["memory_gb"] = {
                "weights_bf16": round(size * 2, 1),
                "training_states_total": round(train_gb, 1),
                "reference_model": round(size * 2, 1) if args.get("beta") else 0,
                "note": "training states shard over the training GPUs with ZeRO-3; vLLM takes its own share of each GPU",
            }
    if t.grpo.enabled:
        _memory_check(plan, t, args)
    plan["sampling_reads"] = "<run_dir>/teacher/model (the RL checkpoint, LoRA merged)"
    return plan


def _memory_check(plan: dict[str, Any], teacher, args: dict[str, Any]) -> None:
    """GRPO's memory per GPU with one micro-batch's activations (distill.planning): an error when the
    activations alone leave no room on the GPU, or the whole does not fit the recipe's teacher.hardware."""
    try:
        mem = plan_grpo(teacher, training_args=args)
    except ValueError as e:  # a model the planner has no shape for
        plan["notes"].append(f"memory per GPU not planned: {e}")
        return
    plan["grpo"]["memory_per_gpu"] = mem
    m, mb = mem["memory"], mem["micro_batch"]
    what = (f"teacher.grpo.training_args.per_device_train_batch_size {mb['sequences']} x ({mb['prompt_tokens']} prompt + "
            f"max_completion_length {mb['completion_tokens']}) tokens holds {mem['activations_gib']:.1f} GiB of activations per GPU")
    fix = "lower per_device_train_batch_size (raise gradient_accumulation_steps to keep the batch)"
    if mem["activations_gib"] + m["reserved_gib"] > m["capacity_gib"]:
        plan["errors"].append(f"{what}, more than a {m['capacity_gib']:.0f} GiB {mem['gpu']}: {fix}")
    elif not m["fits"]:
        msg = f"{what}; with the model states on {mem['gpus']} x {mem['gpu']} ({mem['strategy']}) a GPU needs {m['total_gib']:.1f} of {m['capacity_gib']:.0f} GiB"
        if mem["hardware_source"] == "teacher.hardware":
            plan["errors"].append(f"{msg}: {fix}, or train on more GPUs (teacher.hardware)")
        else:
            plan["notes"].append(f"{msg} (no teacher.hardware: one node of 8 assumed); give teacher.hardware")


def render_plan(plan: dict[str, Any]) -> str:
    lines = [f"teacher plan for recipe `{plan['recipe']}`"]
    if not plan["teacher_enabled"]:
        return "\n".join(lines + [f"  {n}" for n in plan["notes"]]) + "\n"
    size = f" (~{plan['params_b']}B parameters)" if plan.get("params_b") else ""
    lines.append(f"  base model: {plan['base_model']}{size}")
    tpl = plan["template"]
    lines.append(f"  template: {tpl['name']}, answer {tpl['answer_format'] or 'default'}, prefill_think {tpl['prefill_think']}")
    if "cold_start" in plan:
        cs = plan["cold_start"]
        lines.append(f"  1. cold-start SFT: {cs['n_examples']} examples from {cs['source']} {cs['from'] or ''}".rstrip())
        lines.append(f"     SFTConfig: {cs['sft']}; LoRA: {cs['lora']}")
    if "grpo" in plan:
        g = plan["grpo"]
        lines.append(f"  2. GRPO: {g['max_steps']} steps, group {g['group_size']}, {g['prompts_per_step_per_process']} prompts "
                     f"({g['completions_per_step_per_process']} completions) per step per process")
        lines.append(f"     lr {g['learning_rate']}, KL beta {g['kl_beta']}, clip eps {g['clip_epsilon']}, loss {g['loss_type']}, "
                     f"max completion {g['max_completion_length']} tokens, LoRA {g['lora']}, checkpoint every {g['checkpoints_every']} steps")
        lines.append("     rewards: " + ", ".join(f"{r['name']} x{r['weight']}" + (f" {r['options']}" if r.get("options") else "") for r in g["rewards"]))
        r = g["rollouts"]
        lines.append(f"     rollouts: {'vLLM ' + r['mode'] if r['use_vllm'] else 'transformers'}"
                     + (f", gpu_memory_utilization {r['gpu_memory_utilization']}, TP {r['tensor_parallel_size']}, sleep mode {r['sleep_mode']}" if r.get("mode") == "colocate" else ""))
        lines.append(f"     how: {r['how']}")
        if "memory_gb" in g:
            m = g["memory_gb"]
            lines.append(f"     memory (rough): weights {m['weights_bf16']} GB bf16, training states {m['training_states_total']} GB in all, "
                         f"reference model {m['reference_model']} GB; {m['note']}")
        if "memory_per_gpu" in g:
            p = g["memory_per_gpu"]
            lines.append(f"     memory per GPU on {p['gpus']} x {p['gpu']} ({p['strategy']}, {p['hardware_source']}): {p['memory']['total_gib']:.1f} "
                         f"of {p['memory']['capacity_gib']:.0f} GiB, of which activations {p['activations_gib']:.1f} GiB for "
                         f"{p['micro_batch_tokens']:,} tokens a micro-batch ({'fits' if p['memory']['fits'] else 'DOES NOT FIT'})")
    lines.append(f"  3. sampling reads {plan['sampling_reads']}")
    lines += [f"  note: {n}" for n in plan["notes"]]
    lines += [f"  ERROR: {e}" for e in plan["errors"]]
    return "\n".join(lines) + "\n"
