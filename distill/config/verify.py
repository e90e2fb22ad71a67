"""The verify stage's section: which verifier judges the `answer` column, its judge model and code sandbox."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from distill.config.base import Section
from distill.config.sampling import OpenAISettings, VLLMSettings


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
        # auto/bwrap: bubblewrap, or the verify stage refuses to run solutions. The weaker modes are opt-in by
        # name (distill.verify.sandbox): weak-unshare (host path unix sockets reachable), weak-none (host network
        # and processes); both keep each row in a Landlock-fenced directory of its own
        isolation: Literal["auto", "bwrap", "weak-unshare", "weak-none"] = "auto"
        wall_s: float = Field(10.0, gt=0)  # per test, interpreter start included
        cpu_s: int = Field(5, ge=1)
        memory_mb: int = Field(1024, ge=64)
        nproc: int = Field(32, ge=2)
        output_kb: int = Field(1024, ge=1)
        max_tests: int | None = Field(None, ge=1)
        python: str | None = None  # interpreter for solutions; default: this one, else /usr/bin/python3

        @field_validator("isolation", mode="before")
        @classmethod
        def _weak_is_opt_in(cls, v: object) -> object:
            if v in ("unshare", "none"):
                raise ValueError(f"{v!r} is weaker than bubblewrap and no longer a fallback: opt in with 'weak-{v}'")
            return v

    verifier: Literal["math", "code", "judge", "math+judge"] = "math"
    workers: int = Field(1, ge=1)  # processes for the rule verifiers (math, code)
    judge: Judge = Judge()
    code: Code = Code()

    @model_validator(mode="after")
    def _judge_needs_model(self) -> "VerifyConfig":
        if "judge" in self.verifier and not self.judge.model:
            raise ValueError(f"verify.judge.model is required when verify.verifier is {self.verifier!r}")
        return self
