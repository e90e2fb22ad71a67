"""The row schema every stage shares, and the helpers that read a completion's think block.

A trace row carries (stages add columns, never drop rows):
  id, prompt_id, prompt, answer, task, language, source      -- the question and its references
  sample_index, model, completion, finish_reason,
  prompt_tokens, completion_tokens                            -- generation facts (stage `sample`)
  prefill (only when the template prefills)                   -- text the rendered prompt ended with that
                                                                 belongs to the model's turn ("<think>\n")
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
# The column a trace's prefill lives in. `completion` is always what the model generated, untouched (its
# tokens, finish_reason); the model's whole turn is `prefill + completion` (full_completion). The column
# exists only where the teacher's template prefills, so traces of other templates stay as they were.
PREFILL = "prefill"
_PROBE = "2 + 2?"  # a user message used to read what a chat template appends for generation

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


def full_completion(completion: str | None, prefill: str | None = None) -> str:
    """The model's whole turn: the prefilled text (from the prompt) followed by what it generated."""
    return (prefill or "") + (completion or "")


def split_think(completion: str, prefill: str | None = None) -> ThinkSplit:
    """Split a completion into its reasoning and its final answer.

    `prefill` is the text the prompt ended with inside the model's turn (the trace's `prefill` column):
    the split is of `prefill + completion`. Without it, a completion holding `</think>` but no `<think>`
    is still read as prefilled (older traces, templates detected nowhere), so format checks see what the
    model actually produced.
    """
    text = full_completion(completion, prefill)
    n_open = text.count(THINK_OPEN)
    n_close = text.count(THINK_CLOSE)
    if n_close == 0:
        return ThinkSplit(None, text.strip(), n_open, n_close, False)
    head, _, tail = text.partition(THINK_CLOSE)
    prefilled = THINK_OPEN not in head or THINK_OPEN in (prefill or "")
    reasoning = head.split(THINK_OPEN, 1)[1] if THINK_OPEN in head else head
    return ThinkSplit(reasoning.strip(), tail.strip(), n_open, n_close, prefilled)


def format_ok(completion: str, prefill: str | None = None) -> bool:
    """Exactly one non-empty think block, then a non-empty answer (`<think>` may be prefilled)."""
    s = split_think(completion, prefill)
    return s.has_think and s.n_close == 1 and s.n_open <= 1 and bool(s.reasoning) and bool(s.final)


def generation_prefill(tokenizer, chat_template: str | None = None) -> str:
    """What a chat template puts after the assistant header when generating, inside the model's turn:
    "<think>\\n" for the DeepSeek-R1 / R1-Distill / QwQ templates, "" for most others (and without a template)."""
    template = chat_template or getattr(tokenizer, "chat_template", None)
    if tokenizer is None or not template:
        return ""
    gen = tokenizer.apply_chat_template([{"role": "user", "content": _PROBE}], tokenize=False, add_generation_prompt=True,
                                        chat_template=chat_template)
    tail = gen[gen.rfind(_PROBE) + len(_PROBE):]
    i = tail.rfind(THINK_OPEN)
    if i < 0 or THINK_CLOSE in tail[i:]:
        return ""
    return tail[i:]


_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lower-case, whitespace-collapsed text for hashing and n-gram comparisons."""
    return _WS.sub(" ", (text or "").strip().lower())
