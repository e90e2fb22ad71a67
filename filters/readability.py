"""Readability and format measures for curation: the think block, paragraphs, truncation.

Each function reads one completion and returns a score; none drops anything. Two measures use them:
`Format` (think_format, truncated: reasons truncated, bad_think_format) and `Readability`
(max_paragraph_chars, completion_chars, n_tokens: reasons long_paragraph, too_long, too_short).
"""

from __future__ import annotations

import re

import polars as pl

from distill.config.curate import CurateConfig
from distill.core.schema import PREFILL, THINK_CLOSE, THINK_OPEN, full_completion, split_think
from filters.measure import Batch, Measure, tasks_of

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


# The end of a text that finished: sentence punctuation (any script), a closing bracket, quote, emphasis,
# math or code delimiter, or a number.
_FINISHED_END = re.compile(r"""[.!?。！？।؟…)\]}"'”’*`$|>」』）】_~\d%]\s*$""")
# An end that cannot be the last thing said: an operator or a connective punctuation mark.
_DANGLING_END = re.compile(r"[=+×÷/^<,;:(\[{&]\s*$|\\(?:rightarrow|to|cdot|times|quad)\s*$")
_LIST_OR_TABLE = re.compile(r"^\s*(?:[-*+•]\s|\d+[.)]\s|[A-Za-z][.)]\s|\||#)")
_LETTER_END = re.compile(r"\w\s*$")
# A last line that states the answer ("**Answer:** A. <the option's text>") is finished whatever its end.
_ANSWER_WORDS = (
    "answer|jibu|réponse|reponse|antwort|respuesta|resposta|risposta|ответ|答案|答え|解答|উত্তর|సమాధానం|คำตอบ|정답|답"
)
# A label of up to three words, with an answer word, ending in a colon: "**Answer:**", "Final Answer:",
# "**সঠিক উত্তর:**", "Jibu:", "Ответ:" (words as non-space runs: Bengali vowel signs are not \w).
_ANSWER_LABEL = re.compile(rf"^\W*(?:[^\s:：*]+\s+){{0,2}}?(?:{_ANSWER_WORDS})[^\s:：*]*\W{{0,4}}[:：]", re.I)
# A final line of at most this many words is a label, an answer or a heading ("Answer: B", "Paris").
SHORT_LINE_WORDS = 4
# Unclosed LaTeX: \begin{...} without its \end, or \[ / $$ left open.
_BEGIN, _END = re.compile(r"\\begin\{"), re.compile(r"\\end\{")


def unfinished_span(text: str | None) -> tuple[int, int] | None:
    """(start, end) of the last line when the text stops mid-sentence, else None.

    Unfinished: it ends inside an unclosed LaTeX environment or display (`\\begin{align*}` ... no
    `\\end`, `\\[` without `\\]`), on an operator or a comma/colon ("gives 2m =", "1 \\rightarrow"), or its
    last line is prose of more than SHORT_LINE_WORDS words that ends on a word with no closing
    punctuation ("...directed vertically, and any tilt"). Finished endings are never flagged: sentence
    punctuation, a closing bracket/quote/emphasis/math/code delimiter, a number, a boxed answer, a list
    item, table row or heading, a short label line ("Answer: B"), a single capital letter (a
    multiple-choice option).
    """
    body = (text or "").rstrip()
    if not body:
        return None
    line_start = body.rfind("\n") + 1
    last = body[line_start:]
    span = (line_start, len(body))
    if len(_BEGIN.findall(body)) > len(_END.findall(body)) or body.count("\\[") > body.count("\\]") or body.count("$$") % 2:
        return span
    if _ANSWER_LABEL.match(last):  # the answer, stated: its content may end anyhow ("Cu²+", an option's text)
        return None
    if _DANGLING_END.search(last):
        return span
    if _FINISHED_END.search(last) or _LIST_OR_TABLE.match(last) or "\\boxed" in last:
        return None
    words = last.split()
    if len(words) <= SHORT_LINE_WORDS or re.fullmatch(r"\W*[A-Z]\W*", words[-1]):
        return None
    return span if _LETTER_END.search(last) else None


def _ends_with_answer(text: str) -> bool:
    """The last lines give a final answer: a `\\boxed{}` or an answer label in the last ANSWER_TAIL chars."""
    tail = text.rstrip()[-ANSWER_TAIL:]
    return "\\boxed" in tail or any(_ANSWER_LABEL.match(line) for line in tail.splitlines())


ANSWER_TAIL = 400


def truncation(finish_reason: str | None, completion: str | None) -> tuple[bool, tuple[int, int] | None]:
    """(truncated, the span that shows it). Truncated: generation hit the token limit (finish_reason
    "length"), a `<think>` was opened and never closed (unless the output ends on a finished final
    answer: that is a missing `</think>`, bad_think_format's), or the output stops mid-sentence
    (`unfinished_span`): the final answer, or the reasoning when no final answer follows it."""
    text = completion or ""
    if finish_reason is not None and str(finish_reason).strip().lower() == "length":
        return True, (max(0, len(text.rstrip()) - 200), len(text.rstrip()))
    close = text.rfind(THINK_CLOSE)
    if text.rfind(THINK_OPEN) > close:
        span = unfinished_span(text)
        if span is None and _ends_with_answer(text):
            return False, None  # the think block never closed but the output ends on its answer: a format defect
        return True, span or (max(0, len(text.rstrip()) - 200), len(text.rstrip()))
    if close >= 0:
        final = text[close + len(THINK_CLOSE) :]
        if not final.strip():  # no answer: the reasoning must have finished (empty_answer is a format defect)
            span = unfinished_span(text[:close])
            return span is not None, span
        span = unfinished_span(final)
        offset = close + len(THINK_CLOSE)
        return (True, (span[0] + offset, span[1] + offset)) if span else (False, None)
    span = unfinished_span(text)
    return span is not None, span


def is_truncated(finish_reason: str | None, completion: str | None) -> bool:
    """True when generation hit the token limit, a `<think>` was opened and never closed, or the output
    stops mid-sentence (see `truncation`)."""
    return truncation(finish_reason, completion)[0]


class Format(Measure):
    """truncated: cfg.reject_truncated and `truncated`. bad_think_format: cfg.require_think, task "math"
    or "code" (default "math") and think_format set. Both read the model's whole turn: the trace's
    `prefill` (R1's template opens `<think>` in the prompt) followed by its completion."""

    name = "format"
    columns = {"think_format": pl.Utf8, "truncated": pl.Boolean, "truncation_span": pl.List(pl.Int64)}
    reasons = ("truncated", "bad_think_format")

    def score(self, batch: Batch) -> dict[str, pl.Series]:
        completions = [full_completion(c, p) for c, p in zip(batch.completions, batch.column(PREFILL))]
        found = [truncation(f, c) for f, c in zip(batch.column("finish_reason"), completions)]
        # offsets into the completion column (a prefill put in front is not part of it)
        shift = [len(f) - len(c) for f, c in zip(completions, batch.completions)]
        return {
            "think_format": pl.Series([think_format(c, k) for c, k in zip(completions, batch.tasks)], dtype=pl.Utf8),
            "truncated": pl.Series([t for t, _ in found], dtype=pl.Boolean),
            "truncation_span": pl.Series(
                [[max(0, s[0] - d), max(0, s[1] - d)] if s else None for (_, s), d in zip(found, shift)], dtype=pl.List(pl.Int64)
            ),
        }

    @classmethod
    def reject(cls, df: pl.DataFrame, cfg: CurateConfig) -> dict[str, pl.Expr]:
        rules = {}
        if cfg.reject_truncated:
            rules["truncated"] = pl.col("truncated")
        if cfg.require_think:
            task = pl.Series(tasks_of(df), dtype=pl.Utf8)
            rules["bad_think_format"] = pl.lit(task).is_in(list(REASONING_TASKS)) & pl.col("think_format").is_not_null()
        return rules


class Readability(Measure):
    """long_paragraph: max_paragraph_chars > cfg.max_paragraph_chars. too_long / too_short: n_tokens
    (`completion_tokens`, else UTF-8 bytes / 4) above cfg.max_completion_tokens / below
    cfg.min_completion_tokens (each off when None)."""

    name = "readability"
    columns = {"max_paragraph_chars": pl.Int64, "completion_chars": pl.Int64, "n_tokens": pl.Int64}
    reasons = ("long_paragraph", "too_long", "too_short")

    def score(self, batch: Batch) -> dict[str, pl.Series]:
        comp = batch.completion_series
        n_tokens = (comp.str.len_bytes().cast(pl.Int64) + 3) // 4
        if "completion_tokens" in batch.df.columns:
            n_tokens = batch.df.get_column("completion_tokens").cast(pl.Int64, strict=False).fill_null(n_tokens)
        return {
            "max_paragraph_chars": pl.Series([max_paragraph_chars(c) for c in batch.completions], dtype=pl.Int64),
            "completion_chars": comp.str.len_chars().cast(pl.Int64),
            "n_tokens": n_tokens,
        }

    @classmethod
    def reject(cls, df: pl.DataFrame, cfg: CurateConfig) -> dict[str, pl.Expr]:
        rules = {"long_paragraph": pl.col("max_paragraph_chars") > cfg.max_paragraph_chars}
        if cfg.max_completion_tokens is not None:
            rules["too_long"] = pl.col("n_tokens") > cfg.max_completion_tokens
        if cfg.min_completion_tokens is not None:
            rules["too_short"] = pl.col("n_tokens") < cfg.min_completion_tokens
        return rules
