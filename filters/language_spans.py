"""Language spans inside a trace: where it leaves its target language, as character offsets.

Two kinds of span, both exempting what the prompt itself says (a quoted Bangla term, an option, a name
copied from the prompt is the prompt's, not a switch of language; compared in NFC), and a run wholly
inside quotation marks (a title or a term mentioned, not used):

- `script_spans`: runs of letters of a script the target language is not written in ("But that
  seems间接的", "economic结构调整"). A run counts when it is language rather than a symbol or a name:
  >= MIN_UNSPACED Han/kana/Thai characters, or >= MIN_UNSPACED_GLUED written against a Latin letter
  with no space (a slip: "those发达 countries"; a name stands apart: "in 北京"),
  >= MIN_SPACED_WORDS words of another spaced script, and, inside a text whose target is not written in
  Latin letters, >= MIN_LATIN_WORDS Latin words in a row (fewer are technical terms: "Python", "API").
- `paragraph_spans`: for a target written in a script other languages share (Latin, Cyrillic), each
  paragraph's language by fastText (filters/langid.py): a paragraph fastText places in another language
  with probability >= CONFIDENT is a foreign span (English reasoning on a Swahili prompt; a French
  paragraph in English reasoning). Short paragraphs (< MIN_PARAGRAPH_LETTERS) are not judged.

Offsets are into the text as given: code, LaTeX and URLs are masked with spaces of the same length
before searching, never removed.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

from filters.langid import CONFIDENT, fasttext_code
from filters.unicode_scripts import SCRIPT_RANGES, UNSPACED_SCRIPTS, expected_scripts, normalize_lang

MIN_UNSPACED = 4
# A shorter run of an unspaced script counts when it is glued to a Latin letter: a model that slips
# into Chinese mid-sentence writes "those发达 countries", "seems间接的"; a name is set apart ("in 北京").
MIN_UNSPACED_GLUED = 2
# One or two words of another spaced script are a term or a name ("a মৌলিক (basic) vowel"); three
# make a phrase in that language.
MIN_SPACED_WORDS, MIN_SPACED_LETTERS = 3, 9
MIN_LATIN_WORDS, MIN_LATIN_LETTERS = 4, 16
MIN_PARAGRAPH_LETTERS = 60
# Counting stops here: a trace in the wrong language has a span in every sentence.
MAX_SPANS = 50
# Scripts never counted as foreign language: Greek letters are mathematics.
NOT_LANGUAGE = frozenset({"Greek"})
# Languages fastText confuses with each other and which a reader would not call a switch.
SIBLINGS: dict[str, frozenset[str]] = {
    "id": frozenset({"ms"}), "ms": frozenset({"id"}), "no": frozenset({"nb", "nn", "da"}), "nb": frozenset({"no", "nn", "da"}),
    "sr": frozenset({"hr", "bs"}), "hr": frozenset({"sr", "bs"}), "bs": frozenset({"sr", "hr"}), "gl": frozenset({"pt", "es"}),
}  # fmt: skip

_MASK = re.compile(
    r"```[\s\S]*?(?:```|\Z)|~~~[\s\S]*?(?:~~~|\Z)|`[^`\n]+`|\$\$[\s\S]*?(?:\$\$|\Z)|\\\[[\s\S]*?(?:\\\]|\Z)"
    r"|\\\([\s\S]*?(?:\\\)|\Z)|\\begin\{([A-Za-z]+\*?)\}[\s\S]*?\\end\{\1\}|\$(?!\s)(?:\\.|[^$\\\n])+?(?<!\s)\$(?!\d)"
    r"|\\[A-Za-z]+|</?think>|(?:https?://|ftp://|www\.)\S+"
)
_PARAGRAPH = re.compile(r"[^\n]+(?:\n(?![ \t]*\n)[^\n]*)*")
_LATIN_LETTER = re.compile(f"[{SCRIPT_RANGES['Latin']}]")
_WORD = re.compile(r"\S+")


def mask(text: str) -> str:
    """`text` with code, LaTeX, URLs and think tags replaced by spaces of the same length (offsets kept)."""
    return _MASK.sub(lambda m: " " * (m.end() - m.start()), text or "")


@functools.lru_cache(maxsize=None)
def _runs(target: frozenset[str]) -> re.Pattern[str] | None:
    """One pattern with a named group per foreign script: a run of its letters, words joined by
    spaces/apostrophes/hyphens for spaced scripts."""
    parts = []
    for script, ranges in SCRIPT_RANGES.items():
        if script in target or script in NOT_LANGUAGE:
            continue
        joiner = "" if script in UNSPACED_SCRIPTS else r"(?:[ \t'’\-]+[" + ranges + "]+)*"
        parts.append(f"(?P<{script}>[{ranges}]+{joiner})")
    return re.compile("|".join(parts)) if parts else None


def _substantial(script: str, run: str, latin_target: bool, glued: bool = False) -> bool:
    if script in UNSPACED_SCRIPTS:
        return len(run) >= (MIN_UNSPACED_GLUED if glued else MIN_UNSPACED)
    words = _WORD.findall(run)
    letters = sum(map(len, words))
    if script == "Latin":
        return not latin_target and len(words) >= MIN_LATIN_WORDS and letters >= MIN_LATIN_LETTERS
    return len(words) >= MIN_SPACED_WORDS and letters >= MIN_SPACED_LETTERS


@functools.lru_cache(maxsize=4096)
def _prompt_view(prompt: str) -> tuple[str, frozenset[str]]:
    """The prompt in NFC (models write "য়" precomposed where a prompt has "য" + nukta) and its words."""
    nfc = unicodedata.normalize("NFC", prompt)
    return nfc, frozenset(_WORD.findall(nfc))


def _from_prompt(run: str, prompt: str) -> bool:
    """The run is the prompt's own words: the whole run, or every word of it, occurs in the prompt."""
    nfc, words = _prompt_view(prompt)
    run = unicodedata.normalize("NFC", run)
    if run in nfc:
        return True
    return all(w in words or w in nfc for w in _WORD.findall(run))


_OPENING_QUOTES = "\"'“„«「『‘"
_CLOSING_QUOTES = "\"'”“»」』’"


def _quoted(masked: str, a: int, b: int) -> bool:
    """The run is a quotation: a quote mark opens right before it and one closes right after it (a
    title, a term or a name mentioned rather than used: "the novel "জোছনা ও জননীর গল্প"")."""
    before = masked[max(0, a - 2) : a].rstrip()
    after = masked[b : b + 2].lstrip()
    return bool(before) and before[-1] in _OPENING_QUOTES and bool(after) and after[0] in _CLOSING_QUOTES


def script_spans(text: str, lang: object, prompt: str = "", allowed: Iterable[str] = ()) -> list[tuple[int, int]]:
    """[start, end) of each run of foreign-script language in `text` (see the module doc), in order."""
    target = expected_scripts(lang)
    if target is None:
        return []
    for extra in allowed:
        target = target | (expected_scripts(extra) or frozenset())
    if text.isascii() and "Latin" in target:
        return []
    masked = mask(text)
    prompt = prompt or ""
    latin_target = "Latin" in target
    spans = []
    rx = _runs(target)
    if rx is None:
        return spans
    for m in rx.finditer(masked):
        script, run = m.lastgroup or "", m.group()
        a, b = m.start(), m.end()
        glued = bool(a and _LATIN_LETTER.match(masked[a - 1])) or bool(b < len(masked) and _LATIN_LETTER.match(masked[b]))
        if _substantial(script, run, latin_target, glued) and not _quoted(masked, a, b) and not _from_prompt(run, prompt):
            spans.append((a, b))
            if len(spans) >= MAX_SPANS:
                break
    return sorted(spans)


def shared_script(lang: object) -> bool:
    """True for languages written in a script others share (Latin, Cyrillic, Arabic, Devanagari)."""
    scripts = expected_scripts(lang)
    return bool(scripts) and bool(scripts & {"Latin", "Cyrillic", "Arabic", "Devanagari"})


def paragraph_spans(text: str, lang: object, allowed: Iterable[str] = ()) -> tuple[list[tuple[int, int]], int, int, int]:
    """(foreign paragraph spans, their letters, letters of all judged paragraphs, switches between
    target and foreign paragraphs) for a `lang` written in a shared script; paragraphs are judged by
    fastText on their masked text (see the module doc): foreign when confidently another language of
    the same script, target when fastText names the target, else undecided (not a switch)."""
    code = normalize_lang(lang)
    if not code or not shared_script(code):
        return [], 0, 0, 0
    ok = {code, *allowed, *SIBLINGS.get(code, ())}
    scripts = expected_scripts(code) or frozenset()
    masked = mask(text)
    spans, foreign, total, switches, last = [], 0, 0, 0, 0
    for m in _PARAGRAPH.finditer(masked):
        para = m.group()
        letters = len(_LATIN_LETTER.findall(para)) if "Latin" in scripts else sum(c.isalpha() for c in para)
        if letters < MIN_PARAGRAPH_LETTERS:
            continue
        total += letters
        found, p = fasttext_code(para)
        # another language of the same script; one in another script is a script span already
        if found and found not in ok and p >= CONFIDENT and (expected_scripts(found) or frozenset()) & scripts:
            foreign += letters
            spans.append((m.start(), m.end()))
            label = -1
        else:
            label = 1 if found in ok else 0
        if label:
            switches += bool(last and label != last)
            last = label
    return spans, foreign, total, switches
