"""The tiny test models load, generate, and keep <think> text intact through their tokenizer."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tiny_models import build_tokenizer

ARCHS = {"tiny_llama": "LlamaForCausalLM", "tiny_qwen2": "Qwen2ForCausalLM"}

CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is 12 + 7? 请回答。"},
    {"role": "assistant", "content": "<think>\n12 + 7 = 19\n</think>\n\nThe answer is \\boxed{19}. Café"},
]
ASSISTANT_TURN = "<|im_start|>assistant\n" + CHAT[2]["content"] + "<|im_end|>\n"


@pytest.fixture(params=sorted(ARCHS))
def model_dir(request):
    return request.getfixturevalue(request.param), ARCHS[request.param]


def test_files_and_config(model_dir):
    path, arch_cls = model_dir
    assert (path / "model.safetensors").is_file()
    assert (path / "tokenizer.json").is_file()
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == [arch_cls]
    assert config["tie_word_embeddings"] is True
    assert config["num_hidden_layers"] == 2 and config["num_key_value_heads"] == 2
    assert config["max_position_embeddings"] == 1024


def test_tokenizer_special_tokens(model_dir):
    path, _ = model_dir
    tok = AutoTokenizer.from_pretrained(path)
    assert 1000 <= len(tok) <= 2100
    assert tok.eos_token == "<|im_end|>"
    assert tok.pad_token == "<|endoftext|>"
    assert tok.bos_token is None
    for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>"):
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids) == [t], t
    # <think> tags are plain added tokens: skip_special_tokens drops ChatML markers but keeps them.
    ids = tok("<|im_start|>assistant\n<think>a</think>b<|im_end|>", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == "assistant\n<think>a</think>b"


def test_chat_template_keeps_think(model_dir):
    path, _ = model_dir
    tok = AutoTokenizer.from_pretrained(path)
    text = tok.apply_chat_template(CHAT, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 12 + 7? 请回答。<|im_end|>\n" + ASSISTANT_TURN
    )
    prompt = tok.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert text.startswith(prompt)
    # Encode -> decode is lossless, <think> included.
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text


def test_assistant_mask_covers_assistant_turn(model_dir):
    # The template's {% generation %} markers (needed by TRL's assistant_only_loss) cover the reply + <|im_end|>.
    path, _ = model_dir
    tok = AutoTokenizer.from_pretrained(path)
    out = tok.apply_chat_template(CHAT, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tok.decode(masked) == CHAT[2]["content"] + "<|im_end|>"


def test_ids_identical_to_built_tokenizer(model_dir):
    path, _ = model_dir
    built = build_tokenizer(seed=0)
    reloaded = AutoTokenizer.from_pretrained(path)
    assert len(built) == len(reloaded)
    assert built.get_vocab() == reloaded.get_vocab()
    texts = [
        built.apply_chat_template(CHAT, tokenize=False),
        "What is 345 + 678? <think>345 + 678 = 1023</think> The answer is \\boxed{1023}.",
        "今天天气很好。Ｆｕｌｌｗｉｄｔｈ and e\u0301 (combining accent), tabs\tand\n\nnewlines  ",
    ]
    for text in texts:
        a = built(text, add_special_tokens=False)["input_ids"]
        b = reloaded(text, add_special_tokens=False)["input_ids"]
        assert a == b, text
        assert reloaded.decode(b) == built.decode(a)


def test_model_loads_and_generates(model_dir):
    path, arch_cls = model_dir
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert type(model).__name__ == arch_cls
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert model.config.vocab_size == len(tok)
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    inputs = tok.apply_chat_template(CHAT[:2], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        again = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :]
    assert 1 <= len(new) <= 5
    assert torch.equal(out, again)
    assert isinstance(tok.decode(new), str)


def test_build_is_deterministic(tmp_path, tiny_llama):
    from safetensors.torch import load_file

    from tiny_models import build_tiny_model

    other = build_tiny_model(tmp_path / "again", arch="llama", seed=0)
    a, b = load_file(tiny_llama / "model.safetensors"), load_file(other / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tiny_llama / "tokenizer.json").read_text() == (other / "tokenizer.json").read_text()
