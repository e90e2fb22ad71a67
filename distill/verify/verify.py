"""Answer verification: the one verifier registry shared by RL rewards, rejection sampling and evaluation.

A verifier maps (completion, reference) to a Verdict. `correct` is True, False, or None for "could not be
judged" (no reference, an unparseable reference, no answer); None is never counted as correct.

The `math` verifier reads the final answer after `</think>` (inside `<answer>` tags when present) and
compares it with the reference through Math-Verify (sympy equivalence: 1/2 == 0.5, intervals, sets, tuples, percentages...). Math-Verify's own
timeouts use signal.alarm, which raises outside the main thread (Prefect runs tasks in worker threads), so
they are switched off here; the work is bounded instead by capping the text handed to the parser and by
refusing values whose exact evaluation would never finish (`9^{9^{9}}`).

The `code` verifier runs the solution's last fenced Python block against stdin/stdout tests in a sandbox
(`distill.verify.sandbox`). Its reference (the `answer` column of a code row) is a JSON string:

    [{"input": "1 2\\n", "output": "3\\n"}, ...]          # or {"tests": [...]}
    {"inputs": ["1 2\\n", ...], "outputs": ["3\\n", ...]}  # the APPS / TACO layout

Outputs match when their lines match after trailing whitespace and leading/trailing blank lines are dropped.

Verifiers that need resources are built by factories: `get_verifier("judge", engine=...)` (an LLM judge) and
`get_verifier("math+judge", engine=...)` (rules first, the judge for what they leave unverifiable; see
distill.verify.judge). A verifier object may offer `verify_batch(completions, references, prompts=, workers=)`
returning (verdicts, stats); `verify_table` uses it, and records the stats (judge/rules disagreements, the
sandbox's protections). Plain per-row verifiers run in a process pool when `workers > 1`.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import re
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import math_verify
import polars as pl
import sympy

from distill.core.schema import split_think
from distill.core.storage import read_table, write_parquet


@dataclass(frozen=True)
class Verdict:
    correct: bool | None  # None: unverifiable, which callers must never treat as correct
    reason: str


Verifier = Callable[[str, str | None], Verdict]
VERIFIERS: dict[str, Verifier] = {}
# Verifiers built with options or resources (an engine, sandbox limits): get_verifier(name, **options).
FACTORIES: dict[str, Callable[..., Verifier]] = {}


def register(name: str) -> Callable[[Verifier], Verifier]:
    def deco(fn: Verifier) -> Verifier:
        if name in VERIFIERS:
            raise ValueError(f"verifier {name!r} is already registered")
        VERIFIERS[name] = fn
        return fn

    return deco


def register_factory(name: str) -> Callable[[Callable[..., Verifier]], Callable[..., Verifier]]:
    def deco(factory: Callable[..., Verifier]) -> Callable[..., Verifier]:
        if name in FACTORIES:
            raise ValueError(f"verifier factory {name!r} is already registered")
        FACTORIES[name] = factory
        return factory

    return deco


def get_verifier(name: str, **options: Any) -> Verifier:
    """The registered verifier `name`; with options (or for factory-only verifiers), a new one built by its
    factory, e.g. `get_verifier("math+judge", engine=engine, check_fraction=0.1)`."""
    if not options and name in VERIFIERS:
        return VERIFIERS[name]
    if name in FACTORIES:
        try:
            return FACTORIES[name](**options)
        except TypeError as e:
            raise ValueError(f"verifier {name!r}: {e}") from None
    if name in VERIFIERS:
        raise ValueError(f"verifier {name!r} takes no options (got {', '.join(sorted(options))})")
    known = ", ".join(sorted(set(VERIFIERS) | set(FACTORIES)))
    raise ValueError(f"unknown verifier {name!r}; known verifiers: {known}")


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


# R1-Zero's template puts the answer in <answer>...</answer> after the think block.
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _final_text(completion: str) -> str:
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
    found = _locate_answer(_final_text(completion))
    return found[0] if found else None


# --- the math verifier -------------------------------------------------------------------------------------

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
    return _THIN_SPACE_THOUSANDS.sub("", _REPEATING.sub(_repeating_to_fraction, text))


def _parse(text: str) -> list:
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
    reference = reference.replace("\\$", "")  # an escaped dollar sign is a currency mark: "\$5" is 5
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


def _shape(text: str) -> str | None:
    """"set" for an answer written `\\{...\\}`, "pair" for `(a, b, ...)` / `[a, b)`, else None. Math-Verify
    reads `(1, 2)` as an open interval and then lets it equal the set `\\{1, 2\\}`; written that way on both
    sides, a point (or interval) and a set are never the same answer."""
    boxed = _last_boxed(text)
    text = boxed[0] if boxed else text
    wrapped = _WRAPPED.match(text.strip())
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
        located = _locate_answer(_final_text(completion))[0]  # type: ignore[index]
        if ok and {_shape(str(reference)), _shape(located)} == {"set", "pair"}:
            ok = False
        if ok and _hedged(located) and not any(isinstance(g, sympy.FiniteSet) and len(g) > 1 for g in gold):
            ok = False
        return Verdict(True, "correct") if ok else Verdict(False, "incorrect")
    except Exception as e:  # noqa: BLE001 - a verdict per row; one bad row must not sink a batch
        return Verdict(None, f"error: {type(e).__name__}")


# --- the code verifier -------------------------------------------------------------------------------------

# ```python\n...``` (or py / python3 / no language); the language word may be followed by other info.
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.#-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PYTHON_FENCES = {"", "python", "py", "python3", "py3"}


def extract_code(completion: str) -> str | None:
    """The last fenced Python code block of the final answer (after `</think>` when the think block is
    closed, else the whole completion); None when there is none."""
    blocks = [m.group(2) for m in _FENCE.finditer(_final_text(completion)) if m.group(1).lower() in _PYTHON_FENCES]
    blocks = [b for b in blocks if b.strip()]
    return blocks[-1] if blocks else None


def parse_code_tests(reference: str) -> list[tuple[str, str]] | None:
    """(stdin, expected stdout) pairs from a code reference (formats in the module doc); None when the
    reference is not one of them, has no tests, or uses function-call tests (`fn_name`), not supported."""
    try:
        data = json.loads(reference)
    except (TypeError, ValueError):
        return None
    if isinstance(data, dict) and "fn_name" in data:
        return None
    if isinstance(data, dict) and "tests" in data:
        data = data["tests"]
    if isinstance(data, dict) and "inputs" in data and "outputs" in data:
        if not (isinstance(data["inputs"], list) and isinstance(data["outputs"], list)):
            return None
        if len(data["inputs"]) != len(data["outputs"]):
            return None
        data = [{"input": i, "output": o} for i, o in zip(data["inputs"], data["outputs"])]
    if not isinstance(data, list) or not data:
        return None
    tests = []
    for t in data:
        if not isinstance(t, dict) or "output" not in t:
            return None
        stdin, out = t.get("input", ""), t["output"]
        if not isinstance(stdin, str) or not isinstance(out, str):
            return None
        tests.append((stdin, out))
    return tests


def _output_lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def outputs_match(got: str, expected: str) -> bool:
    """Line by line, ignoring trailing whitespace on each line and blank lines at either end."""
    return _output_lines(got) == _output_lines(expected)


@dataclass
class CodeVerifier:
    """Runs the solution against every test in `sandbox`, stopping at the first failure.

    correct / incorrect (wrong output) / timeout / runtime_error / output_limit are judged verdicts (a
    solution that hangs or crashes is wrong); no_code, no_reference, unparseable_reference and
    `error: ...` (the sandbox could not run) are unverifiable.
    """

    sandbox: Any = None  # a distill.verify.sandbox.Sandbox; built on first use (its probe runs a process)
    max_tests: int | None = None  # run at most this many tests (the first ones)

    def _box(self):
        if self.sandbox is None:
            from distill.verify.sandbox import Sandbox

            self.sandbox = Sandbox()
        return self.sandbox

    def __call__(self, completion: str, reference: str | None) -> Verdict:
        try:
            if reference is None or not str(reference).strip():
                return Verdict(None, "no_reference")
            tests = parse_code_tests(str(reference))
            if tests is None:
                return Verdict(None, "unparseable_reference")
            code = extract_code(completion)
            if code is None:
                return Verdict(None, "no_code")
            for stdin, expected in tests[: self.max_tests]:
                r = self._box().run_python(code, stdin)
                if r.timed_out:
                    return Verdict(False, "timeout")
                if r.output_truncated:
                    return Verdict(False, "output_limit")
                if r.returncode != 0:
                    return Verdict(False, "runtime_error")
                if not outputs_match(r.stdout, expected):
                    return Verdict(False, "incorrect")
            return Verdict(True, "correct")
        except Exception as e:  # noqa: BLE001 - a verdict per row
            return Verdict(None, f"error: {type(e).__name__}: {e}"[:200])

    def verify_batch(self, completions, references, prompts=None, workers: int = 1) -> tuple[list[Verdict], dict]:
        try:
            sandbox = self._box().describe()  # resolves the isolation once, before workers copy the sandbox
        except Exception as e:  # noqa: BLE001 - no sandbox: every row gets the error verdict below
            sandbox = {"error": str(e)}
        return map_verdicts(self, completions, references, workers), {"sandbox": sandbox}


@register_factory("code")
def make_code_verifier(
    limits: Any = None, isolation: str = "auto", python: str | None = None, max_tests: int | None = None
) -> CodeVerifier:
    """A code verifier with its own sandbox settings (`limits`: a distill.verify.sandbox.Limits)."""
    from distill.verify.sandbox import Sandbox

    return CodeVerifier(Sandbox(limits, isolation=isolation, python=python), max_tests=max_tests)


register("code")(CodeVerifier())  # default limits; a sandbox probe on first use


@register_factory("judge")
def _make_judge(**options: Any) -> Verifier:
    from distill.verify.judge import LLMJudge

    return LLMJudge(**options)


@register_factory("math+judge")
def _make_math_judge_cascade(**options: Any) -> Verifier:
    from distill.verify.judge import Cascade, LLMJudge

    cascade_keys = {"check_fraction", "seed", "judge_reasons"}
    judge = LLMJudge(**{k: v for k, v in options.items() if k not in cascade_keys})
    return Cascade(verify_math, judge, **{k: v for k, v in options.items() if k in cascade_keys})


# --- running many rows -------------------------------------------------------------------------------------


def _verify_chunk(fn: Verifier, rows: list[tuple[str, str | None]]) -> list[Verdict]:
    return [fn(c, r) for c, r in rows]


def map_verdicts(fn: Verifier, completions: Sequence[str], references: Sequence[str | None], workers: int = 1) -> list[Verdict]:
    """fn over the rows, in order; with workers > 1 in a process pool (`fn` must pickle: a module-level
    function or a verifier object such as CodeVerifier). Spawned, not forked: the caller may hold threads
    (Prefect, torch), and forking those can deadlock."""
    rows = list(zip(completions, references))
    if workers <= 1 or len(rows) < 2:
        return _verify_chunk(fn, rows)
    n_chunks = min(len(rows), workers * 4)
    chunks = [rows[i::n_chunks] for i in range(n_chunks)]  # strided: slow rows spread over the workers
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = list(pool.map(_verify_chunk, [fn] * n_chunks, chunks))
    out: list[Verdict] = [None] * len(rows)  # type: ignore[list-item]
    for i, verdicts in enumerate(done):
        out[i::n_chunks] = verdicts
    return out


# --- tables and files --------------------------------------------------------------------------------------


def verify_table_with_stats(
    df: pl.DataFrame,
    verifier: str | Verifier = "math",
    completion_col: str = "completion",
    answer_col: str = "answer",
    *,
    workers: int = 1,
    prompt_col: str = "prompt",
    **options: Any,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """verify_table, plus the verifier's stats: {} for math; {"sandbox": ...} for code; {"judge": ...}
    (asked, decided, disagreements with the rules...) for a cascade. `options` go to the verifier's
    factory; `verifier` may also be a verifier object. The prompt column (when present) is shown to a judge."""
    fn = get_verifier(verifier, **options) if isinstance(verifier, str) else verifier
    if completion_col not in df.columns:
        raise ValueError(f"column {completion_col!r} not found (columns: {', '.join(df.columns)})")
    completions = [c or "" for c in df.get_column(completion_col).to_list()]
    # Answers can arrive typed (JSONL `"answer": 42` reads as Int64); verifiers take strings.
    answers = (
        [None if a is None else str(a) for a in df.get_column(answer_col).to_list()]
        if answer_col in df.columns
        else [None] * df.height
    )
    batch = getattr(fn, "verify_batch", None)
    if batch is not None:
        prompts = df.get_column(prompt_col).to_list() if prompt_col in df.columns else None
        verdicts, stats = batch(completions, answers, prompts=prompts, workers=workers)
    else:
        verdicts, stats = map_verdicts(fn, completions, answers, workers), {}
    out = df.with_columns(
        pl.Series("correct", [v.correct for v in verdicts], dtype=pl.Boolean),
        pl.Series("verify_reason", [v.reason for v in verdicts], dtype=pl.Utf8),
    )
    return out, stats


def verify_table(
    df: pl.DataFrame,
    verifier: str | Verifier = "math",
    completion_col: str = "completion",
    answer_col: str = "answer",
    **kwargs: Any,
) -> pl.DataFrame:
    """`df` with every column kept, in the same row order, plus `correct` (nullable Boolean) and
    `verify_reason` (Utf8). Existing verdict columns are replaced. `workers=N` runs a per-row verifier in N
    processes; other keyword arguments as in verify_table_with_stats."""
    return verify_table_with_stats(df, verifier, completion_col, answer_col, **kwargs)[0]


def verdict_counts(df: pl.DataFrame) -> dict[str, Any]:
    correct = df.get_column("correct")
    return {
        "rows": df.height,
        "correct": int(correct.sum()),  # sums skip nulls
        "incorrect": int((~correct).sum()),
        "unverifiable": int(correct.null_count()),
        "reasons": dict(Counter(df.get_column("verify_reason").to_list())),
    }


def verify_file(
    input_path: str | Path, output_path: str | Path, verifier: str | Verifier = "math", **kwargs: Any
) -> dict[str, Any]:
    """Verify a JSONL/parquet file into a parquet file (written atomically); return the counts, plus the
    verifier's stats (`judge`, `sandbox`) when it has any."""
    out, stats = verify_table_with_stats(read_table(input_path), verifier=verifier, **kwargs)
    write_parquet(out, Path(output_path))
    return {**verdict_counts(out), **stats}


def verify_with_config(df: pl.DataFrame, cfg: Any, engine: Any = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The verify stage's work for a recipe's `verify` section (a distill.config.recipe.VerifyConfig): its verifier
    with its settings; a judge engine is started for judge verifiers (unless `engine` is given) and closed."""
    options: dict[str, Any] = {}
    owned = None
    if cfg.verifier == "code":
        from distill.verify.sandbox import Limits

        c = cfg.code
        limits = Limits(wall_s=c.wall_s, cpu_s=c.cpu_s, memory_mb=c.memory_mb, nproc=c.nproc, output_bytes=c.output_kb << 10)
        options = {"limits": limits, "isolation": c.isolation, "python": c.python, "max_tests": c.max_tests}
    elif "judge" in cfg.verifier:
        j = cfg.judge
        if engine is None:
            from distill.engines.engines import make_engine
            from distill.core.models import resolve_model

            http = {"openai_settings": j.openai} if j.engine == "openai" else {}
            engine = owned = make_engine(
                j.engine, resolve_model(j.model), seed=j.seed, chat_template=j.chat_template, vllm_settings=j.vllm, **http
            )
        options = {"engine": engine, "max_tokens": j.max_tokens}
        if cfg.verifier == "math+judge":
            options.update(check_fraction=j.check_fraction, seed=j.seed)
    try:
        return verify_table_with_stats(df, cfg.verifier, workers=cfg.workers, **options)
    finally:
        if owned is not None:
            owned.close()


# multiple_choice and json join the registry (kept in their own module, which imports this one)
from distill.verify import answers as _answers  # noqa: E402,F401
