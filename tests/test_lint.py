"""Template lint: broken templates, built here on the tiny tokenizer, each fail with the rendered text."""

import pytest
from transformers import AutoTokenizer

from distill.training.lint import TemplateLintError, lint_rows, tokenize_like_trl
from distill.config.hardware import LoraConfig
from distill.training.sft import build_sft_trainer
from tiny_models import CHAT_TEMPLATE

REASONING = {
    "prompt": [{"role": "user", "content": "What is 2 + 2?"}],
    "completion": [{"role": "assistant", "content": "<think>\n2 + 2 = 4\n</think>\nThe answer is \\boxed{4}."}],
}
PLAIN = {"prompt": [{"role": "user", "content": "Say hi."}], "completion": [{"role": "assistant", "content": "Hi there!"}]}
EMPTY_THINK = {"prompt": [{"role": "user", "content": "Say hi."}], "completion": [{"role": "assistant", "content": "<think>\n\n</think>\n\nHi there!"}]}
SYSTEM = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 3 + 4?"}],
          "completion": [{"role": "assistant", "content": "<think>\n3 + 4 = 7\n</think>\n\\boxed{7}"}]}

ASSISTANT = "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"


def variant(assistant_block: str) -> str:
    assert ASSISTANT in CHAT_TEMPLATE
    return CHAT_TEMPLATE.replace(ASSISTANT, assistant_block)


# Reasoning templates that strip the think block from assistant turns (what R1-style templates do to history).
DROPS_THINK = variant("{% generation %}{{- message['content'].split('</think>')[-1].lstrip() + '<|im_end|>' }}{% endgeneration %}")
# Generation markers around the reasoning only: the answer and EOS are rendered but masked out of the loss.
MASKS_ANSWER = variant(
    "{% set parts = message['content'].split('</think>') %}"
    "{% generation %}{{- parts[0] + '</think>' }}{% endgeneration %}{{- parts[1:] | join('</think>') + '<|im_end|>' }}"
)
NO_EOS = variant("{% generation %}{{- message['content'] }}{% endgeneration %}")
EOS_MASKED = variant("{% generation %}{{- message['content'] }}{% endgeneration %}{{- '<|im_end|>' }}")
DROPS_ANSWER = variant("{% generation %}{{- message['content'].split('</think>')[0] + '</think><|im_end|>' }}{% endgeneration %}")
DOUBLE_BOS = "{{ bos_token }}{{ bos_token }}" + CHAT_TEMPLATE
PREFILLS_THINK = CHAT_TEMPLATE.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n<think>\\n'")


@pytest.fixture(scope="module")
def tok(tiny_llama):
    return AutoTokenizer.from_pretrained(tiny_llama)


def test_a_good_template_passes_on_every_kind_of_row(tok):
    for aol in (False, True):
        out = lint_rows(tok, [REASONING, PLAIN, SYSTEM] * 6, assistant_only_loss=aol)
        assert out["rows_checked"] == 12  # 4 of each of the 3 kinds
        assert set(out["kinds"]) == {"reasoning/no_system", "no_think/no_system", "reasoning/system"}
        assert out["stop_tokens"] == ["<|im_end|>"] and out["non_reasoning_style"] == "no_think"


@pytest.mark.parametrize("aol", [False, True], ids=["completion_only", "assistant_only"])
def test_catches_a_template_that_drops_think(tok, aol):
    with pytest.raises(TemplateLintError, match="drops '<think>'") as e:
        lint_rows(tok, [REASONING], chat_template=DROPS_THINK, assistant_only_loss=aol)
    assert "<|im_start|>assistant" in str(e.value) and "The answer is" in str(e.value)  # shows the rendered text


def test_catches_a_template_that_masks_the_answer(tok):
    with pytest.raises(TemplateLintError, match="loss mask leaves out the answer") as e:
        lint_rows(tok, [REASONING], chat_template=MASKS_ANSWER, assistant_only_loss=True)
    # the rendered text marks the trained span: the reasoning is inside, the answer outside
    msg = str(e.value)
    assert "⟦<think>\n2 + 2 = 4\n</think>⟧\nThe answer is" in msg


@pytest.mark.parametrize("aol", [False, True], ids=["completion_only", "assistant_only"])
def test_catches_a_template_that_omits_eos(tok, aol):
    with pytest.raises(TemplateLintError, match=r"EOS \('<\|im_end\|>'\) does not close the assistant turn") as e:
        lint_rows(tok, [REASONING, PLAIN], chat_template=NO_EOS, assistant_only_loss=aol)
    assert "<|im_start|>user" in str(e.value)


def test_catches_eos_rendered_but_masked(tok):
    with pytest.raises(TemplateLintError, match="masked out of the loss"):
        lint_rows(tok, [PLAIN], chat_template=EOS_MASKED, assistant_only_loss=True)


def test_catches_a_template_that_drops_the_answer(tok):
    with pytest.raises(TemplateLintError, match="alters or drops the answer"):
        lint_rows(tok, [REASONING], chat_template=DROPS_ANSWER)


def test_catches_a_trained_prompt(tok):
    with pytest.raises(TemplateLintError, match="loss covers .* token\\(s\\) of the prompt"):
        lint_rows(tok, [REASONING], completion_only_loss=False)


def test_catches_double_bos(tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.bos_token = "<|endoftext|>"
    with pytest.raises(TemplateLintError, match="double BOS"):
        lint_rows(tok, [PLAIN], chat_template=DOUBLE_BOS)
    assert lint_rows(tok, [PLAIN], chat_template="{{ bos_token }}" + CHAT_TEMPLATE)["rows_checked"] == 1


def test_eos_must_be_where_generation_stops(tok):
    # the template ends turns with <|im_end|>, but generation would stop only at <|endoftext|>
    endoftext = tok.convert_tokens_to_ids("<|endoftext|>")
    with pytest.raises(TemplateLintError, match="set the student's training_args.eos_token"):
        lint_rows(tok, [PLAIN], stop_ids={endoftext})


def test_non_reasoning_rows_use_one_convention(tok):
    with pytest.raises(TemplateLintError, match="more than one way"):
        lint_rows(tok, [PLAIN, EMPTY_THINK, REASONING])
    assert lint_rows(tok, [EMPTY_THINK, REASONING])["non_reasoning_style"] == "empty_think"


def test_prefilled_think_needs_empty_blocks(tok):
    # a template that prefills <think> (R1-Distill style): reasoning rows pass, answers without a block do not
    assert lint_rows(tok, [REASONING, EMPTY_THINK], chat_template=PREFILLS_THINK)["rows_checked"] == 2
    with pytest.raises(TemplateLintError, match="prefills '<think>'"):
        lint_rows(tok, [PLAIN], chat_template=PREFILLS_THINK)


def test_truncation_is_reported(tok):
    out = lint_rows(tok, [REASONING], max_length=8)
    assert out["truncated"] == 1 and "exceed max_length" in out["warnings"][0]


def test_lint_masks_exactly_what_the_trainer_trains(tiny_llama, tmp_path):
    """The lint's ids and labels are the ones TRL's SFTTrainer builds for the same row."""
    rows = [REASONING, PLAIN, SYSTEM]
    trainer, lint = build_sft_trainer(str(tiny_llama), rows, tmp_path / "m", lora=LoraConfig(enabled=False), training_args={"max_steps": 1})
    assert lint["rows_checked"] == 3
    for i, row in enumerate(rows):
        mine = tokenize_like_trl(trainer.processing_class, row)
        ex = trainer.train_dataset[i]
        assert mine.input_ids == ex["input_ids"] and mine.labels == ex["labels"]


def test_sft_refuses_to_train_with_a_broken_template(tiny_llama, tmp_path):
    with pytest.raises(TemplateLintError, match="drops '<think>'"):
        build_sft_trainer(str(tiny_llama), [REASONING, PLAIN], tmp_path / "m", lora=LoraConfig(enabled=False),
                          training_args={"max_steps": 1}, chat_template=DROPS_THINK)
