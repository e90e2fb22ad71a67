"""What every recipe section shares: the pydantic base class, the error type, and small checks.

Every section is a pydantic model with `extra="forbid"`, so a misspelt key fails at load time, before
any model loads, with the file and the dotted field in the message. Trainer knobs are not re-declared:
`training_args` sections are passed to TRL's own config classes (`SFTConfig`, `GRPOConfig`) and their
keys are checked against those classes' fields (read from TRL's source: distill/config/trainer_keys.py).
"""

from __future__ import annotations

from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict

from distill.config.trainer_keys import CLASSES, trainer_fields

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the field."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check_trainer_keys(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """Reject keys that TRL's config class for `kind` does not have (a typo would be silently ignored)."""
    if not args:
        return args
    unknown = sorted(set(args) - trainer_fields(kind))
    if unknown:
        raise ValueError(f"unknown {CLASSES[kind][1]} field(s): {', '.join(unknown)}")
    return args


def duplicates(names: Iterable[str]) -> list[str]:
    """The names that occur more than once, sorted."""
    names = list(names)
    return sorted({n for n in names if names.count(n) > 1})
