"""Language mixing: how much of a text is in its target language, and how often it switches.

R1's cold-start and SFT data reject traces that mix languages. Whole-document language identifiers
(langdetect) miss mixing: a trace that is 40 % Chinese sentences still comes back `en: 0.99999`, and
per-sentence langdetect is far too slow for hundreds of thousands of traces. So `language_scores` reads
Unicode scripts (filters/unicode_scripts.py) instead (a trace with no letter outside its target script
returns at once), which sees mixing *across scripts* (zh/en, ru/en, ja/en, ...). Mixing inside the
Latin script (English with French sentences) is measured per sentence by function words
(`latin_language_scores`, filters/function_words.py: en, fr, de, es, it, pt, nl), with langdetect only
for the few sentences that profile leaves open; curation runs it only on traces holding several
foreign function words (a vectorised count), so most traces never pay for it. Other same-script pairs
(ru/uk, zh/ja-kanji-only, es/ca, ...) are not told apart. A lone word in another script (a proper
noun, a term) is never a switch.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

from filters.function_words import PROFILED_LANGS, WORD_LANG, decide
from filters.langid import CONFIDENT, fasttext_code
from filters.unicode_scripts import (
    DROP_SINGLE,
    SCRIPT_RANGES,
    SCRIPT_WEIGHTS,
    UNSPACED_SCRIPTS,
    dominant_script,
    expected_scripts,
    script_runs,
    strip_non_language,
)

# letters of spaced scripts. "北京" or "Москва" alone is a proper noun, not a switch of language.
MIN_UNSPACED_CHARS = 4
MIN_SPACED_WORDS = 2
MIN_SPACED_LETTERS = 6
# A segment is foreign (target) when foreign (target) letters are more than this share of its letter
# units.
DOMINANCE = 0.5


def _substantial(unspaced: int, spaced: int, words: int) -> bool:
    return unspaced >= MIN_UNSPACED_CHARS or (words >= MIN_SPACED_WORDS and spaced >= MIN_SPACED_LETTERS)


@functools.lru_cache(maxsize=None)
def _foreign_letter(target: frozenset[str]) -> re.Pattern[str]:
    """Matches any letter outside the `target` scripts."""
    return re.compile(f"[^\\W\\d_{''.join(SCRIPT_RANGES[s] for s in target)}]")


@functools.lru_cache(maxsize=None)
def _foreign_classes(target: frozenset[str]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(a run of two foreign letters of a script whose lone letters are variable names (Latin, Greek,
    other), four foreign letters of any other script anywhere) for `target`."""
    own = "".join(SCRIPT_RANGES[s] for s in target)
    counted = "".join(r for s, r in SCRIPT_RANGES.items() if s not in DROP_SINGLE and s not in target)
    all_counted = "".join(r for s, r in SCRIPT_RANGES.items() if s not in DROP_SINGLE)
    pair = re.compile(f"[^\\W\\d_{own}{all_counted}]{{2}}")
    four = re.compile(f"(?:[{counted}][^{counted}]*?){{4}}") if counted else re.compile(r"(?!)")
    return pair, four


def _nothing_substantial(clean: str, target: frozenset[str]) -> bool:
    """True when no segment of `clean` can hold a substantial foreign part: no two-letter foreign run
    of a small-letter script, and fewer than four letters of other foreign scripts in all."""
    pair, four = _foreign_classes(target)
    return not pair.search(clean) and not four.search(clean)


def language_scores(
    text: str, lang: object, weights: Mapping[str, float] = SCRIPT_WEIGHTS, allowed: Iterable[str] = ()
) -> tuple[float, int]:
    """(target_lang_share, lang_switches) in one pass; see those functions.

    For an unknown or unmapped `lang`, the text's own dominant script is the target: mixing is still
    measured, wrong language cannot be. `allowed` languages (a translation task's requested language)
    count as target too.
    """
    target = expected_scripts(lang)
    if target is not None:
        for extra in allowed:
            target = target | (expected_scripts(extra) or frozenset())
    text = text or ""
    if target is not None and not _foreign_letter(target).search(text):
        return 1.0, 0  # fast path: no letter of another script anywhere, not even inside code or math
    clean = strip_non_language(text)
    if clean.isascii() and (target is None or "Latin" in target):
        return 1.0, 0  # only Latin letters are left, all of them on target
    if target is not None and _nothing_substantial(clean, target):
        return 1.0, 0
    runs = list(script_runs(clean))
    if target is None:
        profile: dict[str, int] = {}
        for kind, n in runs:
            if kind != "SEP":
                profile[kind] = profile.get(kind, 0) + n
        dom = dominant_script(profile, weights)
        if dom is None:
            return 1.0, 0
        target = frozenset({dom})

    total_t = total_f = 0.0
    switches = 0
    last = 0  # label of the last labelled segment: 1 target, -1 foreign, 0 none yet
    # Per segment: letter units, unspaced chars, spaced letters and words, for target (t) and foreign (f).
    tw = fw = 0.0
    tu = ts = tn = fu = fs = fn = 0
    for kind, n in [*runs, ("SEP", 0)]:
        if kind != "SEP":
            w = n * weights.get(kind, 1.0)
            if kind in target:
                tw += w
                if kind in UNSPACED_SCRIPTS:
                    tu += n
                else:
                    ts += n
                    tn += 1
            else:
                fw += w
                if kind in UNSPACED_SCRIPTS:
                    fu += n
                else:
                    fs += n
                    fn += 1
            continue
        seg_w = tw + fw
        if seg_w:
            foreign_ok = _substantial(fu, fs, fn)
            total_t += tw
            if foreign_ok:  # a lone foreign word (a name, a term) is not counted against the share
                total_f += fw
            label = 0
            if foreign_ok and fw > DOMINANCE * seg_w:
                label = -1
            elif tw > DOMINANCE * seg_w and _substantial(tu, ts, tn):
                label = 1
            if label:
                if last and label != last:
                    switches += 1
                last = label
            tw = fw = 0.0
            tu = ts = tn = fu = fs = fn = 0
    total = total_t + total_f
    return (total_t / total if total else 1.0), switches


def target_lang_share(text: str, lang: object, weights: Mapping[str, float] = SCRIPT_WEIGHTS) -> float:
    """Share of the text's letter units written in `lang`'s script(s); 1.0 when there are no letters.

    Foreign letters count only where they are substantial within their sentence/clause segment (see
    `lang_switches`): a lone proper noun or technical term in another script ("北京", "Python" in a
    Chinese trace) does not lower the share. Pass `weights={}` to count characters unweighted.
    """
    return language_scores(text, lang, weights)[0]


def lang_switches(text: str, lang: object, weights: Mapping[str, float] = SCRIPT_WEIGHTS) -> int:
    """How often consecutive sentence/clause segments switch between the target script and a foreign one.

    Segments are split at sentence and clause punctuation (ASCII and CJK) and line breaks. A segment is
    labelled foreign when foreign letters dominate it (> 50 % of its letter units) and are substantial
    (>= 4 Han/kana/Thai characters, or >= 2 words and 6 letters of spaced scripts); target likewise;
    other segments are skipped. A single foreign word, such as a proper noun, is not a switch.
    """
    return language_scores(text, lang, weights)[1]


# --- same-script languages (function words) ------------------------------------------------------

# Sentences for the function-word pass: clauses are too short to hold enough function words.
_SENTENCE_SPLIT = re.compile(r"[.!?;\n\u3002\uff01\uff1f]+")
_LATIN_WORD = re.compile(r"[a-zà-öø-ÿœß]+(?:'[st])?")
# A lower-case run followed by a capital is an identifier, not a word: "cosA" is cos(A), not Italian "cosa".
_IDENTIFIER = re.compile(r"\b[a-z]+[A-Z]\w*")
# A sentence the profile cannot decide goes to langdetect only with this many words and some evidence
# of another language (one of its function words).
LANGDETECT_MIN_WORDS = 4


def detect_profiled(sentence: str) -> str | None:
    """The language of one sentence when it is a profiled Latin language (PROFILED_LANGS) and fastText
    names it with probability >= CONFIDENT, else None (langdetect here cost ~30 ms a sentence)."""
    code, p = fasttext_code(sentence)
    if p < CONFIDENT:
        return None  # undecided: counts as on target
    return code if code in PROFILED_LANGS else None


def latin_language_scores(text: str, lang: str, allowed: Iterable[str] = ()) -> tuple[float, int]:
    """(share, switches) of Latin-script sentences in `lang` versus other profiled Latin languages.

    The same-script complement of `language_scores`: each sentence of the text (code, LaTeX and URLs
    removed) is labelled by its function words (filters.function_words.classify); a sentence the
    profile cannot decide, that has at least one foreign function word and LANGDETECT_MIN_WORDS words,
    goes to langdetect (seeded, so deterministic). Undecided sentences count as on target. The share
    is the target's part of the Latin letters; switches count changes between labelled sentences.
    Only meaningful for `lang` in PROFILED_LANGS (en, fr, de, es, it, pt, nl).
    """
    ok = {lang, *allowed}
    clean = _IDENTIFIER.sub(" ", strip_non_language(text or ""))
    total = foreign = 0
    switches = last = 0
    for sentence in _SENTENCE_SPLIT.split(clean.lower()):
        words = _LATIN_WORD.findall(sentence)
        if not words:
            continue
        letters = sum(map(len, words))
        total += letters
        counts: dict[str, int] = {}
        for w in words:
            wl = WORD_LANG.get(w)
            if wl is not None:
                counts[wl] = counts.get(wl, 0) + 1
        if not counts:
            continue
        found = decide(counts)
        if found is None and len(words) >= LANGDETECT_MIN_WORDS and any(c not in ok for c in counts):
            found = detect_profiled(sentence)
        if found is None:
            continue
        label = 1 if found in ok else -1
        if label < 0:
            foreign += letters
        if last and label != last:
            switches += 1
        last = label
    return (1.0 - foreign / total if total else 1.0), switches


