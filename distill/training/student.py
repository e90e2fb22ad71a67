"""What a student needs besides its weights before SFT: a chat template, the token that ends its turn, and
its position settings (RoPE) for traces longer than its pretraining context.

- `students[].chat_template` (resolve_chat_template): Jinja text, a file (`.jinja`, or a
  `tokenizer_config.json` holding `chat_template`), a model folder, or a model reference (hub id,
  `embedded:...`) whose tokenizer's template is borrowed. A base model without a template
  (Llama-3.1-8B) gets one this way, e.g. `meta-llama/Llama-3.3-70B-Instruct`.
- The turn-ending token (turn_end_token): what the template puts after an assistant message. Qwen2.5 base
  models end turns with `<|im_end|>` while their `eos_token` is `<|endoftext|>`; trained on the template,
  the student writes `<|im_end|>` and, unless that is its EOS, never stops. SFT sets TRL's `eos_token`
  to it (TRL then writes it into the model's config and generation_config as well).
- `students[].rope` (rope_init_kwargs): RoPE base and context length applied when the model loads for
  SFT (open-r1 trains Qwen2.5-Math, 4,096 positions at base 10k, as a 32k / 300k variant).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.config.students import RopeSettings
from distill.core.models import resolve_model

_PROBE_ANSWER = "PROBE_ANSWER_42"  # no whitespace: some templates trim the content


def _is_jinja(value: str) -> bool:
    return "{%" in value or "{{" in value


def _template_of_folder(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"  # transformers 5 saves the template beside the config
    if jinja.is_file():
        return jinja.read_text()
    config = folder / "tokenizer_config.json"
    if config.is_file():
        return _template_of_config(config)
    return None


def _template_of_config(path: Path) -> str | None:
    template = json.loads(path.read_text()).get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return template


def resolve_chat_template(value: str | None, *, models_dir: str | Path | None = None, field: str = "students[].chat_template") -> str | None:
    """The Jinja text a `chat_template` setting names (None stays None: the model's own template).

    `models_dir` maps hub ids to local `<org>--<name>` folders (the layout of a tokenizer mirror)."""
    if value is None or _is_jinja(value):
        return value
    path = Path(value).expanduser()
    if models_dir is not None and "/" in value and not path.exists():
        local = Path(models_dir) / value.replace("/", "--")
        if local.is_dir():
            path = local
    template: str | None
    if path.is_file():
        template = _template_of_config(path) if path.suffix == ".json" else path.read_text()
    elif path.is_dir():
        template = _template_of_folder(path)
    elif value.endswith((".jinja", ".j2", ".json")):
        raise ValueError(f"{field}: file {value!r} does not exist")
    else:
        try:
            from transformers import AutoTokenizer  # heavy: only for a template borrowed from another model

            template = AutoTokenizer.from_pretrained(resolve_model(value)).chat_template
        except (OSError, ValueError) as e:
            raise ValueError(f"{field}: {value!r} is neither Jinja text, a file, a folder nor a loadable model ({e})") from None
    if not template:
        raise ValueError(f"{field}: {value!r} holds no chat template")
    return template


def turn_end_token(tokenizer, chat_template: str | None = None) -> str | None:
    """The special token the chat template writes right after an assistant message ("<|im_end|>",
    "<|eot_id|>", ...); None when the template ends turns with plain text or there is no template."""
    if not (chat_template or getattr(tokenizer, "chat_template", None)):
        return None
    msgs = [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": _PROBE_ANSWER}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False, chat_template=chat_template)
    if _PROBE_ANSWER not in text:
        return None
    tail = text[text.rindex(_PROBE_ANSWER) + len(_PROBE_ANSWER):].lstrip()
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
    if not ids:
        return None
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return tokenizer.convert_ids_to_tokens(ids[0]) if ids[0] in special else None


def rope_init_kwargs(model_path: str, rope: RopeSettings | None) -> dict[str, Any]:
    """`from_pretrained` keyword arguments that set the student's RoPE base and context length.

    transformers 5 keeps the base in `config.rope_parameters` and silently ignores a `rope_theta` keyword,
    so the base goes into a copy of the model's own rope_parameters (rope_type and scaling kept)."""
    if rope is None:
        return {}
    from transformers import AutoConfig  # heavy: only when a student sets rope

    config = AutoConfig.from_pretrained(model_path)
    out: dict[str, Any] = {}
    if rope.max_position_embeddings is not None:
        out["max_position_embeddings"] = rope.max_position_embeddings
    if rope.theta is not None:
        params = getattr(config, "rope_parameters", None)
        if params is not None or not hasattr(config, "rope_theta"):
            out["rope_parameters"] = {"rope_type": "default", **(params or {}), "rope_theta": float(rope.theta)}
        else:  # transformers 4.x: a plain attribute
            out["rope_theta"] = float(rope.theta)
    return out


def stamp_eos(model, tokenizer) -> None:
    """Make the model stop where the tokenizer's EOS is: its config's eos_token_id, and the EOS first among
    the generation config's (vLLM and transformers stop at any of those)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        return
    model.config.eos_token_id = eos
    gen = getattr(model, "generation_config", None)
    if gen is None:
        return
    ids = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id] if gen.eos_token_id is not None else []
    if eos not in ids:
        gen.eos_token_id = [eos, *ids]
