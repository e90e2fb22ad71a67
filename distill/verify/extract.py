"""Where a completion states its final answer: the text after `</think>` (the last `<answer>` block when
there is one), and in it the last `\\boxed{}`, "the answer is X", math span or number.

Reasoning that never closed (`<think>` without `</think>`: the model ran out of tokens or never stopped
thinking) has a final answer only when it ends on an explicit one: a `\\boxed{}`, an `<answer>` block, a
"Final Answer: X" / `Answer: X` line, with at most a short remark after it. Anything else ("...5*8 = 40,
and") is no answer at all, whatever number comes last: answer_section is then empty, so every verifier
(math, multiple choice, JSON, code, the judge) and through them rejection sampling, the RL accuracy reward
and eval pass@1 see no answer. Callers pass the model's whole turn: a `<think>` that the chat template
prefilled (the trace's `prefill` column) is put back in front of the completion (distill.verify.table does
this; RL rewards verify Template.produced text); a completion with no think tags at all (a non-thinking
task or model) is all answer.

Shared by the math verifier (distill.verify.math), the code verifier (its fenced block is read from the same
final text) and the LLM judge (what it is shown as the answer).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from distill.core.schema import THINK_CLOSE, THINK_OPEN, split_think

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
# "The final answer is X", "the answer is: X", "Answer: X"; X runs to the end of its sentence. Real traces
# answer in the prompt's language too: "La réponse est X", "Die Antwort ist X", "答案是 X", "Ответ: X"...
_ANSWER_ANCHOR = re.compile(
    r"(?:\banswer\b|\bréponse\b|\brespuesta\b|\bresposta\b|\brisposta\b|\bAntwort\b|\bjibu\b|\bjawaban(?:nya)?\b"
    r"|\bответ\b|答案|答え|解答|উত্তর|సమాధానం|คำตอบ)\**\s*"
    r"(?:(?:is|est|es|é|è|ist|ni|adalah|là|是|为|為|は|হলো|হল|คือ)(?![^\W\d_])\s*[:：]?|[:：])\**",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.。](?=\s|$)|。|\n")
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


class Located(NamedTuple):
    answer: str
    end: int  # the end of its sentence in the text searched
    kind: str  # boxed | anchored | whole (the whole text is the answer) | span | number (the last ones found) | text

    @property
    def explicit(self) -> bool:
        """Stated as the answer (boxed, "the answer is", an `<answer>` block or a bare answer line), not the
        last math span or number of a longer text."""
        return self.kind in ("boxed", "anchored", "whole")


# A final text that is a bare answer: one short line with no word of 3+ letters outside LaTeX commands.
_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}")
MAX_BARE_ANSWER = 100


def _bare(text: str) -> str | None:
    text = text.strip()
    if not text or "\n" in text or len(text) > MAX_BARE_ANSWER or _WORD.search(text) or _BOX.search(text):
        return None
    wrapped = WRAPPED.match(text)
    return next(g for g in wrapped.groups() if g is not None).strip() if wrapped else text


def locate_answer(text: str, whole: bool = False) -> Located | None:
    """The final answer in `text` (see extract_final_answer). `whole`: the text is an answer block's content
    (`<answer>...</answer>`), so without a box or an "answer is" inside it the whole of it is the answer."""
    boxed, anchored = last_boxed(text), _last_anchored(text)
    # A boxed answer wins, unless an "answer is X" sentence comes after it: intermediate results get boxed too.
    if boxed and not (anchored and anchored[1] > boxed[1] and _BOX.search(anchored[0]) is None):
        return Located(boxed[0], _sentence_end(text, boxed[1]), "boxed")
    if anchored:
        return Located(anchored[0], anchored[1], "anchored")
    bare = text.strip() if whole else _bare(text)
    if bare:
        wrapped = WRAPPED.match(bare)
        return Located(next(g for g in wrapped.groups() if g is not None).strip() if wrapped else bare, len(text), "whole")
    spans = [m for m in _MATH_SPAN.finditer(text) if any(g and g.strip() for g in m.groups())]
    if spans:
        answer = next(g for g in spans[-1].groups() if g is not None).strip()
        return Located(answer, _sentence_end(text, spans[-1].end()), "span")
    numbers = list(_NUMBER.finditer(text))
    if numbers:
        return Located(numbers[-1].group().strip(), _sentence_end(text, numbers[-1].end()), "number")
    return None


# The answer is at the end; looking further back than this only costs regex time on runaway completions.
MAX_EXTRACT_CHARS = 20_000


# R1-Zero's template puts the answer in <answer>...</answer> after the think block.
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


# Explicit final-answer markers, the only ones that count at the end of reasoning that never closed.
_EXPLICIT = re.compile(
    r"\\(?:boxed|fbox)\s*\{|<answer>|\bfinal\s+answer\b\s*(?:is\b|[:：]|\**\s*$)|^[\s*#]*answer\s*\**\s*[:：]",
    re.IGNORECASE | re.MULTILINE,
)
# Text allowed after the explicit answer ("... dollars.", "Hope this helps!") before it counts as more reasoning.
MAX_AFTER_ANSWER = 80
_NEXT_LINE = re.compile(r"\S[^\n]*")
# A line that stops mid-sentence: on a comma/colon, or on a word that needs a continuation.
_MID_SENTENCE = re.compile(r"(?:[,;:]|\b(?:and|or|but|so|the|a|an|to|of|is|then|if|because|which|that))\s*$", re.IGNORECASE)


def reasoning_unfinished(completion: str) -> bool:
    """`<think>` opened and never closed (pass the whole turn: a prefilled `<think>` included)."""
    text = completion or ""
    return THINK_OPEN in text and THINK_CLOSE not in text


def _explicit_tail(text: str) -> str:
    """The end of unfinished reasoning from the line of its last explicit answer marker, when that answer is
    complete (a balanced box, a closed `<answer>`, a line that does not stop mid-sentence) and at most a short
    remark follows it; "" otherwise."""
    text = text[-MAX_EXTRACT_CHARS:]
    markers = list(_EXPLICIT.finditer(text))
    if not markers:
        return ""
    m = markers[-1]
    tail = text[text.rfind("\n", 0, m.start()) + 1 :]
    offset = m.start() - (len(text) - len(tail))
    if m.group().lower() == "<answer>":
        close = tail.find("</answer>", offset)
        end = -1 if close < 0 else close + len("</answer>")
    elif m.group().startswith("\\"):
        boxed = last_boxed(tail[offset:])
        end = -1 if boxed is None else offset + boxed[1]
    else:
        line_end = tail.find("\n", offset)
        end = len(tail) if line_end < 0 else line_end
        if not tail[m.end() - (len(text) - len(tail)) : end].strip(" *#:："):
            # a heading ("Answer:", "**Final Answer**"): the answer is the next non-empty line
            following = _NEXT_LINE.search(tail, end)
            end = following.end() if following else -1
        if end >= 0 and _MID_SENTENCE.search(tail[:end]):
            end = -1
    if end < 0 or len(tail[end:].strip()) > MAX_AFTER_ANSWER:
        return ""
    return tail


def answer_section(completion: str) -> str:
    """Where the final answer may be: the text after `</think>`; for reasoning that never closed, only its
    explicit final answer (see module doc; "" when there is none); without think tags, the whole text."""
    text = completion or ""
    if reasoning_unfinished(text):
        return _explicit_tail(text)
    return split_think(text).final


UNFINISHED = "unfinished_reasoning"  # the verdict reason (correct=False) of reasoning cut off before any answer


def unfinished_without_answer(completion: str) -> bool:
    """Reasoning that never closed and states no final answer: never correct, whatever its last number."""
    return reasoning_unfinished(completion) and not answer_section(completion)


def tagged_final_text(completion: str) -> tuple[str, bool]:
    """(final_text, whether it is the content of an `<answer>` block)."""
    final = answer_section(completion)[-MAX_EXTRACT_CHARS:]
    tagged = [m.group(1).strip() for m in _ANSWER_TAG.finditer(final)]
    tagged = [t for t in tagged if t]
    return (tagged[-1], True) if tagged else (final, False)


def final_text(completion: str) -> str:
    """The answer section (answer_section); when it holds `<answer>` blocks (the R1-Zero template), the last
    one's content."""
    return tagged_final_text(completion)[0]


def locate_final_answer(completion: str) -> tuple[str, Located | None]:
    """(final text, its located answer): an `<answer>` block's whole content is the answer unless it holds a
    box or an "answer is" sentence."""
    text, tagged = tagged_final_text(completion)
    return text, locate_answer(text, whole=tagged)


def extract_final_answer(completion: str) -> str | None:
    """The final answer of a completion, or None when it states nothing answer-like.

    Reads the text after `</think>` when there is a closed think block, only an explicit final answer when
    the think block never closed, else the whole completion (this scores the answer, not the format;
    curation checks the format), and inside it the last non-empty `<answer>...</answer>` block when there is
    one (the R1-Zero template; its whole content is the answer unless it holds a box or an "answer is").
    Prefers the last `\\boxed{}`/`\\fbox{}` (unless a later "the final answer is X" follows it), then the last
    "answer is X" / "Answer: X" (also "La réponse est X", "答案是 X", "Ответ: X"...), then a final text that is
    a bare answer (one short line of math: "2 × 181", "-1, 1"), then the last math span ($...$, \\(...\\),
    \\[...\\]), then the last number.
    """
    found = locate_final_answer(completion)[1]
    return found.answer if found else None

