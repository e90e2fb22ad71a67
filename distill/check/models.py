"""What `distill check` reads of a model: its tokenizer (chat template, EOS) and its config, never weights.

A hub id `org/name` is looked up as `<models_dir>/<org>--<name>` when a models directory is given (the
layout of the shared offline tokenizer folders), else loaded the usual way (the local Hub cache, or the
Hub: offline, that fails with the loader's own message, which the check reports against the recipe
field that names the model). `embedded:` models resolve to their converted folder; a local path loads
as it is.

Some folders hold a config and a chat template but no usable tokenizer (DeepSeek-R1-Distill-Llama, whose
renamed special tokens have no known ids; open-r1's RoPE-300k Qwen2.5-Math config): transformers then
builds a degenerate tokenizer of a few tokens without complaint. Such a tokenizer is replaced by the
base model's (TOKENIZER_FALLBACK), keeping the folder's own chat template, and the swap is noted.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from distill.core.models import resolve_model

# A folder whose tokenizer is unusable -> the model whose tokenizer it was built from.
TOKENIZER_FALLBACK = {
    "deepseek-ai/deepseek-r1-distill-llama-8b": "meta-llama/Llama-3.1-8B",
    "deepseek-ai/deepseek-r1-distill-llama-70b": "meta-llama/Llama-3.3-70B-Instruct",
    "open-r1/qwen2.5-math-7b-rope-300k": "Qwen/Qwen2.5-Math-7B",
}
# A model without a folder of its own -> one whose tokenizer, chat template and context it shares (noted)
STAND_INS = {
    "qwen/qwen2.5-7b": "Qwen/Qwen2.5-14B",  # Qwen2.5 base: same tokenizer, template and 131,072 positions
}
MIN_VOCAB = 32  # fewer tokens than this: transformers built a placeholder (3 tokens, or 1), not the model's tokenizer
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "original/tokenizer.model", "spiece.model")


class ModelLoadError(RuntimeError):
    """A tokenizer or config that cannot be loaded; the message says what was tried."""


@dataclass
class ModelInfo:
    ref: str  # as the recipe names it
    source: str  # the folder or id it was loaded from
    tokenizer: Any
    config: Any
    notes: list[str] = field(default_factory=list)  # e.g. a tokenizer taken from the base model

    @property
    def context(self) -> int | None:
        """Positions the model was trained for (max_position_embeddings), None where the config has none."""
        cfg = getattr(self.config, "text_config", None) or self.config
        return getattr(cfg, "max_position_embeddings", None)

    @property
    def rope(self) -> str:
        cfg = getattr(self.config, "text_config", None) or self.config
        rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
        theta = rope.get("rope_theta", getattr(cfg, "rope_theta", None)) if isinstance(rope, dict) else None
        kind = rope.get("rope_type") or rope.get("type") if isinstance(rope, dict) else None
        return ", ".join(x for x in (f"RoPE base {theta:g}" if theta else "", f"{kind} scaling" if kind and kind != "default" else "") if x)


def model_source(ref: str, models_dir: str | Path | None) -> str:
    """Where `ref` loads from: `<models_dir>/<org>--<name>` for a hub id when a models directory is given."""
    if ref.startswith("embedded:"):
        return resolve_model(ref)
    if Path(ref).exists() or models_dir is None or ref.count("/") != 1:
        return ref
    folder = Path(models_dir) / ref.replace("/", "--")
    if not folder.is_dir() and ref.lower() in STAND_INS:
        folder = Path(models_dir) / STAND_INS[ref.lower()].replace("/", "--")
    if not folder.is_dir():
        raise ModelLoadError(f"{ref!r}: no folder {folder} under --models (expected <org>--<name>)")
    return str(folder)


@lru_cache(maxsize=64)
def _load(source: str) -> tuple[Any, Any]:
    # heavy: transformers reads tokenizer and config files only, no weights
    from transformers import AutoConfig, AutoTokenizer

    logging.getLogger("transformers").setLevel(logging.ERROR)  # "no tokenizer files" noise for config-only folders
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load the config of {source!r}: {str(e).splitlines()[0]}") from None
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError):  # config-only folders: the fallback below decides
        tok = None
    return tok, config


def _template_of(source: str) -> str | None:
    """The folder's own chat template, read from its files (for a folder whose tokenizer is unusable)."""
    folder = Path(source)
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        tpl = json.loads(cfg.read_text()).get("chat_template")
        return tpl if isinstance(tpl, str) else None
    return None


def load_model_info(ref: str, models_dir: str | Path | None = None) -> ModelInfo:
    """Tokenizer and config of `ref` (see the module docstring); raises ModelLoadError."""
    source = model_source(ref, models_dir)
    tok, config = _load(source)
    notes: list[str] = []
    if models_dir is not None and Path(source).name != ref.replace("/", "--") and ref.lower() in STAND_INS:
        notes.append(f"{ref}: no folder of its own; checked with {STAND_INS[ref.lower()]}'s tokenizer, template and config")
    folder = Path(source)
    no_files = folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES)
    if tok is None or len(tok) < MIN_VOCAB or no_files:
        base = TOKENIZER_FALLBACK.get(ref.lower())
        if base is None:
            raise ModelLoadError(f"{source!r} has no usable tokenizer ({'none' if tok is None else f'{len(tok)} tokens'})")
        base_tok, _ = _load(model_source(base, models_dir))
        if base_tok is None:
            raise ModelLoadError(f"{source!r} has no usable tokenizer, nor has its base {base!r}")
        tok = copy_tokenizer(base_tok)
        own = _template_of(source)
        if own:
            tok.chat_template = own
        notes.append(f"{ref}: no usable tokenizer in its folder; checked with {base}'s tokenizer and "
                     f"{'its own' if own else 'the base'} chat template")
    return ModelInfo(ref=ref, source=source, tokenizer=tok, config=config, notes=notes)


def copy_tokenizer(tok):
    """A copy whose chat_template can change without touching the cached original (shallow: a deep copy of
    a big vocabulary is slow, and the backend is only read)."""
    return copy.copy(tok)
