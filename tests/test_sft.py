import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from distill.config.hardware import LoraConfig
from distill.training.sft import TemplateLintError, build_sft_trainer, lint_template, train_sft

ROWS = [
    {"prompt": [{"role": "user", "content": f"What is {i} + 2?"}],
     "completion": [{"role": "assistant", "content": f"<think>\n{i} + 2 = {i + 2}\n</think>\nThe answer is \\boxed{{{i + 2}}}."}]}
    for i in range(12)
] + [
    {"prompt": [{"role": "user", "content": "Say hi."}], "completion": [{"role": "assistant", "content": "Hi!"}]}
]

# A template that strips think blocks from assistant turns, as some reasoning-model templates do.
STRIPPING = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'assistant' %}{{ m['content'].split('</think>')[-1] }}{% else %}{{ m['content'] }}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_lint_rejects_template_that_drops_think(tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    assert lint_template(tok, ROWS[:2])["rows_checked"] == 2
    with pytest.raises(TemplateLintError, match="drops '<think>'") as e:
        lint_template(tok, ROWS[:1], chat_template=STRIPPING)
    assert "<|im_start|>assistant" in str(e.value)  # the message shows the rendered text


def test_loss_covers_the_assistant_turn_only(tiny_llama, tmp_path):
    trainer, _ = build_sft_trainer(str(tiny_llama), ROWS, tmp_path / "m", lora=LoraConfig(enabled=False), training_args={"max_steps": 1})
    tok = trainer.processing_class
    ex = trainer.train_dataset[0]
    trained = [t for t, l in zip(ex["input_ids"], ex["labels"]) if l != -100]
    masked = [t for t, l in zip(ex["input_ids"], ex["labels"]) if l == -100]
    assert tok.decode(trained).startswith(ROWS[0]["completion"][0]["content"] + "<|im_end|>")
    assert "What is 0 + 2?" in tok.decode(masked) and "<think>" not in tok.decode(masked)


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_training_changes_weights_and_saves_a_loadable_model(tiny_llama, tmp_path, lora):
    out = tmp_path / "student"
    metrics = train_sft(str(tiny_llama), ROWS, out, lora=LoraConfig(enabled=lora, r=4, alpha=8),
                        training_args={"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-2})
    assert metrics["steps"] == 2 and len(metrics["loss_curve"]) == 2
    before, after = load_file(tiny_llama / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(before) == set(after)  # merged: no LoRA tensors left, same layout as the base
    changed = [k for k in before if not torch.allclose(before[k].float(), after[k].float(), atol=1e-3)]
    assert changed
    assert AutoTokenizer.from_pretrained(out).eos_token == "<|im_end|>"
