"""GRPO rewards in the recipe: one typed entry per reward, a union tagged by `name`.

    rewards:
      - {name: accuracy, weight: 1.0, options: {verifier: code, workers: 16}}
      - {name: length, weight: 1.0, options: {max_tokens: 16384, buffer_tokens: 2048}}

Each entry's `options` is its own model, checked when the recipe loads: an unknown option, a value of the
wrong type (types are strict: `workers: "8"` or `workers: true` is refused) or out of range fails with the
dotted field in the message (`teacher.grpo.rewards.0.options.verifier`). rl/rewards.py builds the reward
functions from these entries; what each reward measures is described there.

Options dump as given, leaving out the defaults not written in the recipe, so the dump (which stage
fingerprints hash) is the mapping the recipe wrote, as when options were an untyped mapping.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union, get_args

from pydantic import ConfigDict, Field, PlainValidator, model_serializer, model_validator

from distill.config.base import Section


class RewardOptions(Section):
    """A reward's options; its dump is the mapping the recipe gave (defaults left out)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

    @model_serializer(mode="wrap")
    def _as_given(self, handler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}


class RewardEntry(Section):
    """One GRPO reward and its weight in the sum (GRPOConfig.reward_weights)."""

    name: str
    weight: float = 1.0
    options: RewardOptions = RewardOptions()


class AccuracyOptions(RewardOptions):
    verifier: Literal["auto", "math", "code"] = "auto"  # auto: each row's `task` (code, else math)
    workers: int = 8  # code: completions judged in parallel (each test in its own sandboxed process)


class AccuracyReward(RewardEntry):
    name: Literal["accuracy"] = "accuracy"
    options: AccuracyOptions = AccuracyOptions()


class FormatReward(RewardEntry):
    name: Literal["format"] = "format"


class LanguageConsistencyOptions(RewardOptions):
    scope: Literal["reasoning", "completion"] = "reasoning"  # the part measured


class LanguageConsistencyReward(RewardEntry):
    name: Literal["language_consistency"] = "language_consistency"
    options: LanguageConsistencyOptions = LanguageConsistencyOptions()


class LengthOptions(RewardOptions):
    max_tokens: int | None = Field(None, ge=2)  # None: GRPO's max_completion_length
    buffer_tokens: int | None = Field(None, ge=0)  # the soft zone before max_tokens; None or 0: a quarter of it

    @model_validator(mode="after")
    def _buffer_fits(self) -> "LengthOptions":
        if self.max_tokens is not None and self.buffer_tokens and self.buffer_tokens >= self.max_tokens:
            raise ValueError(f"buffer_tokens must be in 1..{self.max_tokens - 1}")
        return self


class LengthReward(RewardEntry):
    name: Literal["length"] = "length"
    options: LengthOptions = LengthOptions()


def _number(v: Any) -> int | float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("Input should be a number")
    return v


# An int or a float, kept as written (an int is not turned into a float: options feed stage fingerprints).
Number = Annotated[Union[int, float], PlainValidator(_number)]


class RepetitionOptions(RewardOptions):
    max_penalty: Number = 1.0


class RepetitionReward(RewardEntry):
    name: Literal["repetition"] = "repetition"
    options: RepetitionOptions = RepetitionOptions()


REWARD_ENTRIES: tuple[type[RewardEntry], ...] = (
    AccuracyReward, FormatReward, LanguageConsistencyReward, LengthReward, RepetitionReward,
)
# A recipe's reward: the entry whose `name` matches.
RewardSpec = Annotated[Union[REWARD_ENTRIES], Field(discriminator="name")]
REWARD_NAMES: tuple[str, ...] = tuple(get_args(e.model_fields["name"].annotation)[0] for e in REWARD_ENTRIES)
