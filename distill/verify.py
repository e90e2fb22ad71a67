"""Answer verification: the one verifier registry shared by RL rewards, rejection sampling and evaluation.

A verifier maps (completion, reference) to a Verdict. `correct` is True, False, or None for "could not be
judged" (no reference, an unparseable reference, no answer); None is never counted as correct.

The `math` verifier reads the final answer after `</think>` and compares it with the reference through
Math-Verify (sympy equivalence: 1/2 == 0.5, intervals, sets, tuples, percentages...). Math-Verify's own
timeouts use signal.alarm, which raises outside the main thread (Prefect runs tasks in worker threads), so
they are switched off here; the work is bounded instead by capping the text handed to the parser and by
refusing values whose exact evaluation would never finish (`9^{9^{9}}`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import math_verify
import polars as pl
import sympy

from distill.schema import split_think
from distill.storage import read_table, write_parquet


@dataclass(frozen=True)
class Verdict:
    correct: bool | None  # None: unverifiable, which callers must never treat as correct
    reason: str


Verifier = Callable[[str, str | None], Verdict]
VERIFIERS: dict[str, Verifier] = {}


def register(name: str) -> Callable[[Verifier], Verifier]:
    def deco(fn: Verifier) -> Verifier:
        if name in VERIFIERS:
            raise ValueError(f"verifier {name!r} is already registered")
        VERIFIERS[name] = fn
        return fn

    return deco


def get_verifier(name: str) -> Verifier:
    try:
        return VERIFIERS[name]
    except KeyError:
        raise ValueError(f"unknown verifier {name!r}; known verifiers: {', '.join(sorted(VERIFIERS))}") from None


# --- final-answer extraction -------------------------------------------------------------------------------

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
# "The final answer is X", "the answer is: X", "Answer: X"; X runs to the end of its sentence.
_ANSWER_ANCHOR = re.compile(r"\banswer\b\s*(?:is\b\s*:?|:)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n")
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
# A whole answer wrapped in one math span: "$10,455$", "\((-6, 10)\)".
_WRAPPED = re.compile(r"^(?:\$\$(.+)\$\$|\$([^$]+)\$|\\\((.+)\\\)|\\\[(.+)\\\])$", re.DOTALL)
# 1,000 / 12.5 / -3 / 2/3 / \frac{10}{9} (thousands separators only in groups of three: "1, 2" is two numbers)
_NUMBER = re.compile(
    r"-?\\[dt]?frac\{[^{}]*\}\{[^{}]*\}|-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?"
)


def _sentence_end(text: str, pos: int) -> int:
    m = _SENTENCE_END.search(text, pos)
    return m.start() if m else len(text)


def _last_boxed(text: str) -> tuple[str, int] | None:
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
    wrapped = _WRAPPED.match(answer)
    if wrapped:
        answer = next(g for g in wrapped.groups() if g is not None).strip()
    return (answer, end) if answer else None


def _locate_answer(text: str) -> tuple[str, int, bool] | None:
    """(answer, end of its sentence, boxed?) for the final answer in `text`; see extract_final_answer."""
    boxed, anchored = _last_boxed(text), _last_anchored(text)
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


def _final_text(completion: str) -> str:
    return split_think(completion or "").final[-MAX_EXTRACT_CHARS:]


def extract_final_answer(completion: str) -> str | None:
    """The final answer of a completion, or None when it states nothing answer-like.

    Reads the text after `</think>` when there is a closed think block, else the whole completion (this
    scores the answer, not the format; curation checks the format). Prefers the last `\\boxed{}`/`\\fbox{}`
    (unless a later "the final answer is X" follows it), then the last "answer is X" / "Answer: X", then the
    last math span ($...$, \\(...\\), \\[...\\]), then the last number.
    """
    found = _locate_answer(_final_text(completion))
    return found[0] if found else None


# --- the math verifier -------------------------------------------------------------------------------------

# Math-Verify runs without its signal-based timeout (see module doc), so parse time is bounded by length: the
# answer sits at the end of a completion, and a reference is a short string or a solution ending in \boxed.
MAX_PARSE_CHARS = 2000
_LATEX_DELIMITED = re.compile(r"\$|\\\(|\\\[|\\boxed|\\fbox")


def _parse(text: str) -> list:
    return math_verify.parse(
        text[-MAX_PARSE_CHARS:],
        extraction_config=[math_verify.LatexExtractionConfig(), math_verify.ExprExtractionConfig()],
        parsing_timeout=None,
    )


def _split(parsed: list) -> tuple[list, list]:
    """(sympy results, string fallbacks). parse() appends the raw matched text as a fallback string."""
    return [p for p in parsed if not isinstance(p, str)], [p for p in parsed if isinstance(p, str)]


# Parsing is cheap, but verify() calls doit(), which builds exact integers: `9^{9^{9}}` has 370 million digits
# and `(10^{10})!` more, and with no timeout that hangs the thread for good. Such values are screened out first.
_MAX_DIGITS = 10_000
_MAX_TERMS = 10_000
_FACTORIALS = (sympy.factorial, sympy.factorial2, sympy.subfactorial, sympy.RisingFactorial, sympy.FallingFactorial)


def _log10_bound(x: sympy.Basic) -> float:
    """A rough upper bound on |log10|x|| for a numeric expression, computed without evaluating it."""
    if x.is_Rational:
        return max(abs(int(x.p)).bit_length(), int(x.q).bit_length()) * math.log10(2)
    if x.is_Float:
        f = abs(float(x))
        return math.inf if not math.isfinite(f) else abs(math.log10(f)) if f else 0.0
    if x.is_Add:
        return max(map(_log10_bound, x.args)) + math.log10(len(x.args))
    if x.is_Mul:
        return sum(map(_log10_bound, x.args))
    if x.is_Pow:  # |log10|b^e|| = |e| * |log10|b||
        exponent = _log10_bound(x.args[1])
        return math.inf if exponent > 15 else _log10_bound(x.args[0]) * 10**exponent
    if isinstance(x, _FACTORIALS):
        n = 10 ** min(_log10_bound(x.args[0]), 15)
        return n * math.log10(n + 1)
    if isinstance(x, sympy.binomial):
        return 10 ** min(_log10_bound(x.args[0]), 15) * math.log10(2)  # C(n, k) <= 2^n
    # pi, e, sin(.), log(.)...: no exact integer is built; bound by the arguments (good enough for a screen).
    return max(map(_log10_bound, x.args), default=1.0)


def _too_large(expr: Any) -> bool:
    if not isinstance(expr, sympy.Basic):
        return False
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, (sympy.Sum, sympy.Product)):
            for _, lo, hi in node.limits:
                if not (lo - hi).free_symbols and _log10_bound(hi - lo) > math.log10(_MAX_TERMS):
                    return True
        elif (node.is_Pow or isinstance(node, (*_FACTORIALS, sympy.binomial))) and not node.free_symbols:
            if _log10_bound(node) > _MAX_DIGITS:
                return True
    return False


# A word of 3+ letters outside LaTeX commands and their {...} arguments, and not a function name: prose, not
# math. Wrapped in $...$, prose parses as a product of one-letter symbols ("lorem ipsum" -> E*i*l*m*m*o*p*r*s*u)
# which would equal the same prose in a completion; left raw, it parses to nothing: an unparseable reference.
_PROSE_WORD = re.compile(
    r"(?<![\\a-zA-Z])(?!(?:arc)?(?:sin|cos|tan|cot|sec|csc)h?\b|(?:log|exp|sqrt|mod|gcd|lcm|max|min)\b)[a-zA-Z]{3,}"
)
_LATEX_ARG = re.compile(r"\\[a-zA-Z]+\{[^{}]*\}")


def _as_latex(text: str) -> str:
    """Plain math ("10/9", "50%", "[0,1)", "x^2+1") becomes `$...$` so the LaTeX extractor sees all of it;
    LaTeX-delimited text and prose are left as they are."""
    text = text.strip()
    if _LATEX_DELIMITED.search(text) or _PROSE_WORD.search(_LATEX_ARG.sub("", text)):
        return text
    return "$" + re.sub(r"(?<!\\)%", r"\\%", text) + "$"


@lru_cache(maxsize=4096)
def _parse_gold(reference: str) -> tuple:
    """Sympy forms of a reference; empty when Math-Verify cannot parse it (or only to a value too large to
    evaluate). Cached: every sample of a prompt shares its reference."""
    for text in dict.fromkeys((_as_latex(reference), reference)):
        gold, _ = _split(_parse(text))
        if gold:
            return tuple(g for g in gold if not _too_large(g))
    return ()


def _parse_answer(final_text: str) -> tuple[list, list] | None:
    """(sympy forms, fallback strings) of the final answer; None when there is no final answer.

    Math-Verify extracts from the tail of the final text itself (it knows more phrasings than
    extract_final_answer, and several boxes make a set). When the answer we located lies before that tail
    (a long epilogue after the boxed answer), the window ends at the answer's sentence instead. If Math-Verify
    finds nothing parseable there, our extracted answer is parsed on its own.
    """
    found = _locate_answer(final_text)
    if found is None:
        return None
    answer, end, boxed = found
    window = final_text if end > len(final_text) - MAX_PARSE_CHARS else final_text[: end + 1]
    parsed, strings = _split(_parse(window))
    # Only the window's strings count as math it could not parse: our own wrappers below would turn any text
    # ("???") into a `$...$` span that Math-Verify matches and then fails to parse.
    if not parsed:
        for text in dict.fromkeys(["\\boxed{" + answer + "}" if boxed else _as_latex(answer), answer]):
            parsed = _split(_parse(text))[0]
            if parsed:
                break
    return parsed, strings


@register("math")
def verify_math(completion: str, reference: str | None) -> Verdict:
    try:
        if reference is None or not str(reference).strip():
            return Verdict(None, "no_reference")
        gold = list(_parse_gold(str(reference).strip()))
        # open-r1#293: parse() falls back to the raw string when it cannot parse, and verify() compares two
        # strings for equality, so an unparseable reference would mark its own text correct. Only a reference
        # that parses to a math object may make anything correct.
        if not gold:
            return Verdict(None, "unparseable_reference")
        answer = _parse_answer(_final_text(completion))
        if answer is None:
            return Verdict(None, "no_final_answer")
        parsed, strings = answer
        if not parsed and not strings:
            return Verdict(None, "unparseable_answer")
        # Math-Verify found a math-looking answer but could not parse it (e.g. "$-[0,1)$"): it cannot equal a
        # reference that parses, and Math-Verify itself scores it incorrect (a string never equals sympy).
        if not parsed:
            return Verdict(False, "incorrect")
        if all(_too_large(p) for p in parsed):
            return Verdict(None, "answer_too_large")
        ok = math_verify.verify(gold, [p for p in parsed if not _too_large(p)], timeout_seconds=None)
        return Verdict(True, "correct") if ok else Verdict(False, "incorrect")
    except Exception as e:  # noqa: BLE001 - a verdict per row; one bad row must not sink a batch
        return Verdict(None, f"error: {type(e).__name__}")


# --- tables and files --------------------------------------------------------------------------------------


def verify_table(
    df: pl.DataFrame,
    verifier: str = "math",
    completion_col: str = "completion",
    answer_col: str = "answer",
) -> pl.DataFrame:
    """`df` with every column kept, in the same row order, plus `correct` (nullable Boolean) and
    `verify_reason` (Utf8). Existing verdict columns are replaced."""
    fn = get_verifier(verifier)
    if completion_col not in df.columns:
        raise ValueError(f"column {completion_col!r} not found (columns: {', '.join(df.columns)})")
    completions = df.get_column(completion_col).to_list()
    # Answers can arrive typed (JSONL `"answer": 42` reads as Int64); verifiers take strings.
    answers = (
        [None if a is None else str(a) for a in df.get_column(answer_col).to_list()]
        if answer_col in df.columns
        else [None] * df.height
    )
    verdicts = [fn(c or "", a) for c, a in zip(completions, answers)]
    return df.with_columns(
        pl.Series("correct", [v.correct for v in verdicts], dtype=pl.Boolean),
        pl.Series("verify_reason", [v.reason for v in verdicts], dtype=pl.Utf8),
    )


def verify_file(input_path: str | Path, output_path: str | Path, verifier: str = "math") -> dict[str, Any]:
    """Verify a JSONL/parquet file into a parquet file (written atomically); return the counts."""
    out = verify_table(read_table(input_path), verifier=verifier)
    write_parquet(out, Path(output_path))
    correct = out.get_column("correct")
    return {
        "rows": out.height,
        "correct": int(correct.sum()),  # sums skip nulls
        "incorrect": int((~correct).sum()),
        "unverifiable": int(correct.null_count()),
        "reasons": dict(Counter(out.get_column("verify_reason").to_list())),
    }
