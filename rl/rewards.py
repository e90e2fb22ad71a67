"""GRPO reward functions, built from the one verifier registry (so RL, rejection sampling and eval agree).

Each follows TRL's reward-function signature: `f(completions, **columns) -> list[float | None]`, one
value per completion; None means "cannot judge this one" (an unparseable gold answer), never a silent
0 or 1. Completions may be plain strings or conversational (`[{"role": "assistant", "content": ...}]`).
"""

from __future__ import annotations

from typing import Callable

from distill.recipe import RewardSpec
from distill.schema import format_ok
from distill.verify import get_verifier

# Verdict reasons that mean "the reference cannot be judged against": no reward, not zero.
_CANNOT_JUDGE = {"no_reference", "unparseable_reference", "judge_unparseable"}


def completion_text(completion) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):  # conversational: the assistant message(s)
        return "".join(m.get("content") or "" for m in completion if m.get("role", "assistant") == "assistant")
    raise TypeError(f"unsupported completion type {type(completion).__name__}")


def accuracy_reward(verifier: str = "math") -> Callable:
    verify = get_verifier(verifier)

    def accuracy(completions, answer, **_) -> list[float | None]:
        out: list[float | None] = []
        for c, ref in zip(completions, answer):
            v = verify(completion_text(c), ref)
            if v.correct is None:
                out.append(None if v.reason in _CANNOT_JUDGE or v.reason.startswith("error") else 0.0)
            else:
                out.append(1.0 if v.correct else 0.0)
        return out

    return accuracy


def format_reward() -> Callable:
    def format(completions, **_) -> list[float]:
        return [1.0 if format_ok(completion_text(c)) else 0.0 for c in completions]

    return format


FACTORIES: dict[str, Callable[[], Callable]] = {"accuracy": accuracy_reward, "format": format_reward}


def build_rewards(specs: list[RewardSpec]) -> tuple[list[Callable], list[float]]:
    """Reward functions and weights for `GRPOTrainer(reward_funcs=..., args=GRPOConfig(reward_weights=...))`."""
    funcs, weights = [], []
    for spec in specs:
        if spec.name not in FACTORIES:
            raise ValueError(f"unknown reward {spec.name!r} (known: {', '.join(FACTORIES)})")
        funcs.append(FACTORIES[spec.name]())
        weights.append(spec.weight)
    return funcs, weights
