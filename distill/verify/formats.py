"""Answer formats that real teacher output uses and Math-Verify misreads, decided before it runs (used by
distill.verify.math):

- an answer string-identical to its reference (whitespace trimmed and collapsed) is correct, whatever the
  parser would make of either ("2 × 181", "-3.0 - 3.0i", "abc def");
- Unicode math (`×`, `·`, `−`, `÷`, `≤`, `°`, `π`, `∞`) and scientific notation (`-2.43e-19`) are rewritten
  as LaTeX before parsing (Math-Verify reads `e` as Euler's number and drops `×`);
- times of day / durations `05:23:10` compare field by field (Math-Verify reads them as 5/23/10);
- two plain decimals compare at the precision the coarser one is written to: `-2.43e-19` against
  `-2.4312e-19`, `3.14` against `3.14159` (a value rounded as the prompt asked). An integer is exact
  (`106` is not `106.12`), and so is a value with a single significant digit;
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


def normalize_unicode(text: str) -> str:
    text = _UNICODE_RE.sub(lambda m: _UNICODE[m.group()], text)
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

_TIME = re.compile(r"^(\d{1,3}):([0-5]\d)(?::([0-5]\d(?:\.\d+)?))?$")


def _time(text: str) -> tuple[float, ...] | None:
    m = _TIME.match(unwrap(text).replace(r"\!", "").replace(" ", ""))
    return tuple(float(g) for g in m.groups() if g is not None) if m else None


def compare_times(answer: str, reference: str) -> bool | None:
    """For a reference written as a time (`05:23:10`, `7:05`): does the answer state the same time? None
    when the reference is not a time."""
    gold = _time(reference)
    if gold is None:
        return None
    return _time(answer) == gold


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


def compare_decimals(answer: str, reference: str) -> bool | None:
    """Two plain decimal numbers: equal at the precision of the coarser one (half a unit of its last written
    digit), or exactly when the coarser is an integer or has one significant digit. None unless both are
    plain decimals (fractions, percents, expressions go to Math-Verify)."""
    a, g = _decimal(answer), _decimal(reference)
    if a is None or g is None:
        return None
    if a[1] is None or g[1] is None:  # an integer is exact: 106 is not 106.12, but 106.0 is 106
        return a[0] == g[0]
    coarse = a if a[1] >= g[1] else g
    if coarse[2] < 2:
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
