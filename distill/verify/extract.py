"""Where a completion states its final answer: the text after `</think>` (the last `<answer>` block when
there is one), and in it the last `\\boxed{}`, "the answer is X", math span or number.

Shared by the math verifier (distill.verify.math), the code verifier (its fenced block is read from the same
final text) and the LLM judge (what it is shown as the answer).
"""

from __future__ import annotations

import re

from distill.core.schema import split_think

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
# "The final answer is X", "the answer is: X", "Answer: X"; X runs to the end of its sentence.
_ANSWER_ANCHOR = re.compile(r"\banswer\b\s*(?:is\b\s*:?|:)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n")
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
# A whole answer wrapped in one math span: "$10,455$", "\((-6, 10)\)".
WRAPPED = re.compile(r"^(?:\$\$(.+)\$\$|\$([^$]+)\$|\\\((.+)\\\)|\\\[(.+)\\\])$", re.DOTALL)
# 1,000 / 12.5 / -3 / 2/3 / \frac{10}{9} (thousands separators only in groups of three: "1, 2" is two numbers)
_NUMBER = re.compile(
    r"-?\\[dt]?frac\{[^{}]*\}\{[^{}]*\}|-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?"
)


def _sentence_end(text: str, pos: int) -> int:
    m = _SENTENCE_END.search(text, pos)
    return m.start() if m else len(text)


def last_boxed(text: str) -> tuple[str, int] | None:
    """(content, end) of the last non-empty `\\boxed{...}` / `\\fbox{...}` with balanced braces."""
    found = None
    for m in _BOX.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        content = text[m.end() : i - 1].strip()
        if depth == 0 and content:
            found = (content, i)
    return found


def _last_anchored(text: str) -> tuple[str, int] | None:
    """(X, end) for the last "answer is X" / "Answer: X", X cut at the end of its sentence."""
    anchors = list(_ANSWER_ANCHOR.finditer(text))
    if not anchors:
        return None
    start = anchors[-1].end()
    end = _sentence_end(text, start)
    answer = text[start:end].strip()
    wrapped = WRAPPED.match(answer)
    if wrapped:
        answer = next(g for g in wrapped.groups() if g is not None).strip()
    return (answer, end) if answer else None


def locate_answer(text: str) -> tuple[str, int, bool] | None:
    """(answer, end of its sentence, boxed?) for the final answer in `text`; see extract_final_answer."""
    boxed, anchored = last_boxed(text), _last_anchored(text)
    # A boxed answer wins, unless an "answer is X" sentence comes after it: intermediate results get boxed too.
    if boxed and not (anchored and anchored[1] > boxed[1] and _BOX.search(anchored[0]) is None):
        return boxed[0], _sentence_end(text, boxed[1]), True
    if anchored:
        return anchored[0], anchored[1], False
    spans = [m for m in _MATH_SPAN.finditer(text) if any(g and g.strip() for g in m.groups())]
    if spans:
        answer = next(g for g in spans[-1].groups() if g is not None).strip()
        return answer, _sentence_end(text, spans[-1].end()), False
    numbers = list(_NUMBER.finditer(text))
    if numbers:
        return numbers[-1].group().strip(), _sentence_end(text, numbers[-1].end()), False
    return None


# The answer is at the end; looking further back than this only costs regex time on runaway completions.
MAX_EXTRACT_CHARS = 20_000


# R1-Zero's template puts the answer in <answer>...</answer> after the think block.
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def final_text(completion: str) -> str:
    """The text after `</think>`; when it holds `<answer>` blocks (the R1-Zero template), the last one's content."""
    final = split_think(completion or "").final[-MAX_EXTRACT_CHARS:]
    tagged = [m.group(1).strip() for m in _ANSWER_TAG.finditer(final)]
    tagged = [t for t in tagged if t]
    return tagged[-1] if tagged else final


def extract_final_answer(completion: str) -> str | None:
    """The final answer of a completion, or None when it states nothing answer-like.

    Reads the text after `</think>` when there is a closed think block, else the whole completion (this
    scores the answer, not the format; curation checks the format), and inside it the last non-empty
    `<answer>...</answer>` block when there is one (the R1-Zero template). Prefers the last `\\boxed{}`/`\\fbox{}`
    (unless a later "the final answer is X" follows it), then the last "answer is X" / "Answer: X", then the
    last math span ($...$, \\(...\\), \\[...\\]), then the last number.
    """
    found = locate_answer(final_text(completion))
    return found[0] if found else None

