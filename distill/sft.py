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

from distill.recipe import LoraConfig
from distill.schema import THINK_CLOSE, THINK_OPEN
from distill.training import base_args, log_history, model_init_kwargs, peft_config, save_merged

log = logging.getLogger(__name__)


class TemplateLintError(ValueError):
    """The chat template would train the model on something other than what the traces say."""


def lint_template(tokenizer, rows: list[dict], chat_template: str | None = None) -> dict[str, Any]:
    """Render rows with the template and check think tags, EOS and the prompt/completion boundary."""
    checked = 0
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True, chat_template=chat_template)
        full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False, chat_template=chat_template)
        content = row["completion"][0]["content"]
        if not full.startswith(prompt):
            raise TemplateLintError(
                "the rendered prompt is not a prefix of the rendered conversation, so the loss mask would "
                f"cut in the wrong place.\n--- prompt ---\n{prompt}\n--- conversation ---\n{full}"
            )
        tail = full[len(prompt):]
        for tag in (THINK_OPEN, THINK_CLOSE):
            if tag in content and tag not in tail:
                raise TemplateLintError(f"the chat template drops {tag!r} from the assistant turn:\n{full}")
        if content.strip() and content.strip() not in tail:
            raise TemplateLintError(f"the assistant turn is altered by the chat template:\n{full}")
        eos = tokenizer.eos_token
        if eos and eos not in tail:
            raise TemplateLintError(f"EOS {eos!r} does not close the assistant turn:\n{full}")
        bos = tokenizer.bos_token
        if bos and bos != eos and full.startswith(bos + bos):
            raise TemplateLintError(f"double BOS at the start of:\n{full[:200]}")
        checked += 1
    return {"rows_checked": checked}


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
):
    """Lint the template on a sample of each kind of row, then build TRL's SFTTrainer."""
    import datasets
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if chat_template:
        tokenizer.chat_template = chat_template
    reasoning = [r for r in rows if THINK_OPEN in r["completion"][0]["content"]]
    plain = [r for r in rows if THINK_OPEN not in r["completion"][0]["content"]]
    lint = lint_template(tokenizer, reasoning[:4] + plain[:4])

    args = base_args(Path(out_dir).parent / f".{Path(out_dir).name}.checkpoints", seed)
    args.update({"per_device_train_batch_size": 8, "learning_rate": 2e-4, "num_train_epochs": 1, "max_length": 512})
    args.update(defaults or {})
    args.update(training_args)
    args["completion_only_loss"] = True  # the loss covers the assistant turn only, whatever the recipe says
    args.setdefault("model_init_kwargs", model_init_kwargs())
    trainer = SFTTrainer(
        model=model_path,
        args=SFTConfig(**args),
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config(lora),
    )
    return trainer, lint


def train_sft(model_path: str, rows: list[dict], out_dir: Path, **kwargs) -> dict[str, Any]:
    """Train on prompt/completion rows, save the merged model to `out_dir`; return metrics."""
    trainer, lint = build_sft_trainer(model_path, rows, out_dir, **kwargs)
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    save_merged(trainer.model, trainer.processing_class, Path(out_dir))
    history = log_history(trainer)
    return {
        "train_seconds": round(seconds, 1),
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "loss_curve": [h["loss"] for h in history if "loss" in h],
        "rows": len(rows),
        "lint": lint,
    }
