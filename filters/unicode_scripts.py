"""Unicode scripts of a text: which scripts its letters belong to, with what is not language removed.

The language measures (filters/language_mixing.py, filters/language.py) read scripts with regular
expressions instead of running a language identifier per sentence: thousands of 2,000-character traces
per second. This module holds the tables (script ranges, which language is written in which script),
the cleaning and the tokenizing into runs of one script.

What is not language is removed before counting: fenced and inline code, LaTeX (`$...$`, `$$...$$`,
`\\(...\\)`, `\\[...\\]`, environments, `\\commands`), URLs, math alphanumerics (𝑥), `<think>` tags;
digits and punctuation are never counted, and neither are lone Latin/Greek letters (variable names
such as `x`, `a_n` or `θ`).

Scripts differ in how much text one character carries: a Han character stands for roughly three Latin
letters. Shares and segment dominance therefore use `SCRIPT_WEIGHTS` (letter units); `script_profile`
itself returns raw character counts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# --- scripts -------------------------------------------------------------------------------------

# Letters only (digits and punctuation of each block are left out). Order matters: "Other" is last.
SCRIPT_RANGES: dict[str, str] = {
    "Latin": "A-Za-z\u00aa\u00ba\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff\uff21-\uff3a\uff41-\uff5a",
    "Greek": "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u03ff\u1f00-\u1fff",
    "Cyrillic": "\u0400-\u0481\u048a-\u052f",
    "Armenian": "\u0531-\u0556\u0561-\u0587",
    "Hebrew": "\u05d0-\u05ea\u05ef-\u05f2",
    "Arabic": "\u0620-\u064a\u066e\u066f\u0671-\u06d3\u06d5\u06ee\u06ef\u06fa-\u06fc\u06ff\u0750-\u077f"
    "\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufefc",
    "Devanagari": "\u0900-\u0963\u0971-\u097f",
    "Bengali": "\u0980-\u09e3\u09f0\u09f1",
    "Gurmukhi": "\u0a00-\u0a65",
    "Gujarati": "\u0a80-\u0ae5",
    "Tamil": "\u0b80-\u0be5",
    "Telugu": "\u0c00-\u0c65",
    "Kannada": "\u0c80-\u0ce5",
    "Malayalam": "\u0d00-\u0d65",
    "Thai": "\u0e01-\u0e3a\u0e40-\u0e4e",
    "Georgian": "\u10a0-\u10fa\u10fc-\u10ff",
    "Hangul": "\u1100-\u11ff\u3131-\u318e\uac00-\ud7a3",
    "Hiragana": "\u3041-\u309f",
    "Katakana": "\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff\uff66-\uff9f",
    "Han": "\u3005\u3007\u3021-\u3029\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f",
}
SCRIPTS: tuple[str, ...] = (*SCRIPT_RANGES, "Other")

# Scripts written without spaces between words: a "word" cannot be counted, only characters.
UNSPACED_SCRIPTS = frozenset({"Han", "Hiragana", "Katakana", "Thai"})
# A lone letter of these scripts is a variable name (x, θ), not language.
DROP_SINGLE = frozenset({"Latin", "Greek", "Other"})

# Letter units per character, so that shares compare amounts of text rather than characters.
SCRIPT_WEIGHTS: dict[str, float] = {"Han": 3.0, "Hiragana": 1.5, "Katakana": 1.5, "Hangul": 2.0}

# --- languages -----------------------------------------------------------------------------------

_LATIN_LANGS = (
    "en fr de es it pt nl sv no nb nn da fi is et lv lt pl cs sk sl hr bs sr-latn ro hu tr az uz id ms "
    "tl vi sq ca gl eu af sw so ga cy mt lb eo la ha yo ig zu xh st tn"
).split()
LANG_SCRIPTS: dict[str, frozenset[str]] = {
    **{code: frozenset({"Latin"}) for code in _LATIN_LANGS},
    **{code: frozenset({"Cyrillic"}) for code in ("ru", "uk", "be", "bg", "mk", "sr", "kk", "ky", "mn", "tg")},
    **{code: frozenset({"Arabic"}) for code in ("ar", "fa", "ur", "ps")},
    **{code: frozenset({"Devanagari"}) for code in ("hi", "mr", "ne", "sa")},
    "zh": frozenset({"Han"}),
    "ja": frozenset({"Han", "Hiragana", "Katakana"}),
    "ko": frozenset({"Hangul"}),
    "el": frozenset({"Greek"}),
    "he": frozenset({"Hebrew"}),
    "yi": frozenset({"Hebrew"}),
    "th": frozenset({"Thai"}),
    "hy": frozenset({"Armenian"}),
    "ka": frozenset({"Georgian"}),
    "bn": frozenset({"Bengali"}),
    "ta": frozenset({"Tamil"}),
    "te": frozenset({"Telugu"}),
    "kn": frozenset({"Kannada"}),
    "ml": frozenset({"Malayalam"}),
    "gu": frozenset({"Gujarati"}),
    "pa": frozenset({"Gurmukhi"}),
}

_LANG_NAMES = {
    "english": "en", "chinese": "zh", "mandarin": "zh", "japanese": "ja", "korean": "ko",
    "russian": "ru", "ukrainian": "uk", "french": "fr", "german": "de", "spanish": "es",
    "italian": "it", "portuguese": "pt", "arabic": "ar", "hindi": "hi", "greek": "el",
    "hebrew": "he", "thai": "th", "vietnamese": "vi", "turkish": "tr", "polish": "pl", "dutch": "nl",
}  # fmt: skip

UNKNOWN = "unknown"


def normalize_lang(lang: object) -> str | None:
    """`"zh-CN"` -> `"zh"`, `"English"` -> `"en"`, `"sr-Latn"` -> `"sr-latn"`; None for missing/empty."""
    if lang is None:
        return None
    code = str(lang).strip().lower().replace("_", "-")
    if not code:
        return None
    if code in _LANG_NAMES:
        return _LANG_NAMES[code]
    if code in LANG_SCRIPTS:
        return code
    primary = code.split("-", 1)[0]
    return _LANG_NAMES.get(primary, primary)


def expected_scripts(lang: object) -> frozenset[str] | None:
    """The script(s) a language is written in; None for unknown or unmapped codes."""
    code = normalize_lang(lang)
    return LANG_SCRIPTS.get(code) if code else None


# --- cleaning ------------------------------------------------------------------------------------

# Every alternative starts with a literal character, so the regex engine skips ahead quickly.
_MARKUP = re.compile(
    r"```[\s\S]*?(?:```|\Z)"  # fenced code (an unclosed fence runs to the end)
    r"|~~~[\s\S]*?(?:~~~|\Z)"
    r"|`[^`\n]+`"  # inline code
    r"|\$\$[\s\S]*?(?:\$\$|\Z)"  # display math
    r"|\\\[[\s\S]*?(?:\\\]|\Z)"
    r"|\\\([\s\S]*?(?:\\\)|\Z)"
    r"|\\begin\{([A-Za-z]+\*?)\}[\s\S]*?\\end\{\1\}"  # \begin{align} ... \end{align}
    r"|\$(?!\s)(?:\\.|[^$\\\n])+?(?<!\s)\$(?!\d)"  # inline math; `$5 and $10` is not math
    r"|\\[A-Za-z]+"  # a bare LaTeX command outside math (\boxed, \frac)
    r"|</?think>"
)
_URL = re.compile(r"(?:https?://|ftp://|www\.)\S+")
_MATH_LETTERS = re.compile(r"[\U0001d400-\U0001d7ff\u2100-\u214f]+")  # 𝑥, ℝ: symbols, not words


def strip_non_language(text: str) -> str:
    """Replace code, LaTeX, URLs, math letters and think tags with spaces (line breaks are kept inside
    plain text for segmentation). Digits need no removing: only letters are ever counted."""
    text = _MARKUP.sub(" ", text or "")
    if "://" in text or "www." in text:
        text = _URL.sub(" ", text)
    if not text.isascii():
        text = _MATH_LETTERS.sub(" ", text)
    return text


# --- tokenizing ----------------------------------------------------------------------------------

_ALL_RANGES = "".join(SCRIPT_RANGES.values())
_SEP = r"[.!?;:,\n\u3002\uff01\uff1f\uff1b\uff1a\uff0c\u3001\u2026\u0964\u061f\u060c\u061b]+"
# A separator run, a Latin run, a Han run (the common cases, told apart by group number), or a run of
# other letters (split by script below).
_LATIN, _HAN = SCRIPT_RANGES["Latin"], SCRIPT_RANGES["Han"]
_SEP_OR_LETTERS = re.compile(f"({_SEP})|([{_LATIN}]+)|([{_HAN}]+)|[^\\W\\d_{_LATIN}{_HAN}]+")
_OTHER = f"[^\\W\\d_{_ALL_RANGES}]+"
_SCRIPT_RUN = {name: re.compile(f"[{ranges}]+") for name, ranges in SCRIPT_RANGES.items()}
_SCRIPT_RUN["Other"] = re.compile(_OTHER)
# Splits a letter run that mixes scripts.
_BY_SCRIPT = re.compile(
    "|".join(f"(?P<{name}>[{ranges}]+)" for name, ranges in SCRIPT_RANGES.items()) + f"|(?P<Other>{_OTHER})"
)
ASCII_WORD = re.compile(r"[A-Za-z]{2,}")
_CHAR_SCRIPT: dict[str, str] = {}


def _script_of(ch: str) -> str:
    script = _CHAR_SCRIPT.get(ch)
    if script is None:
        script = next((name for name, rx in _SCRIPT_RUN.items() if rx.fullmatch(ch)), "Other")
        _CHAR_SCRIPT[ch] = script
    return script


def script_runs(clean: str):
    """Yield (script or "SEP", length) for each run of one script's letters or of separators.

    Lone letters of Latin, Greek and other small scripts are variable names and are skipped.
    """
    for m in _SEP_OR_LETTERS.finditer(clean):
        i = m.lastindex
        if i == 1:
            yield "SEP", 0
            continue
        if i == 2:
            n = m.end() - m.start()
            if n > 1:
                yield "Latin", n
            continue
        if i == 3:
            yield "Han", m.end() - m.start()
            continue
        run = m.group()
        script = _script_of(run[0])
        if _SCRIPT_RUN[script].fullmatch(run):
            if len(run) > 1 or script not in DROP_SINGLE:
                yield script, len(run)
            continue
        for sub in _BY_SCRIPT.finditer(run):
            n = sub.end() - sub.start()
            if n > 1 or sub.lastgroup not in DROP_SINGLE:
                yield sub.lastgroup, n


def script_profile(text: str) -> dict[str, int]:
    """Letters per Unicode script, ignoring code, LaTeX, URLs, numbers and lone variable letters.

    `script_profile("Let $x=1$: 北京 is big")` -> `{"Latin": 8, "Han": 2}` ("Let", "is", "big").
    """
    clean = strip_non_language(text)
    if clean.isascii():
        n = sum(len(w) for w in ASCII_WORD.findall(clean))
        return {"Latin": n} if n else {}
    profile: dict[str, int] = {}
    for kind, n in script_runs(clean):
        if kind != "SEP":
            profile[kind] = profile.get(kind, 0) + n
    return profile


def dominant_script(profile: Mapping[str, float], weights: Mapping[str, float]) -> str | None:
    best, best_w = None, 0.0
    for script, n in profile.items():
        w = n * weights.get(script, 1.0)
        if w > best_w:
            best, best_w = script, w
    return best


# A segment gets a label only when its dominant side (target or foreign) is substantial: at least
# this many characters of an unspaced script (Han, kana, Thai), or at least this many words and
