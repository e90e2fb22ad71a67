"""Where the pipeline's prompts come from."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from distill.config.base import Section


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
