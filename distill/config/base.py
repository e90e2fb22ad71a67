"""What every recipe section shares: the pydantic base class, the error type, and small checks.

Every section is a pydantic model with `extra="forbid"`, so a misspelt key fails at load time, before
any model loads, with the file and the dotted field in the message. Trainer knobs are not re-declared:
`training_args` sections are passed to TRL's own config classes (`SFTConfig`, `GRPOConfig`) and their
keys are checked against those classes' fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the field."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check_trainer_keys(kind: str, args: dict[str, Any]) -> dict[str, Any]:
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


def duplicates(names: Iterable[str]) -> list[str]:
    """The names that occur more than once, sorted."""
    names = list(names)
    return sorted({n for n in names if names.count(n) > 1})
