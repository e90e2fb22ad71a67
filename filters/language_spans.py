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

from filters.langid import CONFIDENT, MAX_CHARS, fasttext_code, langdetect_code
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


# (opening, closing) quotation marks; a straight quote closes itself.
_QUOTE_PAIRS = (('"', '"'), ("\u201c", "\u201d"), ("\u201e", "\u201c"), ("\u00ab", "\u00bb"), ("\u300c", "\u300d"),
                ("\u300e", "\u300f"), ("\u2018", "\u2019"), ("'", "'"))  # fmt: skip
MAX_QUOTE = 300  # characters a quotation may span on either side of the run


def _quoted(masked: str, a: int, b: int) -> bool:
    """The run lies inside a quotation on its line (a title, a term, a phrase mentioned rather than
    used: the novel "জোছনা ও জননীর গল্প", the saying "বৃক্ষ মানে শুধু বৃদ্ধি নয়, এটি ..."): an opening
    mark before it that nothing closed, and a closing mark after it."""
    line_start = max(masked.rfind("\n", 0, a) + 1, a - MAX_QUOTE)
    line_end = masked.find("\n", b, b + MAX_QUOTE)
    before, after = masked[line_start:a], masked[b : line_end if line_end >= 0 else b + MAX_QUOTE]
    for open_, close in _QUOTE_PAIRS:
        if open_ == close:
            if open_ == "'":  # apostrophes: only a quote right against the run counts
                if before.rstrip().endswith("'") and after.lstrip().startswith("'"):
                    return True
            elif before.count(open_) % 2 and open_ in after:
                return True
        elif before.rfind(open_) > before.rfind(close) and close in after:
            return True
    return False


def _runs_in(masked: str, target: frozenset[str], latin_target: bool):
    """(start, end, is language) for every run of a foreign script: language unless it is too short
    to be (a name, a term), quoted, or the prompt's own words (`prompt` applied by the callers)."""
    rx = _runs(target)
    if rx is None:
        return
    for m in rx.finditer(masked):
        script, run = m.lastgroup or "", m.group()
        a, b = m.start(), m.end()
        glued = bool(a and _LATIN_LETTER.match(masked[a - 1])) or bool(b < len(masked) and _LATIN_LETTER.match(masked[b]))
        yield a, b, run, _substantial(script, run, latin_target, glued)


def _target_scripts(lang: object, allowed: Iterable[str]) -> frozenset[str] | None:
    target = expected_scripts(lang)
    if target is None:
        return None
    for extra in allowed:
        target = target | (expected_scripts(extra) or frozenset())
    return target


def script_spans(text: str, lang: object, prompt: str = "", allowed: Iterable[str] = ()) -> list[tuple[int, int]]:
    """[start, end) of each run of foreign-script language in `text` (see the module doc), in order."""
    target = _target_scripts(lang, allowed)
    if target is None or (text.isascii() and "Latin" in target):
        return []
    masked = mask(text)
    prompt = prompt or ""
    spans = []
    for a, b, run, substantial in _runs_in(masked, target, "Latin" in target):
        if substantial and not _quoted(masked, a, b) and not _from_prompt(run, prompt):
            spans.append((a, b))
            if len(spans) >= MAX_SPANS:
                break
    return spans


def exempt_mentions(text: str, lang: object, prompt: str = "", allowed: Iterable[str] = ()) -> str:
    """`text` with every foreign-script run that is mentioned rather than used blanked out (spaces of the
    same length): the prompt's own words quoted back, and runs inside quotation marks. The script
    measure (filters.language_mixing.language_scores) then counts neither share nor switches for them."""
    target = _target_scripts(lang, allowed)
    if target is None or (text.isascii() and "Latin" in target):
        return text
    masked = mask(text)
    cut = [(a, b) for a, b, run, _ in _runs_in(masked, target, "Latin" in target) if _quoted(masked, a, b) or _from_prompt(run, prompt or "")]
    if not cut:
        return text
    out, last = [], 0
    for a, b in cut:
        out += [text[last:a], " " * (b - a)]
        last = b
    out.append(text[last:])
    return "".join(out)


def shared_script(lang: object) -> bool:
    """True for languages written in a script others share (Latin, Cyrillic, Arabic, Devanagari)."""
    scripts = expected_scripts(lang)
    return bool(scripts) and bool(scripts & {"Latin", "Cyrillic", "Arabic", "Devanagari"})


# Labels that are no evidence of reasoning in another language: Latin is what species names and legal
# phrases are written in ("Hydra: Cnidaria (radial)"), nobody reasons in it.
NOT_EVIDENCE = frozenset({"la"})
_FORMULA_LINE = re.compile(r"=|[^\w\s]{3}")


def _prose(paragraph: str) -> str:
    """The prose lines of a paragraph: lines holding a formula (an "=" or a run of symbols: "cos60° cosA
    - sin60° sinA = ...", "(y - x)(z - x)") and lines under half letters are left out of identification."""
    keep = []
    for line in paragraph.split("\n"):
        chars = sum(not c.isspace() for c in line)
        if chars and not _FORMULA_LINE.search(line) and sum(c.isalpha() for c in line) >= 0.5 * chars:
            keep.append(line)
    return "\n".join(keep)


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
        para = _prose(m.group())
        letters = len(_LATIN_LETTER.findall(para)) if "Latin" in scripts else sum(c.isalpha() for c in para)
        if letters < MIN_PARAGRAPH_LETTERS:
            continue
        total += letters
        found, p = fasttext_code(para)
        sure = p >= CONFIDENT
        # fastText unsure: langdetect decides, unless fastText still names a target other than English
        # (Swahili reads as sw at p 0.1-0.5; English reads as en at p > 0.9, so an unsure "en" is suspect).
        # Its verdict counts towards the share only: a span needs fastText to be sure.
        if not sure and (found not in ok or found == "en"):
            found = normalize_lang(langdetect_code(" ".join(para[:MAX_CHARS].split())))
        # another language of the same script; one in another script is a script span already
        if found and found not in ok | NOT_EVIDENCE and (expected_scripts(found) or frozenset()) & scripts:
            foreign += letters
            if sure:
                spans.append((m.start(), m.end()))
            label = -1
        else:
            label = 1 if found in ok else 0
        if label:
            switches += bool(last and label != last)
            last = label
    return spans, foreign, total, switches
