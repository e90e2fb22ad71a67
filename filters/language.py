"""Language measures for curation: which scripts a text is written in, and how often it switches.

R1's cold-start and SFT data reject traces that mix languages. Whole-document language identifiers
(langdetect) miss mixing: a trace that is 40 % Chinese sentences still comes back `en: 0.99999`, and
per-sentence langdetect is far too slow for hundreds of thousands of traces. So the measures here read
Unicode scripts with regular expressions instead (thousands of 2,000-character traces per second; a
trace with no letter outside its target script returns at once), which sees mixing *across scripts*
(zh/en, ru/en, ja/en, ...). Mixing inside the Latin script (English with French sentences) is measured
per sentence by function words (`latin_language_scores`, filters/function_words.py: en, fr, de, es, it,
pt, nl), with langdetect only for the few sentences that profile leaves open; curation runs it only on
traces holding several foreign function words (a vectorised count), so most traces never pay for it.
Other same-script pairs (ru/uk, zh/ja-kanji-only, es/ca, ...) are not told apart.

What the task asks for is exempt (`exempt_task_text`, `requested_languages`): in a translation task the
requested language counts as target, quoted phrases are the translation and the answer is not
measured; in any task a phrase quoted from the prompt is the prompt's. A lone word in another script (a
proper noun, a term) is never a switch.

What is not language is removed before counting: fenced and inline code, LaTeX (`$...$`, `$$...$$`,
`\\(...\\)`, `\\[...\\]`, environments, `\\commands`), URLs, math alphanumerics (𝑥), `<think>` tags;
digits and punctuation are never counted, and neither are lone Latin/Greek letters (variable names
such as `x`, `a_n` or `θ`).

Scripts differ in how much text one character carries: a Han character stands for roughly three Latin
letters. Shares and segment dominance therefore use `SCRIPT_WEIGHTS` (letter units); `script_profile`
itself returns raw character counts.

`detect_language` (langdetect, seeded so it is deterministic) is only for rows whose `language` is
missing; it reads the prompt.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterable, Mapping

from filters.function_words import PROFILED_LANGS, WORD_LANG, decide

# --- scripts -------------------------------------------------------------------------------------

# Letters only (digits and punctuation of each block are left out). Order matters: "Other" is last.
_SCRIPT_RANGES: dict[str, str] = {
    "Latin": "A-Za-z\u00aa\u00ba\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff\uff21-\uff3a\uff41-\uff5a",
    "Greek": "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u03ff\u1f00-\u1fff",
    "Cyrillic": "\u0400-\u0481\u048a-\u052f",
    "Armenian": "\u0531-\u0556\u0561-\u0587",
    "Hebrew": "\u05d0-\u05ea\u05ef-\u05f2",
    "Arabic": "\u0620-\u064a\u066e\u066f\u0671-\u06d3\u06d5\u06ee\u06ef\u06fa-\u06fc\u06ff\u0750-\u077f"
    "\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufefc",
    "Devanagari": "\u0900-\u0963\u0971-\u097f",
    "Bengali": "\u0980-\u09e3\u09f0\u09f1",
    "Tamil": "\u0b80-\u0be5",
    "Thai": "\u0e01-\u0e3a\u0e40-\u0e4e",
    "Georgian": "\u10a0-\u10fa\u10fc-\u10ff",
    "Hangul": "\u1100-\u11ff\u3131-\u318e\uac00-\ud7a3",
    "Hiragana": "\u3041-\u309f",
    "Katakana": "\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff\uff66-\uff9f",
    "Han": "\u3005\u3007\u3021-\u3029\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f",
}
SCRIPTS: tuple[str, ...] = (*_SCRIPT_RANGES, "Other")

# Scripts written without spaces between words: a "word" cannot be counted, only characters.
UNSPACED_SCRIPTS = frozenset({"Han", "Hiragana", "Katakana", "Thai"})
# A lone letter of these scripts is a variable name (x, θ), not language.
_DROP_SINGLE = frozenset({"Latin", "Greek", "Other"})

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

_ALL_RANGES = "".join(_SCRIPT_RANGES.values())
_SEP = r"[.!?;:,\n\u3002\uff01\uff1f\uff1b\uff1a\uff0c\u3001\u2026\u0964\u061f\u060c\u061b]+"
# A separator run, a Latin run, a Han run (the common cases, told apart by group number), or a run of
# other letters (split by script below).
_LATIN, _HAN = _SCRIPT_RANGES["Latin"], _SCRIPT_RANGES["Han"]
_SEP_OR_LETTERS = re.compile(f"({_SEP})|([{_LATIN}]+)|([{_HAN}]+)|[^\\W\\d_{_LATIN}{_HAN}]+")
_OTHER = f"[^\\W\\d_{_ALL_RANGES}]+"
_SCRIPT_RUN = {name: re.compile(f"[{ranges}]+") for name, ranges in _SCRIPT_RANGES.items()}
_SCRIPT_RUN["Other"] = re.compile(_OTHER)
# Splits a letter run that mixes scripts.
_BY_SCRIPT = re.compile(
    "|".join(f"(?P<{name}>[{ranges}]+)" for name, ranges in _SCRIPT_RANGES.items()) + f"|(?P<Other>{_OTHER})"
)
_ASCII_WORD = re.compile(r"[A-Za-z]{2,}")
_CHAR_SCRIPT: dict[str, str] = {}


def _script_of(ch: str) -> str:
    script = _CHAR_SCRIPT.get(ch)
    if script is None:
        script = next((name for name, rx in _SCRIPT_RUN.items() if rx.fullmatch(ch)), "Other")
        _CHAR_SCRIPT[ch] = script
    return script


def _runs(clean: str):
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
            if len(run) > 1 or script not in _DROP_SINGLE:
                yield script, len(run)
            continue
        for sub in _BY_SCRIPT.finditer(run):
            n = sub.end() - sub.start()
            if n > 1 or sub.lastgroup not in _DROP_SINGLE:
                yield sub.lastgroup, n


def script_profile(text: str) -> dict[str, int]:
    """Letters per Unicode script, ignoring code, LaTeX, URLs, numbers and lone variable letters.

    `script_profile("Let $x=1$: 北京 is big")` -> `{"Latin": 8, "Han": 2}` ("Let", "is", "big").
    """
    clean = strip_non_language(text)
    if clean.isascii():
        n = sum(len(w) for w in _ASCII_WORD.findall(clean))
        return {"Latin": n} if n else {}
    profile: dict[str, int] = {}
    for kind, n in _runs(clean):
        if kind != "SEP":
            profile[kind] = profile.get(kind, 0) + n
    return profile


def _dominant(profile: Mapping[str, float], weights: Mapping[str, float]) -> str | None:
    best, best_w = None, 0.0
    for script, n in profile.items():
        w = n * weights.get(script, 1.0)
        if w > best_w:
            best, best_w = script, w
    return best


# A segment gets a label only when its dominant side (target or foreign) is substantial: at least
# this many characters of an unspaced script (Han, kana, Thai), or at least this many words and
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
    return re.compile(f"[^\\W\\d_{''.join(_SCRIPT_RANGES[s] for s in target)}]")


@functools.lru_cache(maxsize=None)
def _foreign_classes(target: frozenset[str]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(a run of two foreign letters of a script whose lone letters are variable names (Latin, Greek,
    other), four foreign letters of any other script anywhere) for `target`."""
    own = "".join(_SCRIPT_RANGES[s] for s in target)
    counted = "".join(r for s, r in _SCRIPT_RANGES.items() if s not in _DROP_SINGLE and s not in target)
    all_counted = "".join(r for s, r in _SCRIPT_RANGES.items() if s not in _DROP_SINGLE)
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
    runs = list(_runs(clean))
    if target is None:
        profile: dict[str, int] = {}
        for kind, n in runs:
            if kind != "SEP":
                profile[kind] = profile.get(kind, 0) + n
        dom = _dominant(profile, weights)
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
# A sentence the profile cannot decide goes to langdetect only with this many words and some evidence
# of another language (one of its function words).
LANGDETECT_MIN_WORDS = 4


def _langdetect(text: str) -> str | None:
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    with _DETECT_LOCK:
        DetectorFactory.seed = 0
        try:
            code = detect(text)
        except LangDetectException:
            return None
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
    clean = strip_non_language(text or "")
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
            found = _langdetect(sentence)
        if found is None:
            continue
        label = 1 if found in ok else -1
        if label < 0:
            foreign += letters
        if last and label != last:
            switches += 1
        last = label
    return (1.0 - foreign / total if total else 1.0), switches


# --- exemptions: what the task asks for ------------------------------------------------------------

_TRANSLATION = re.compile(
    r"translat|traduc|traduz|traduç|übersetz|uebersetz|vertaal|перев[еоё]д|翻译|翻譯|翻訳|번역|ترجم", re.I
)
# Language names (in English, Chinese, and the language itself) a translation prompt may ask for.
_LANGUAGE_NAMES: dict[str, str] = {
    "english": "en", "anglais": "en", "englisch": "en", "inglés": "en", "ingles": "en", "inglese": "en",
    "inglês": "en", "engels": "en", "английск": "en", "英文": "en", "英语": "en", "英語": "en",
    "chinese": "zh", "mandarin": "zh", "chinois": "zh", "chinesisch": "zh", "chino": "zh", "cinese": "zh",
    "китайск": "zh", "中文": "zh", "汉语": "zh", "漢語": "zh", "中国語": "zh",
    "french": "fr", "français": "fr", "francais": "fr", "französisch": "fr", "francés": "fr",
    "francese": "fr", "francês": "fr", "frans": "fr", "французск": "fr", "法语": "fr", "法文": "fr",
    "german": "de", "allemand": "de", "deutsch": "de", "alemán": "de", "tedesco": "de", "alemão": "de",
    "duits": "de", "немецк": "de", "德语": "de", "德文": "de",
    "spanish": "es", "espagnol": "es", "spanisch": "es", "español": "es", "spagnolo": "es",
    "espanhol": "es", "spaans": "es", "испанск": "es", "西班牙语": "es", "西班牙文": "es",
    "italian": "it", "italien": "it", "italienisch": "it", "italiano": "it", "italiaans": "it",
    "итальянск": "it", "意大利语": "it",
    "portuguese": "pt", "portugais": "pt", "portugiesisch": "pt", "portugués": "pt", "portoghese": "pt",
    "português": "pt", "portugees": "pt", "葡萄牙语": "pt",
    "dutch": "nl", "néerlandais": "nl", "niederländisch": "nl", "nederlands": "nl", "荷兰语": "nl",
    "russian": "ru", "russe": "ru", "russisch": "ru", "ruso": "ru", "russo": "ru", "русск": "ru",
    "俄语": "ru", "俄文": "ru",
    "japanese": "ja", "japonais": "ja", "japanisch": "ja", "japonés": "ja", "giapponese": "ja",
    "японск": "ja", "日语": "ja", "日文": "ja", "日本語": "ja",
    "korean": "ko", "coréen": "ko", "koreanisch": "ko", "coreano": "ko", "корейск": "ko", "韩语": "ko",
    "韩文": "ko", "韓国語": "ko", "한국어": "ko", "영어": "en", "중국어": "zh",
    "arabic": "ar", "arabe": "ar", "arabisch": "ar", "árabe": "ar", "阿拉伯语": "ar",
}  # fmt: skip
_LANGUAGE_NAME = re.compile("|".join(sorted(map(re.escape, _LANGUAGE_NAMES), key=len, reverse=True)), re.I)
# Quoted phrases: straight and curly double quotes, guillemets, CJK corner brackets, and single quotes
# that are not apostrophes (not between letters).
_QUOTED = re.compile(
    r'"[^"\n]{1,400}"|\u201c[^\u201d\n]{1,400}\u201d|\u00ab[^\u00bb\n]{1,400}\u00bb|\u201e[^\u201c\u201d\n]{1,400}[\u201c\u201d]'
    r"|\u300c[^\u300d\n]{1,400}\u300d|\u300e[^\u300f\n]{1,400}\u300f|\u2018[^\u2019\n]{1,400}\u2019"
    r"|(?<!\w)'[^'\n]{1,400}'(?!\w)"
)
QUOTE_CHARS = "\"'\u201c\u201e\u00ab\u300c\u300e\u2018"


def is_translation_prompt(prompt: str) -> bool:
    return bool(_TRANSLATION.search(prompt or ""))


def requested_languages(prompt: str) -> frozenset[str]:
    """Languages a translation prompt names ("Translate into French" -> {"fr"}); empty otherwise."""
    if not is_translation_prompt(prompt):
        return frozenset()
    return frozenset(_LANGUAGE_NAMES[m.group().lower()] for m in _LANGUAGE_NAME.finditer(prompt))


def exempt_task_text(text: str, prompt: str, translation: bool) -> str:
    """Remove what the task asks for from the text whose language is measured.

    A translation task's quoted phrases are the translation (or its source); phrases quoted from the
    prompt are the prompt's, whatever the task. Both are removed. Everything else stays.
    """
    text = text or ""
    if not any(q in text for q in QUOTE_CHARS):
        return text
    prompt = prompt or ""

    def drop(m: re.Match[str]) -> str:
        inner = m.group()[1:-1].strip()
        return " " if translation or (inner and inner in prompt) else m.group()

    return _QUOTED.sub(drop, text)


# --- detection -----------------------------------------------------------------------------------

_DETECT_LOCK = threading.Lock()
# Scripts used by one language only: no need to ask langdetect.
_SCRIPT_LANG = {
    "Hangul": "ko", "Thai": "th", "Greek": "el", "Hebrew": "he", "Armenian": "hy", "Georgian": "ka",
    "Bengali": "bn", "Tamil": "ta",
}  # fmt: skip


_EN_FUNCTION_WORDS = frozenset(
    "the of and to in is are was be it that this for on with as by at an or if what how which find "
    "compute let we you your there their from not have has can does do many much".split()
)


def detect_language(text: str) -> str:
    """The language code of `text` ("en", "zh", "ru", ...), or "unknown" when it has no letters.

    Scripts that belong to one language decide directly (Han -> zh, Han with kana -> ja, Hangul -> ko,
    ...); otherwise langdetect (seeded: DetectorFactory.seed = 0, so the answer is deterministic) reads
    the text with code and LaTeX removed. Codes are normalized to the primary subtag ("zh-cn" -> "zh").
    """
    profile = script_profile(text)
    if not profile:
        return UNKNOWN
    kana = profile.get("Hiragana", 0) + profile.get("Katakana", 0)
    cjk = kana + profile.get("Han", 0)
    dom = _dominant(profile, SCRIPT_WEIGHTS)
    if dom in ("Han", "Hiragana", "Katakana"):
        return "ja" if kana >= 0.1 * cjk else "zh"
    if dom in _SCRIPT_LANG:
        return _SCRIPT_LANG[dom]
    clean = strip_non_language(text)
    if dom == "Latin":
        # langdetect is unreliable on short English prompts ("Hello, how are you?" -> "so"); common
        # English function words settle those.
        words = _ASCII_WORD.findall(clean.lower())
        if words and sum(w in _EN_FUNCTION_WORDS for w in words) >= 0.2 * len(words):
            return "en"
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    with _DETECT_LOCK:
        DetectorFactory.seed = 0
        try:
            code = detect(clean)
        except LangDetectException:
            return UNKNOWN
    return normalize_lang(code) or UNKNOWN
