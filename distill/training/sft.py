"""Supervised fine-tuning with TRL's SFTTrainer (LoRA or full), and the template lint that precedes it.

Rows are TRL's conversational prompt/completion format:
  prompt:     [{"role": "user", "content": ...}]
  completion: [{"role": "assistant", "content": "<think>…</think>\\nanswer"}]
so the loss covers the completion (the assistant turn) only, and the chat template renders the
`<think>` block inside the assistant turn untouched.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from distill.config.hardware import LoraConfig
from distill.config.students import RopeSettings
from distill.core.progress import trainer_console
from distill.training.lint import TemplateLintError, lint_rows, stop_token_ids  # noqa: F401  (TemplateLintError re-exported)
from distill.training.common import base_args, checkpoint_step, last_checkpoint, log_history, model_init_kwargs, peft_config, save_trained
from distill.training.student import resolve_chat_template, rope_init_kwargs, stamp_eos, turn_end_token

log = logging.getLogger(__name__)


def lint_template(tokenizer, rows: list[dict], chat_template: str | None = None, **kwargs) -> dict[str, Any]:
    """Render and tokenize a sample of every kind of row as TRL will; raise TemplateLintError (distill.training.lint)."""
    return lint_rows(tokenizer, rows, chat_template=chat_template, **kwargs)


def build_sft_trainer(
    model_path: str,
    rows: list[dict],
    out_dir: Path,
    *,
    lora: LoraConfig,
    training_args: dict[str, Any],
    defaults: dict[str, Any] | None = None,
    seed: int = 0,
    chat_template: str | None = None,
    rope: RopeSettings | None = None,
):
    """Lint the template on a sample of each kind of row, then build TRL's SFTTrainer.

    `chat_template` is a student's setting (Jinja, a file, a folder or a model to borrow it from:
    distill.training.student). Unless the training args name an `eos_token`, the token that ends an
    assistant turn in the template becomes the EOS (Qwen2.5 base: `<|im_end|>`, not `<|endoftext|>`).
    `rope` sets the RoPE base and context length when the model loads."""
    # heavy: datasets, transformers and TRL load only when a model trains
    import datasets
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    chat_template = resolve_chat_template(chat_template)
    if chat_template:
        tokenizer.chat_template = chat_template
    if not tokenizer.chat_template and rows and not isinstance(rows[0]["prompt"], str):
        raise ValueError(f"{model_path} has no chat template: set the student's chat_template (e.g. a model to borrow it from)")
    args = base_args(Path(out_dir).parent / f".{Path(out_dir).name}.checkpoints", seed)
    args.update({"per_device_train_batch_size": 8, "learning_rate": 2e-4, "num_train_epochs": 1, "max_length": 512})
    args.update(defaults or {})
    args.update(training_args)
    args["completion_only_loss"] = True  # the loss covers the assistant turn only, whatever the recipe says
    # dtype (and QLoRA's quantisation) first; the recipe's own keys (attn_implementation, ...) win
    args["model_init_kwargs"] = (model_init_kwargs() | quantization_kwargs(lora) | rope_init_kwargs(model_path, rope)
                                 | dict(args.get("model_init_kwargs") or {}))
    turn_end = turn_end_token(tokenizer) if tokenizer.chat_template else None
    if not args.get("eos_token") and turn_end and turn_end != tokenizer.eos_token:
        log.info("sft: the template ends assistant turns with %s, not EOS %s: training with eos_token %s", turn_end, tokenizer.eos_token, turn_end)
        args["eos_token"] = turn_end
    if args.get("eos_token"):  # SFTTrainer sets it on the tokenizer; lint what will be trained
        tokenizer.eos_token = args["eos_token"]
    # before anything trains: every kind of row, rendered and masked as the trainer will
    if rows and isinstance(rows[0]["prompt"], str):
        # plain-text rows (a template rendered by the caller, e.g. R1-Zero's): no chat template to lint
        lint = {"rows_checked": 0, "plain_text": True}
    else:
        lint = lint_template(
            tokenizer, rows, completion_only_loss=True, assistant_only_loss=bool(args.get("assistant_only_loss")),
            max_length=args.get("max_length"), stop_ids=stop_token_ids(tokenizer, model_path), seed=seed,
        )
    lint["eos_token"] = tokenizer.eos_token
    trainer = SFTTrainer(
        model=model_path,
        args=SFTConfig(**args),
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config(lora),
    )
    trainer_console(trainer)  # its bar with ETA and the loss, not one metrics dict per step
    return trainer, lint


def quantization_kwargs(lora: LoraConfig) -> dict[str, Any]:
    """QLoRA: load the frozen base in 4-bit NF4 (bitsandbytes, CUDA only); nothing otherwise."""
    if not lora.load_in_4bit:
        return {}
    import torch  # heavy: QLoRA only

    if not torch.cuda.is_available():
        raise ValueError("lora.load_in_4bit (QLoRA) needs a CUDA GPU: bitsandbytes' 4-bit kernels do not run on CPU")
    try:
        import bitsandbytes  # noqa: F401  (heavy, optional: only to check it is installed)
    except ImportError:
        raise ValueError("lora.load_in_4bit (QLoRA) needs the bitsandbytes package: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig  # heavy: QLoRA only

    # bf16 storage lets FSDP / ZeRO-3 shard the packed 4-bit weights like any bf16 tensor
    return {"quantization_config": BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.bfloat16,
    )}


def train_sft(model_path: str, rows: list[dict], out_dir: Path, **kwargs) -> dict[str, Any]:
    """Train on prompt/completion rows, save the merged model to `out_dir`; return metrics.

    With `save_strategy` set in the training args, a rerun after a kill resumes from the newest complete
    checkpoint (weights, optimizer, scheduler, RNG and data order), not from step 0.
    """
    trainer, lint = build_sft_trainer(model_path, rows, out_dir, **kwargs)
    resume = last_checkpoint(trainer.args.output_dir)
    if resume:
        log.info("sft: resuming from %s", resume)
    from transformers import TrainerCallback  # heavy: only when a model trains

    class StepCounter(TrainerCallback):  # optimizer steps this process actually runs
        steps = 0

        def on_step_end(self, args, state, control, **kw):
            self.steps += 1

    counter = StepCounter()
    trainer.add_callback(counter)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - t0
    stamp_eos(trainer.model, trainer.processing_class)  # the turn-ending EOS in config and generation_config
    save_trained(trainer, model_path, Path(out_dir))  # gathers ZeRO-3/FSDP shards when several processes train
    history = log_history(trainer)
    return {
        "train_seconds": round(seconds, 1),
        "steps": trainer.state.global_step,
        "resumed_from_step": checkpoint_step(resume) if resume else None,
        "steps_run": counter.steps,  # optimizer steps taken by this process (fewer than `steps` after a resume)
        "train_loss": result.training_loss,
        "loss_curve": [h["loss"] for h in history if "loss" in h],
        "rows": len(rows),
        "lint": lint,
    }
