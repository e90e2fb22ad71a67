"""The row schema every stage shares, and the helpers that read a completion's think block.

A trace row carries (stages add columns, never drop rows):
  id, prompt_id, prompt, answer, task, language, source      -- the question and its references
  sample_index, model, completion, finish_reason,
  prompt_tokens, completion_tokens                            -- generation facts (stage `sample`)
  correct (bool | null), verify_reason                        -- verdict (stage `verify`)
  score columns, reject_reason, reject_reasons                -- curation (stage `curate`)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

TASKS = ("math", "code", "general")

PROMPT_COLUMNS = ("prompt_id", "prompt", "answer", "task", "language", "source")
TRACE_COLUMNS = PROMPT_COLUMNS + (
    "id",
    "sample_index",
    "model",
    "completion",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
)


def content_id(*parts: object, length: int = 16) -> str:
    """A stable id from the JSON form of `parts` (same inputs, same id, on any machine)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


@dataclass(frozen=True)
class ThinkSplit:
    reasoning: str | None  # text inside the think block; None when there is no closed block
    final: str  # what follows `</think>`; the whole completion when there is no closed block
    n_open: int
    n_close: int
    prefilled: bool  # `</think>` present without `<think>`: the template put `<think>` in the prompt

    @property
    def has_think(self) -> bool:
        return self.reasoning is not None


def split_think(completion: str) -> ThinkSplit:
    """Split a completion into its reasoning and its final answer.

    Handles templates that prefill `<think>` in the prompt (the completion then starts inside the
    block and only `</think>` appears), so format checks see what the model actually produced.
    """
    text = completion or ""
    n_open = text.count(THINK_OPEN)
    n_close = text.count(THINK_CLOSE)
    if n_close == 0:
        return ThinkSplit(None, text.strip(), n_open, n_close, False)
    head, _, tail = text.partition(THINK_CLOSE)
    prefilled = THINK_OPEN not in head
    reasoning = head.split(THINK_OPEN, 1)[1] if not prefilled else head
    return ThinkSplit(reasoning.strip(), tail.strip(), n_open, n_close, prefilled)


def format_ok(completion: str) -> bool:
    """Exactly one non-empty think block, then a non-empty answer (`<think>` may be prefilled)."""
    s = split_think(completion)
    return s.has_think and s.n_close == 1 and s.n_open <= 1 and bool(s.reasoning) and bool(s.final)


_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lower-case, whitespace-collapsed text for hashing and n-gram comparisons."""
    return _WS.sub(" ", (text or "").strip().lower())
