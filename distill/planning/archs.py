"""Model shapes for the planner: a table of the named architectures (the six R1 students, the usual
teachers) and a reader for a local directory's config.json. Nothing here loads weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Arch:
    """The shape of a decoder-only transformer: what memory and FLOPs are computed from."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    head_dim: int | None = None
    qkv_bias: bool = False
    # Mixture of experts (DeepSeek-V3/R1): total and active parameters given directly, and the KV cache per
    # token (MLA caches a 512+64 latent per layer instead of keys and values per head)
    total_params: float | None = None
    active_params: float | None = None
    kv_bytes_per_token: float | None = None
    weight_bytes: float = 2.0  # as served: bf16 = 2, FP8 checkpoints = 1

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(d_in, d_out) of each adapted matrix in one block, by its usual module name."""
        h, q, kv, i = self.hidden, self.heads * self.hd, self.kv_heads * self.hd, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def block_params(self) -> int:
        n = sum(a * b for a, b in self.linear_shapes().values()) + 2 * self.hidden
        if self.qkv_bias:
            n += (self.heads + 2 * self.kv_heads) * self.hd
        return n

    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def params(self) -> float:
        if self.total_params:
            return self.total_params
        return self.layers * self.block_params() + self.embedding_params() + self.hidden

    def active(self) -> float:
        return self.active_params or self.params()

    def kv_per_token(self) -> float:
        """KV-cache bytes per token in bf16, all layers."""
        if self.kv_bytes_per_token:
            return self.kv_bytes_per_token
        return 2 * self.layers * self.kv_heads * self.hd * 2

    def lora_params(self, r: int, targets: list[str] | str) -> int:
        shapes = self.linear_shapes()
        names = list(shapes) if targets == "all-linear" else [t for t in targets if t in shapes]
        if targets != "all-linear" and not names:
            raise ValueError(f"lora.target_modules {targets} names none of {', '.join(shapes)}")
        return self.layers * sum(r * (shapes[n][0] + shapes[n][1]) for n in names)


# From each model's config.json (hidden_size, num_hidden_layers, intermediate_size, num_attention_heads,
# num_key_value_heads, vocab_size, tie_word_embeddings); DeepSeek-R1 from its model card (671B, 37B active).
ARCHS: dict[str, Arch] = {
    a.name.lower(): a
    for a in (
        Arch("Qwen2.5-Math-1.5B", 28, 1536, 8960, 12, 2, 151936, True, qkv_bias=True),
        Arch("Qwen2.5-Math-7B", 28, 3584, 18944, 28, 4, 152064, False, qkv_bias=True),
        Arch("Qwen2.5-7B", 28, 3584, 18944, 28, 4, 152064, False, qkv_bias=True),
        Arch("Qwen2.5-14B", 48, 5120, 13824, 40, 8, 152064, False, qkv_bias=True),
        Arch("Qwen2.5-32B", 64, 5120, 27648, 40, 8, 152064, False, qkv_bias=True),
        Arch("Qwen2.5-32B-Instruct", 64, 5120, 27648, 40, 8, 152064, False, qkv_bias=True),
        Arch("QwQ-32B", 64, 5120, 27648, 40, 8, 152064, False, qkv_bias=True),
        Arch("Llama-3.1-8B", 32, 4096, 14336, 32, 8, 128256, False),
        Arch("Llama-3.1-8B-Instruct", 32, 4096, 14336, 32, 8, 128256, False),
        Arch("Llama-3.3-70B-Instruct", 80, 8192, 28672, 64, 8, 128256, False),
        Arch("SmolLM2-135M-Instruct", 30, 576, 1536, 9, 3, 49152, True),
        Arch("DeepSeek-R1", 61, 7168, 18432, 128, 128, 129280, False, head_dim=128,
             total_params=671e9, active_params=37e9, kv_bytes_per_token=61 * (512 + 64) * 2, weight_bytes=1.0),
    )
}
ARCH_ALIASES = {"embedded:smollm2-135m-instruct": "smollm2-135m-instruct", "deepseek-r1-0528": "deepseek-r1"}
for _distill in ("Qwen-1.5B", "Qwen-7B", "Qwen-14B", "Qwen-32B", "Llama-8B", "Llama-70B"):  # the R1 students' own names
    _base = {"Qwen-1.5B": "qwen2.5-math-1.5b", "Qwen-7B": "qwen2.5-math-7b", "Qwen-14B": "qwen2.5-14b",
             "Qwen-32B": "qwen2.5-32b", "Llama-8B": "llama-3.1-8b", "Llama-70B": "llama-3.3-70b-instruct"}[_distill]
    ARCH_ALIASES[f"deepseek-r1-distill-{_distill.lower()}"] = _base


def arch_for(model: str) -> Arch:
    """The shape of `model`: a local directory's config.json, else the table by hub name."""
    path = Path(model)
    if (path / "config.json").is_file():
        return arch_from_config(path / "config.json")
    key = model.strip().lower()
    key = ARCH_ALIASES.get(key, key)
    key = ARCH_ALIASES.get(key.rsplit("/", 1)[-1], key.rsplit("/", 1)[-1])
    if key not in ARCHS:
        raise ValueError(
            f"unknown model {model!r}: give a local directory with a config.json, or one of "
            f"{', '.join(a.name for a in ARCHS.values())}"
        )
    return ARCHS[key]


def arch_from_config(path: Path) -> Arch:
    cfg = json.loads(Path(path).read_text())
    cfg = cfg.get("text_config", cfg)
    try:
        heads = cfg["num_attention_heads"]
        return Arch(
            name=cfg.get("_name_or_path") or Path(path).parent.name,
            layers=cfg["num_hidden_layers"],
            hidden=cfg["hidden_size"],
            intermediate=cfg["intermediate_size"],
            heads=heads,
            kv_heads=cfg.get("num_key_value_heads") or heads,
            vocab=cfg["vocab_size"],
            tied=bool(cfg.get("tie_word_embeddings", False)),
            head_dim=cfg.get("head_dim"),
            qkv_bias=bool(cfg.get("attention_bias", cfg.get("model_type") == "qwen2")),
        )
    except KeyError as e:
        raise ValueError(f"{path}: config.json lacks {e.args[0]!r}, which the planner needs") from None
