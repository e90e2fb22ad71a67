"""Cheap text checks run before a verifier's worker sees a row (distill.verify.limits): answers that are absurd on
their face are refused at once, with the reason, instead of costing the per-row time limit.

For math: brackets nested over MAX_NESTING deep (600 parentheses sent the parser into minutes), and in the last
boxed answer (or a bare reference) a literal exponent over MAX_EXPONENT (`k^{10^6}`), a factorial or Gamma of a
literal over MAX_FACTORIAL (`\\Gamma(10^{12})`), or exponentials nested three deep (`\\exp(\\exp(\\exp(20)))`).
Values that large are refused after parsing anyway (distill.verify.math refuses exact integers over 10,000
digits); the screen only spares the parser. Anything it does not recognise goes on, bounded by time.
"""

from __future__ import annotations

import math
import re
from typing import Callable

from distill.verify.extract import final_text, last_boxed

MAX_NESTING = 40  # brackets open at once in one answer: real answers stay far below
MAX_EXPONENT = 1e5  # a literal exponent past this (2^{100000} has 30,103 digits; math refuses over 10,000)
MAX_FACTORIAL = 1e4  # a factorial or Gamma of a literal past this (10000! has 35,660 digits)
SCREEN_CHARS = 2000  # the tail of the final text Math-Verify is given (distill.verify.math.MAX_PARSE_CHARS)

_OPEN, _CLOSE = "([{", ")]}"


def nesting_depth(text: str) -> int:
    """The most brackets ((, [, { of any kind) open at once; a stray closer never goes below zero."""
    depth = best = 0
    for ch in text:
        if ch in _OPEN:
            depth += 1
            best = max(best, depth)
        elif ch in _CLOSE and depth:
            depth -= 1
    return best


def _group(text: str, i: int, opener: str, closer: str) -> tuple[str, int] | None:
    """(content, end) of the balanced `opener...closer` group starting at text[i]."""
    depth = 0
    for j in range(i, len(text)):
        depth += (text[j] == opener) - (text[j] == closer)
        if depth == 0:
            return text[i + 1 : j], j + 1
    return None


def literal_value(text: str) -> float | None:
    """The value of a literal number or tower of them (`12`, `10^6`, `10^{10^{10}}`; inf when it is beyond a
    float), else None: anything with a letter, operator or decimal point in it is not judged here."""
    parts = text.replace(" ", "").replace("{", "").replace("}", "").split("^")
    if not all(part.isdigit() for part in parts):
        return None
    value = float(parts[-1]) if len(parts[-1]) < 300 else math.inf
    for base in map(int, reversed(parts[:-1])):
        if base <= 1:
            value = float(base) if value else 1.0
            continue
        log = value * math.log10(base)
        value = 10.0**log if log < 300 else math.inf
    return value


_EXP_TOWER = re.compile(r"(?:\\exp\s*(?:\\left)?\s*[({]\s*){3}|(?:\be\s*\^\s*\{\s*){3}")
_GAMMA = re.compile(r"\\(?:Gamma|operatorname\s*\{\s*Gamma\s*\}|mathrm\s*\{\s*Gamma\s*\})\s*(?:\\left)?\s*(?=\()")


def absurd_value(text: str) -> str | None:
    """Why a math answer is a value nobody can compute exactly (None: not obviously so): an exponent over
    MAX_EXPONENT (`k^{10^6}`), a factorial or Gamma of more than MAX_FACTORIAL, three nested exponentials.
    Exact integers that large are refused after parsing anyway (distill.verify.math); here no parser runs."""
    if _EXP_TOWER.search(text):
        return "too_large: exponentials nested three deep"
    for i, ch in enumerate(text):
        if ch == "^":
            j = i + 1
            while j < len(text) and text[j] == " ":
                j += 1
            group = _group(text, j, "{", "}") if text[j : j + 1] == "{" else (re.match(r"\d+", text[j:]) or [None])[0]
            exponent = group[0] if isinstance(group, tuple) else group
            value = literal_value(exponent) if exponent else None
            if value is not None and value > MAX_EXPONENT:
                return f"too_large: an exponent over {MAX_EXPONENT:g}"
        elif ch == "!" and i:
            k = i - 1
            if text[k] == ")":
                depth, k = 0, i - 1
                while k >= 0:
                    depth += (text[k] == ")") - (text[k] == "(")
                    if depth == 0:
                        break
                    k -= 1
                arg = text[k + 1 : i - 1] if k >= 0 else ""
            else:
                arg = (re.search(r"\d+$", text[:i]) or [""])[0]
            value = literal_value(arg) if arg else None
            if value is not None and value > MAX_FACTORIAL:
                return f"too_large: a factorial of more than {MAX_FACTORIAL:g}"
    for m in _GAMMA.finditer(text):
        group = _group(text, m.end(), "(", ")")
        value = literal_value(group[0]) if group else None
        if value is not None and value > MAX_FACTORIAL:
            return f"too_large: Gamma of more than {MAX_FACTORIAL:g}"
    return None


def screen_text(text: str | None) -> str | None:
    """Why this answer is refused before parsing (None: go ahead): nested too deep, or an absurd value."""
    return (_nested(text) or absurd_value(text)) if text else None


def screen_math(completion: str, reference: str | None) -> str | None:
    """The screen for the `math` verifier: the nesting of the reference and of the final text's tail (what
    Math-Verify parses), and the values of their last boxed answers (the reference whole when it has none).
    A refused reference is `unparseable_reference`, as distill.verify.math calls a reference too large to
    evaluate: the row cannot be judged, whatever it answers (no reward; the judge of math+judge is asked)."""
    gold = last_boxed(reference or "")
    if screen_text(reference or "") if not gold else _nested(reference or "") or absurd_value(gold[0]):
        return "unparseable_reference"
    final = final_text(completion or "")[-SCREEN_CHARS:]
    answer = last_boxed(final)
    return _nested(final) or (absurd_value(answer[0]) if answer else None)


def _nested(text: str) -> str | None:
    return f"too_complex: brackets nested over {MAX_NESTING} deep" if nesting_depth(text) > MAX_NESTING else None


SCREENS: dict[str, Callable[[str, str | None], str | None]] = {"math": screen_math}
