"""Readability and format measures for curation: the think block, paragraphs, truncation.

Each function reads one completion and returns a score; none drops anything. The recipe's thresholds
turn scores into reject reasons (`filters.curate.reject_reasons`).
"""

from __future__ import annotations

import re

from distill.core.schema import THINK_CLOSE, THINK_OPEN, split_think

REASONING_TASKS = frozenset({"math", "code"})

# Codes returned by think_format, most basic problem first.
THINK_FORMAT_CODES = ("no_think", "multiple_think", "empty_think", "empty_answer")


def think_format(completion: str | None, task: str | None = "math") -> str | None:
    """None when the completion's think block is well formed, else a short code.

    - "no_think": no closed think block (`</think>` missing). A template that prefills `<think>` in
      the prompt is fine: the completion then holds only `</think>`.
    - "multiple_think": more than one `<think>` or `</think>`, or a think tag after the block.
    - "empty_think": the block holds only whitespace.
    - "empty_answer": nothing after `</think>`.

    Non-reasoning tasks ("general") need no think block: without any think tag they only need a
    non-empty answer; with tags they are checked like reasoning tasks.
    """
    text = completion or ""
    if task is not None and task not in REASONING_TASKS and THINK_OPEN not in text and THINK_CLOSE not in text:
        return None if text.strip() else "empty_answer"
    split = split_think(text)
    if not split.has_think:
        return "no_think"
    if split.n_open > 1 or split.n_close > 1 or THINK_OPEN in split.final:
        return "multiple_think"
    if not split.reasoning:
        return "empty_think"
    if not split.final:
        return "empty_answer"
    return None


_FENCE = re.compile(r"```[\s\S]*?(?:```|\Z)|~~~[\s\S]*?(?:~~~|\Z)")
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7a3]")
CJK_WEIGHT = 3  # a CJK character holds about as much text as three letters (see filters.language)


def _weighted_len(paragraph: str) -> int:
    n = len(paragraph)
    if paragraph.isascii():
        return n
    return n + (CJK_WEIGHT - 1) * len(_CJK.findall(paragraph))


def max_paragraph_chars(text: str | None) -> int:
    """Length of the longest paragraph: the longest run of text without a blank line, stripped, with
    a CJK character counting CJK_WEIGHT (a wall of Chinese is a wall at a third of the characters).

    Fenced code blocks are not prose and are left out (they break paragraphs like a blank line).
    """
    if not text:
        return 0
    if "```" in text or "~~~" in text:
        text = _FENCE.sub("\n\n", text)
    return max((_weighted_len(p.strip()) for p in _BLANK_LINE.split(text)), default=0)


def is_truncated(finish_reason: str | None, completion: str | None) -> bool:
    """True when generation hit the token limit, or a `<think>` was opened and never closed."""
    if finish_reason is not None and str(finish_reason).strip().lower() == "length":
        return True
    text = completion or ""
    return text.rfind(THINK_OPEN) > text.rfind(THINK_CLOSE)
