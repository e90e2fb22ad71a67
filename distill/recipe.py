"""The recipe: one validated object for the whole pipeline, loaded from YAML with key=value overrides.

Every section is a pydantic model with `extra="forbid"`, so a misspelt key fails at load time, before
any model loads, with the file and the dotted field in the message. Trainer knobs are not re-declared:
`training_args` sections are passed to TRL's own config classes (`SFTConfig`, `GRPOConfig`) and their
keys are checked against those classes' fields.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the field."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_trainer_keys(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """Reject keys that TRL's config class for `kind` does not have (a typo would be silently ignored)."""
    if not args:
        return args
    import trl  # imported lazily: only recipes that set training_args pay for it

    cls = {"sft": trl.SFTConfig, "grpo": trl.GRPOConfig}[kind]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    return args


class LoraConfig(Section):
    enabled: bool = True
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class PromptsConfig(Section):
    """Where prompts come from. `demo_arithmetic` generates verifiable problems deterministically;
    `file` reads JSONL/parquet with at least `prompt` and `answer`; `hf` loads a `datasets` source."""

    source: Literal["demo_arithmetic", "file", "hf"] = "demo_arithmetic"
    path: str | None = None  # file: a JSONL or parquet file; hf: a dataset name
    hf_config: str | None = None
    split: str = "train"
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    n_train: int = Field(64, ge=1)
    n_eval: int = Field(32, ge=0)
    seed: int = 0
    system_prompt: str | None = None

    @model_validator(mode="after")
    def _path_needed(self) -> "PromptsConfig":
        if self.source in ("file", "hf") and not self.path:
            raise ValueError(f"prompts.path is required when prompts.source is {self.source!r}")
        return self


class RewardSpec(Section):
    name: Literal["accuracy", "format"]
    weight: float = 1.0


class ColdStartConfig(Section):
    """A short SFT on readable `<think>` traces before RL (the R1 recipe); off for R1-Zero."""

    enabled: bool = True
    source: Literal["demo_arithmetic", "file"] = "demo_arithmetic"
    path: str | None = None
    n_examples: int = Field(160, ge=1)
    lora: LoraConfig = LoraConfig()
    training_args: dict[str, Any] = Field(default_factory=dict)

    _check = field_validator("training_args")(lambda v: _check_trainer_keys("sft", v))


class GRPOSection(Section):
    enabled: bool = True
    lora: LoraConfig = LoraConfig()
    rewards: list[RewardSpec] = Field(
        default_factory=lambda: [RewardSpec(name="accuracy", weight=1.0), RewardSpec(name="format", weight=0.5)]
    )
    training_args: dict[str, Any] = Field(default_factory=dict)

    _check = field_validator("training_args")(lambda v: _check_trainer_keys("grpo", v))

    @field_validator("rewards")
    @classmethod
    def _rewards_nonempty(cls, v: list[RewardSpec]) -> list[RewardSpec]:
        if not v:
            raise ValueError("at least one reward is needed")
        return v


class TeacherConfig(Section):
    """`enabled: false` uses `model` as the teacher as-is (the common production case)."""

    enabled: bool = True
    model: str = EMBEDDED_MODEL
    cold_start: ColdStartConfig = ColdStartConfig()
    grpo: GRPOSection = GRPOSection()


class VLLMSettings(Section):
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    data_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = None
    dtype: str = "auto"
    enforce_eager: bool = False
    kv_cache_space_gb: int | None = Field(None, ge=1)  # CPU only (VLLM_CPU_KVCACHE_SPACE, whole GiB)
    max_num_seqs: int | None = None


class SamplingConfig(Section):
    engine: Literal["vllm", "transformers"] = "vllm"
    n: int = Field(4, ge=1)
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    seed: int = 0
    shard_size: int = Field(64, ge=1)  # prompts per shard
    chat_template: str | None = None  # a Jinja template overriding the model's own
    vllm: VLLMSettings = VLLMSettings()


class VerifyConfig(Section):
    verifier: Literal["math"] = "math"


class CurateConfig(Section):
    require_think: bool = True  # reasoning tasks must have exactly one non-empty think block
    reject_truncated: bool = True
    reject_incorrect: bool = True  # rows whose verdict is false; unverifiable rows are rejected too
    min_target_lang_share: float = Field(0.9, ge=0, le=1)
    # Below this target-language share a trace is "wrong_language" (mostly another language); from it
    # up to min_target_lang_share, "language_mixing". The lower of the two is used if they cross.
    wrong_language_share: float = Field(0.5, ge=0, le=1)
    # More switches than this between target-script and foreign-script sentences: "language_mixing".
    # None turns the check off (the share check still applies).
    max_lang_switches: int | None = Field(2, ge=0)
    max_paragraph_chars: int = Field(3000, ge=1)
    max_completion_tokens: int | None = None


class MergeSource(Section):
    path: str  # JSONL/parquet with `prompt` and `response` (and optional `category`), or a dataset name
    kind: Literal["file", "hf"] = "file"
    split: str = "train"
    category: str | None = None


class MergeConfig(Section):
    non_reasoning: list[MergeSource] = Field(
        default_factory=lambda: [MergeSource(path="data/non_reasoning.jsonl")]
    )
    # Share of non-reasoning rows in the merged set (R1: ~200k of ~800k).
    non_reasoning_fraction: float = Field(0.25, ge=0, lt=1)
    seed: int = 0


class StudentConfig(Section):
    name: str
    model: str = EMBEDDED_MODEL
    lora: LoraConfig = LoraConfig()
    chat_template: str | None = None
    training_args: dict[str, Any] = Field(default_factory=dict)

    _check = field_validator("training_args")(lambda v: _check_trainer_keys("sft", v))

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\ ") or v.startswith("."):
            raise ValueError(f"student name {v!r} must be a plain directory name")
        return v


class EvalConfig(Section):
    enabled: bool = True
    engine: Literal["vllm", "transformers"] = "vllm"
    k: int = Field(4, ge=1)
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    seed: int = 0
    include_teacher: bool = True
    vllm: VLLMSettings = VLLMSettings()


class PublishConfig(Section):
    enabled: bool = False
    dataset_repo: str | None = None
    model_repo_prefix: str | None = None
    private: bool = True


class Recipe(Section):
    name: str
    description: str = ""
    run_dir: str | None = None  # default: runs/<name>
    seed: int = 0
    threads: int | None = None  # OMP/torch threads; default: all cores
    prompts: PromptsConfig = PromptsConfig()
    teacher: TeacherConfig = TeacherConfig()
    sampling: SamplingConfig = SamplingConfig()
    verify: VerifyConfig = VerifyConfig()
    curate: CurateConfig = CurateConfig()
    merge: MergeConfig = MergeConfig()
    students: list[StudentConfig] = Field(default_factory=lambda: [StudentConfig(name="student")])
    eval: EvalConfig = EvalConfig()
    publish: PublishConfig = PublishConfig()

    @field_validator("students")
    @classmethod
    def _unique_students(cls, v: list[StudentConfig]) -> list[StudentConfig]:
        names = [s.name for s in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate student name(s): {', '.join(dup)}")
        return v

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name

    def section_hash(self, *keys: str) -> str:
        """Hash of the named sections' settings: what a stage's cache key is made of."""
        data = self.model_dump(mode="json")
        picked = {k: data[k] for k in keys}
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]

    def recipe_hash(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a","b","c"], value), the value parsed as YAML (numbers, bools, lists)."""
    if "=" not in item:
        raise RecipeError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise RecipeError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise RecipeError(f"override {item!r}: value is not valid YAML: {e}") from e
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list):
                try:
                    node = node[int(part)]
                except (ValueError, IndexError):
                    raise RecipeError(f"override {item!r}: no list item {part!r} at {'.'.join(path[:i])}")
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, (dict, list)):
                    raise RecipeError(f"override {item!r}: {'.'.join(path[: i + 1])} is not a section")
        last = path[-1]
        if isinstance(node, list):
            try:
                node[int(last)] = value
            except (ValueError, IndexError):
                raise RecipeError(f"override {item!r}: no list item {last!r}")
        else:
            node[last] = value
    return data


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def recipe_from_dict(data: dict[str, Any], source: str = "<dict>", overrides: list[str] | None = None) -> Recipe:
    data = apply_overrides(json.loads(json.dumps(data)), overrides or [])
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(f"invalid recipe {source}:\n{_format_errors(e)}") from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path}: top level must be a mapping, got {type(data).__name__}")
    return recipe_from_dict(data, source=str(path), overrides=overrides)
