"""The merge stage's section: non-reasoning sources, the token mix, and the generator for their answers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from distill.config.base import Section, duplicates
from distill.config.sampling import OpenAISettings, VLLMSettings


class SourceFields(Section):
    """Which columns of a source hold what (a `datasets` dataset or a local file)."""

    prompt: str = "prompt"
    response: str = "response"
    category: str = "category"  # used when the source sets no `category`; missing: "general"
    system: str | None = None  # a per-row system prompt
    id: str = "id"  # missing: a content id
    messages: str | None = None  # a chat column (list of {role, content}) instead of prompt/response


class MergeSource(Section):
    """One non-reasoning source (distill.mix.nonreasoning): rows of (prompt, response) in a category.

    kind `file`: a local JSONL/parquet; `hf`: `datasets.load_dataset(path, hf_config, split=split)`;
    `self_cognition`: questions about the assistant answered from templates with the identity's name and
    maker (no path). `generate: true` takes only the prompts and has `merge.generator` write the answers.
    """

    path: str | None = None
    kind: Literal["file", "hf", "self_cognition"] = "file"
    name: str | None = None  # its name in the mix table and weights; default: the path (or the kind)
    hf_config: str | None = None
    split: str = "train"
    category: str | None = None  # every row in this category; None: the `fields.category` column
    fields: SourceFields = SourceFields()
    max_rows: int | None = Field(None, ge=1)  # read at most this many rows (after a seeded shuffle)
    generate: bool = False

    @model_validator(mode="after")
    def _path_needed(self) -> "MergeSource":
        if self.kind != "self_cognition" and not self.path:
            raise ValueError(f"merge source of kind {self.kind!r} needs a path")
        return self

    def label(self) -> str:
        return self.name or (f"hf:{self.path}" if self.kind == "hf" else self.path or self.kind)


class MixWeights(Section):
    """Relative token weights. Empty: as available (natural shares). Non-empty: every category (source)
    with rows must be listed; weight 0 drops it (each row recorded with its reason)."""

    categories: dict[str, float] = Field(default_factory=dict)
    sources: dict[str, float] = Field(default_factory=dict)

    @field_validator("categories", "sources")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(k for k, w in v.items() if w < 0)
        if bad:
            raise ValueError(f"negative weight for {', '.join(bad)}")
        return v


class KindWeights(Section):
    reasoning: MixWeights = MixWeights()
    non_reasoning: MixWeights = MixWeights()


class IdentityConfig(Section):
    """Who the student says it is, in self-cognition answers."""

    name: str | None = None  # None: the first student's name
    maker: str = "the r1-distill project"


class GeneratorConfig(Section):
    """Writes the answers of `generate: true` sources through the sampling engines (n = 1 per prompt).
    A think block in an answer is stripped: non-reasoning rows carry none."""

    model: str | None = None  # a path, hub id, embedded:..., or "teacher" (the pipeline's teacher)
    engine: Literal["vllm", "openai", "transformers"] = "vllm"
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1)
    seed: int = 0
    system_prompt: str | None = None
    chat_template: str | None = None
    shard_size: int = Field(256, ge=1)
    vllm: VLLMSettings = VLLMSettings()
    openai: OpenAISettings = OpenAISettings()


class MergeConfig(Section):
    """Reasoning traces + non-reasoning sources, mixed by token budget (distill.mix.merge)."""

    non_reasoning: list[MergeSource] = Field(
        default_factory=lambda: [MergeSource(path="data/non_reasoning.jsonl")]
    )
    # Token share of non-reasoning rows in the merged set. R1's ~200k of ~800k is a share of SAMPLES (3:1), which
    # by tokens is only a few percent (README, merge).
    non_reasoning_fraction: float = Field(0.25, ge=0, lt=1)
    # None: every reasoning token once (reweighted across categories/sources), non-reasoning sized to the
    # fraction; a number: both sides resampled to total_tokens.
    total_tokens: int | None = Field(None, ge=1)
    # A bucket (kind, category, source) is upsampled to at most this many times its tokens; beyond it rows are not
    # made and the mix reports the shortfall (48 bundled rows against a 600k-trace set would repeat ~10^5 times).
    # None: no cap. Default 4 (left out of the dump, and so of the stage hashes, at 4).
    max_repeat: int | None = Field(4, ge=1, exclude_if=lambda v: v == 4)
    weights: KindWeights = KindWeights()
    count: Literal["completion", "sequence"] = "completion"  # trained tokens, or the whole rendered row
    max_tokens: int | None = Field(None, ge=1)  # longer rows (rendered) are dropped: SFT would cut their answer
    # How non-reasoning answers look: `absent` (no think block), `empty` (`<think>\n\n</think>\n\n`), or
    # `auto`: empty when the student's template prefills `<think>` in its generation prompt, else absent.
    think: Literal["auto", "absent", "empty"] = "auto"
    identity: IdentityConfig = IdentityConfig()
    generator: GeneratorConfig = GeneratorConfig()
    seed: int = 0

    @model_validator(mode="after")
    def _generator_needed(self) -> "MergeConfig":
        gen = [s.label() for s in self.non_reasoning if s.generate]
        if gen and not self.generator.model:
            raise ValueError(f"merge.generator.model is required: source(s) {', '.join(gen)} have generate: true")
        dup = duplicates(s.label() for s in self.non_reasoning)
        if dup:
            raise ValueError(f"duplicate non-reasoning source name(s) {', '.join(dup)}: give each a `name`")
        return self
