"""The `math` verifier: the final answer (distill.verify.extract) compared with the reference by Math-Verify.

Math-Verify checks sympy equivalence: 1/2 == 0.5, intervals, sets, tuples, percentages... The answer formats
it misreads (an answer identical to the reference, Unicode products, scientific notation, times, decimals
rounded as asked, `\\text{}` answers) are decided first by distill.verify.formats; reasoning that never closed
without a final answer is `unfinished_reasoning`, never correct (distill.verify.extract). Math-Verify's timeouts use
signal.alarm, which raises outside the main thread (Prefect runs tasks in worker threads), so they are
switched off here; the work is bounded instead by capping the text handed to the parser and by refusing
values whose exact evaluation would never finish (`9^{9^{9}}`).
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

from distill.verify.extract import UNFINISHED, WRAPPED, Located, last_boxed, locate_final_answer, unfinished_without_answer
from distill.verify.formats import compare_decimals, compare_times, fold, normalize_unicode, same_text, text_reference, unwrap
from distill.verify.registry import Verdict, register

# Math-Verify runs without its signal-based timeout (see module doc), so parse time is bounded by length: the
# answer sits at the end of a completion, and a reference is a short string or a solution ending in \boxed.
MAX_PARSE_CHARS = 2000
_LATEX_DELIMITED = re.compile(r"\$|\\\(|\\\[|\\boxed|\\fbox")


# LaTeX that Math-Verify misreads: `0.\overline{3}` (it reads 0) and `1\,000` (a thin space as a thousands
# separator; it reads 1*000). Both are rewritten before parsing.
_REPEATING = re.compile(r"(\d*)\.(\d*)\\(?:overline|bar)\s*\{?(\d+)\}?")
_THIN_SPACE_THOUSANDS = re.compile(r"(?<=\d)\\[,;]\s*(?=\d{3}(?!\d))")


def _repeating_to_fraction(m: re.Match) -> str:
    whole, fixed, period = m.group(1) or "0", m.group(2), m.group(3)
    # 0.1(6) = (16 - 1) / 90: (all digits - the non-repeating digits) / (9 per period digit, 0 per fixed digit)
    num = int(whole + fixed + period) - int(whole + fixed)
    den = int("9" * len(period) + "0" * len(fixed))
    return f"\\frac{{{num}}}{{{den}}}"


def _normalize_latex(text: str) -> str:
    return _THIN_SPACE_THOUSANDS.sub("", _REPEATING.sub(_repeating_to_fraction, normalize_unicode(text)))


def _parse(text: str) -> list:
    import math_verify  # with sympy, ~1 s to import: only verifying pays for it, not `distill --help`

    return math_verify.parse(
        _normalize_latex(text[-MAX_PARSE_CHARS:]),
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


@lru_cache(maxsize=1)
def _factorials() -> tuple:
    import sympy  # slow to import; only verifying pays for it

    return (sympy.factorial, sympy.factorial2, sympy.subfactorial, sympy.RisingFactorial, sympy.FallingFactorial)


def _log10_bound(x: "sympy.Basic") -> float:
    """A rough upper bound on |log10|x|| for a numeric expression, computed without evaluating it."""
    import sympy  # slow to import; only verifying pays for it (cached in sys.modules after the first call)

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
    if isinstance(x, _factorials()):
        n = 10 ** min(_log10_bound(x.args[0]), 15)
        return n * math.log10(n + 1)
    if isinstance(x, sympy.binomial):
        return 10 ** min(_log10_bound(x.args[0]), 15) * math.log10(2)  # C(n, k) <= 2^n
    # pi, e, sin(.), log(.)...: no exact integer is built; bound by the arguments (good enough for a screen).
    return max(map(_log10_bound, x.args), default=1.0)


def _too_large(expr: Any) -> bool:
    import sympy  # slow to import; only verifying pays for it

    if not isinstance(expr, sympy.Basic):
        return False
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, (sympy.Sum, sympy.Product)):
            for _, lo, hi in node.limits:
                if not (lo - hi).free_symbols and _log10_bound(hi - lo) > math.log10(_MAX_TERMS):
                    return True
        elif (node.is_Pow or isinstance(node, (*_factorials(), sympy.binomial))) and not node.free_symbols:
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
    reference = reference.replace("\\$", "")  # an escaped dollar sign is a currency mark: "\$5" is 5
    for text in dict.fromkeys((_as_latex(reference), reference)):
        gold, _ = _split(_parse(text))
        if gold:
            return tuple(g for g in gold if not _too_large(g))
    return ()


def _parse_answer(final: str, found: Located) -> tuple[list, list]:
    """(sympy forms, fallback strings) of the final answer `found` in the final text.

    Math-Verify extracts from the tail of the final text itself (it knows more phrasings than
    extract_final_answer, and several boxes make a set). When the answer we located lies before that tail
    (a long epilogue after the boxed answer), the window ends at the answer's sentence instead. If Math-Verify
    finds nothing parseable there, our extracted answer is parsed on its own. A bare answer (an `<answer>`
    block's content, a final text that is only the answer) is parsed whole: "2 × 181", "-3 - 3i", "-1, 1".
    """
    answer, end, boxed = found.answer, found.end, found.kind == "boxed"
    if found.kind == "whole":
        parsed, strings = _split(_parse(_as_latex(answer)))
        if parsed:
            return parsed, strings
    window = final if end > len(final) - MAX_PARSE_CHARS else final[: end + 1]
    parsed, strings = _split(_parse(window))
    # Only the window's strings count as math it could not parse: our own wrappers below would turn any text
    # ("???") into a `$...$` span that Math-Verify matches and then fails to parse.
    if not parsed:
        for text in dict.fromkeys(["\\boxed{" + answer + "}" if boxed else _as_latex(answer), answer]):
            parsed = _split(_parse(text))[0]
            if parsed:
                break
    return parsed, strings


def _shape(text: str) -> str | None:
    """"set" for an answer written `\\{...\\}`, "pair" for `(a, b, ...)` / `[a, b)`, else None. Math-Verify
    reads `(1, 2)` as an open interval and then lets it equal the set `\\{1, 2\\}`; written that way on both
    sides, a point (or interval) and a set are never the same answer."""
    boxed = last_boxed(text)
    text = boxed[0] if boxed else text
    wrapped = WRAPPED.match(text.strip())
    if wrapped:
        text = next(g for g in wrapped.groups() if g is not None)
    text = re.sub(r"\\(?:left|right|big|Big)\b", "", text.split("=")[-1]).strip().rstrip(".").strip()
    if text.startswith("\\{") and text.endswith("\\}"):
        return "set"
    if text[:1] in "([" and text[-1:] in ")]" and "," in text:
        return "pair"
    return None


_OR = re.compile(r"(?<![A-Za-z\\])or(?![A-Za-z])")


def _hedged(answer: str) -> bool:
    """"3 or 4": several candidate answers. Math-Verify takes the first one it recognises, so a hedge would
    be scored correct whenever one of its candidates is."""
    return len([p for p in _OR.split(answer) if p.strip(" ${}\\text,.")]) > 1


def _formats(answer: Located, final: str, reference: str) -> Verdict | None:
    """The verdict of distill.verify.formats for the answer formats Math-Verify misreads; None: not one."""
    # Identical to the reference: correct, unless the reference is bare prose, which no rule judges (the
    # verdict stays unparseable_reference, never incorrect, and a judge may decide it).
    prose = text_reference(reference) is None and _PROSE_WORD.search(_LATEX_ARG.sub("", reference))
    identical = same_text(answer.answer, reference) or same_text(final, reference) or same_text(unwrap(answer.answer), unwrap(reference))
    if identical and not prose:
        return Verdict(True, "correct")
    time = compare_times(answer.answer, reference)
    if time is not None:
        return Verdict(time, "correct" if time else "incorrect")
    text = text_reference(reference)
    if text is not None:  # words: compared as text, with an answer stated as one
        if fold(answer.answer) == text or fold(final) == text:
            return Verdict(True, "correct")
        return Verdict(False, "incorrect") if answer.explicit else Verdict(None, "no_stated_answer")
    close = compare_decimals(answer.answer, reference)
    if close is not None:
        return Verdict(close, "correct" if close else "incorrect")
    return None


def _relational_vs_interval(gold: list, parsed: list) -> bool:
    """`x \\le 2` against `(-\\infty, 2]`: Math-Verify turns an inequality into an interval only when it is
    the reference, so the comparison is tried the other way round."""
    import math_verify  # slow to import (sympy): only verifying pays for it
    import sympy

    rel = lambda xs: [x for x in xs if isinstance(x, sympy.core.relational.Relational)]  # noqa: E731
    sets = lambda xs: [x for x in xs if isinstance(x, (sympy.Interval, sympy.Union))]  # noqa: E731
    if rel(parsed) and sets(gold):
        return bool(math_verify.verify(rel(parsed), sets(gold), timeout_seconds=None))
    return False


@register("math")
def verify_math(completion: str, reference: str | None) -> Verdict:
    import math_verify  # slow to import (sympy): only verifying pays for it
    import sympy

    try:
        if reference is None or not str(reference).strip():
            return Verdict(None, "no_reference")
        reference = str(reference).strip()
        gold = list(_parse_gold(reference))
        # open-r1#293: parse() falls back to the raw string when it cannot parse, and verify() compares two
        # strings for equality, so an unparseable reference would mark its own text correct. Only a reference
        # that parses to a math object (or is a text or a time, compared by distill.verify.formats) may make
        # anything correct.
        if not gold and text_reference(reference) is None and compare_times(reference, reference) is None:
            return Verdict(None, "unparseable_reference")
        if unfinished_without_answer(completion):
            return Verdict(False, UNFINISHED)
        final, found = locate_final_answer(completion)
        if found is None:  # nothing answer-like: only a final text identical to (or, as text, the same as) the gold
            decided = _formats(Located(final.strip(), len(final), "text"), final, reference) if final.strip() else None
            return decided if decided is not None and decided.correct else Verdict(None, "no_final_answer")
        decided = _formats(found, final, reference)
        if decided is not None:
            return decided
        parsed, strings = _parse_answer(final, found)
        if not parsed and not strings:
            return Verdict(None, "unparseable_answer")
        # Math-Verify found a math-looking answer but could not parse it (e.g. "$-[0,1)$"): it cannot equal a
        # reference that parses, and Math-Verify itself scores it incorrect (a string never equals sympy).
        if not parsed:
            return Verdict(False, "incorrect")
        if all(_too_large(p) for p in parsed):
            return Verdict(None, "answer_too_large")
        parsed = [p for p in parsed if not _too_large(p)]
        ok = math_verify.verify(gold, parsed, timeout_seconds=None) or _relational_vs_interval(gold, parsed)
        located = found.answer
        if ok and {_shape(reference), _shape(located)} == {"set", "pair"}:
            ok = False
        if ok and _hedged(located) and not any(isinstance(g, sympy.FiniteSet) and len(g) > 1 for g in gold):
            ok = False
        return Verdict(True, "correct") if ok else Verdict(False, "incorrect")
    except Exception as e:  # noqa: BLE001 - a verdict per row; one bad row must not sink a batch
        return Verdict(None, f"error: {type(e).__name__}")

