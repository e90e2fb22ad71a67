"""Answer formats that real teacher output uses and Math-Verify misreads, decided before it runs (used by
distill.verify.math):

- an answer string-identical to its reference (whitespace trimmed and collapsed) is correct, whatever the
  parser would make of either ("2 × 181", "-3.0 - 3.0i", "[1, 2, 3]"), unless the reference is bare prose;
- Unicode math (`×`, `·`, `−`, `÷`, `≤`, `°`, `π`, `∞`), scientific notation (`-2.43e-19`) and Python powers
  (`x**9`) are rewritten as LaTeX before parsing (Math-Verify reads `e` as Euler's number, drops `×` and
  misreads `**`);
- times of day / durations `05:23:10`, `46 days, 02:21` compare field by field (Math-Verify reads them as
  5/23/10);
- two plain decimals compare at the precision written: an answer finer than a rounded reference (`3.14159`
  against `3.14`), an answer rounded as the prompt asked against a reference printed at full float precision
  (`-2.43e-19` against `-2.4311837658723e-19`); otherwise exactly (`106` is not `106.12`, `-2.20` is not
  `-2.2017`: a reference that states its precision is not met by a coarser answer);
- a text reference (`\\text{Evelyn}`, `\\text{yes}`) is compared as text, case- and markup-folded, with an
  answer stated as such (boxed, "the answer is", an `<answer>` block): a name is not a number, and the last
  number of a sentence that names the answer is not an answer to it.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# Unicode math as LaTeX; spaces around commands keep `2×181` from becoming `2\times181`.
_UNICODE = {
    "×": r" \times ", "·": r" \cdot ", "⋅": r" \cdot ", "∙": r" \cdot ", "−": "-", "–": "-", "÷": r" \div ",
    "≤": r" \le ", "≥": r" \ge ", "≠": r" \neq ", "°": r"^\circ", "π": r"\pi ", "∞": r"\infty ", "√": r"\sqrt",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))
# 1.5e-19, 2E+05 (a digit right before the e: "2e" alone stays 2*e)
_SCIENTIFIC = re.compile(r"(?<=\d)[eE]([-+]?\d+)\b")


# Python's power operator between operands (`x**9`, `(x+1)**2`), not Markdown bold (`**Answer:**`).
_PY_POWER = re.compile(r"(?<=[\w)])\*\*(?=[\w(])")


def normalize_unicode(text: str) -> str:
    text = _PY_POWER.sub("^", _UNICODE_RE.sub(lambda m: _UNICODE[m.group()], text))
    return _SCIENTIFIC.sub(lambda m: r" \times 10^{" + m.group(1).lstrip("+") + "}", text)


_WS = re.compile(r"\s+")


def same_text(answer: str, reference: str) -> bool:
    """Identical after trimming whitespace (and collapsing runs of it)."""
    a, b = _WS.sub(" ", answer).strip(), _WS.sub(" ", reference).strip()
    return bool(a) and a == b


# --- unwrapping ---------------------------------------------------------------------------------------------

_WRAPPERS = re.compile(r"^\\(?:boxed|text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{(.*)\}$", re.DOTALL)
_MATH_DELIMS = re.compile(r"^(?:\$\$(.*)\$\$|\$(.*)\$|\\\((.*)\\\)|\\\[(.*)\\\])$", re.DOTALL)
_MARKUP = re.compile(r"^[\s*_`\"'“”«»]+|[\s*_`\"'“”«».。]+$")  # not "!": 3! is a factorial


def unwrap(text: str) -> str:
    """`$\\boxed{\\text{Evelyn}}$.` -> `Evelyn`: math delimiters, one-argument wrappers, bold and quotes."""
    prev = None
    while prev != text:
        prev = text
        text = _MARKUP.sub("", text).strip()
        m = _MATH_DELIMS.match(text) or _WRAPPERS.match(text)
        if m:
            text = next(g for g in m.groups() if g is not None).strip()
    return text


# --- times ---------------------------------------------------------------------------------------------------

_TIME = re.compile(r"^(?:(\d+)\s*days?,?\s*)?(\d{1,3}):([0-5]\d)(?::([0-5]\d(?:\.\d+)?))?$", re.IGNORECASE)
_HAS_TIME = re.compile(r"\d:[0-5]\d")


def _time(text: str) -> tuple[float, ...] | None:
    m = _TIME.match(unwrap(text).replace(r"\!", "").strip())
    return tuple(float(g or 0) for g in m.groups()) if m else None


def compare_times(answer: str, reference: str) -> bool | None:
    """For a reference holding a time or duration (`05:23:10`, `7:05`, `46 days, 02:21`): the same time, field
    by field, else the same text (Math-Verify reads `a:b` as a division). None when the reference has none."""
    if not _HAS_TIME.search(reference):
        return None
    gold, got = _time(reference), _time(answer)
    if gold is not None and got is not None:
        return got == gold
    return fold(answer).replace(" ", "") == fold(reference).replace(" ", "")


# --- decimals at a stated precision ---------------------------------------------------------------------------

_DECIMAL = re.compile(r"^([-+]?)(\d+)(?:\.(\d+))?(?:(?:[eE]|\s*\\(?:times|cdot)\s*10\s*\^\s*)\{?([-+]?\d+)\}?)?$")


def _decimal(text: str) -> tuple[Decimal, int | None, int] | None:
    """(value, exponent of its last written digit or None for an exact integer, significant digits)."""
    m = _DECIMAL.match(unwrap(text).replace("−", "-").replace(" ", ""))
    if not m:
        return None
    sign, whole, frac, exp = m.groups()
    try:
        value = Decimal(f"{sign}{whole}.{frac or '0'}e{exp or 0}")
    except InvalidOperation:
        return None
    digits = (whole + (frac or "")).lstrip("0") or "0"
    if frac is None and exp is None:
        return value, None, len(digits)
    return value, int(exp or 0) - len(frac or ""), len(digits)


# A reference with this many significant digits is a float printed at full precision (`-0.0013674811612376526`,
# `599208.67094449`), which no question expects verbatim: the answer's own precision governs (the prompt asked
# for 3 significant figures). A shorter reference states its precision (`-2.2017`, or 12 significant digits
# when a prompt asks for 12): a coarser answer is a different value. The prompt, which says which rounding
# it asked for, does not reach the verifier; measured on reasoning-gym (scripts/reasoning_gym_agreement.py),
# also accepting any answer in scientific notation disagreed with its scorer three times as often.
FLOAT_DUMP_DIGITS = 13
MIN_SIG_DIGITS = 3


def compare_decimals(answer: str, reference: str) -> bool | None:
    """Two plain decimal numbers. Equal at the reference's precision when the answer is written finer and
    the reference has 3+ significant digits (a reference given rounded: `3.14` against `3.14159`; `0.5` is
    not `0.50001`); at the answer's precision when the reference is a
    full-precision float dump (`-2.43e-19` against `-2.4311837658723e-19`) and the answer has 3+ significant
    digits; exactly otherwise (an integer is exact: `106` is not `106.12`; `-2.20` is not `-2.2017`). None
    unless both are plain decimals (fractions, percents, expressions go to Math-Verify)."""
    a, g = _decimal(answer), _decimal(reference)
    if a is None or g is None:
        return None
    if a[1] is None or g[1] is None or a[1] == g[1]:
        return a[0] == g[0]
    if a[1] < g[1] and g[2] >= MIN_SIG_DIGITS:  # the answer is finer: does it round to the reference?
        coarse = g
    elif a[2] >= MIN_SIG_DIGITS and g[2] >= FLOAT_DUMP_DIGITS:
        coarse = a
    else:
        return a[0] == g[0]
    return abs(a[0] - g[0]) <= Decimal(5) * Decimal(10) ** (coarse[1] - 1) * Decimal("1.000000001")


# --- text answers --------------------------------------------------------------------------------------------

# A reference that is words, not math, written as text (`\\text{Evelyn}`, `\\textbf{yes}`): letters (any
# script) and spaces, hyphens, apostrophes; two or more letters in a row, and no digits or operators. A bare
# prose reference ("see the solution") stays unparseable: no rule can judge free text (the judge can).
_TEXT_WRAPPED = re.compile(r"^\$?\\(?:text|textbf|textit|mathrm|mbox)\s*\{")
_TEXT = re.compile(r"^(?=.*[^\W\d_]{2})[^\W\d_][^\W\d_\s'’\-.]*(?:[\s'’\-.]+[^\W\d_]+)*\.?$")
# LaTeX words and function names that look like text but are math.
_MATH_WORDS = {"pi", "infty", "sqrt", "frac", "sin", "cos", "tan", "log", "ln", "exp", "circ", "le", "ge", "ne"}


def text_reference(reference: str) -> str | None:
    """The folded text of a reference that is words ("\\text{Evelyn}" -> "evelyn"), else None."""
    if not _TEXT_WRAPPED.match(reference.strip()):
        return None
    text = unwrap(reference)
    if "\\" in text or not _TEXT.match(text) or text.lower() in _MATH_WORDS:
        return None
    return fold(text)


def fold(text: str) -> str:
    return _WS.sub(" ", unwrap(text).replace("’", "'")).strip().rstrip(".").casefold()
