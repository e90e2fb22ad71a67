"""The eval stage's section: held-out prompts and benchmarks, pass@k sampling."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from distill.config.base import Section
from distill.config.sampling import VLLMSettings


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
    # score the teacher too. None (the default): only when the pipeline trains it (teacher.enabled);
    # an existing teacher (DeepSeek-R1, 671B) is not loaded for eval unless this says true. A loaded
    # recipe holds the resolved value (Recipe), so manifests and fingerprints record what ran.
    include_teacher: bool | None = None
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
