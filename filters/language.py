"""The language measure: each trace's target language, the share of it written in that language, and
how often it switches (`target_language`, `target_lang_share`, `lang_switches`), and the two reasons
they give: `wrong_language` and `language_mixing`.

The scores come from filters/language_mixing.py (scripts, and function words for languages sharing the
Latin script); what the task asks for is exempt (filters/exemptions.py): in a translation task the
requested language counts as target and only the reasoning is measured, and quoted phrases are the
prompt's or the translation's.

The target is the row's `language`, else the prompt's language: `detect_language` (scripts, then
langdetect, seeded so it is deterministic) reads the prompt, once per distinct prompt.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from distill.config.curate import CurateConfig
from distill.core.schema import split_think
from filters.exemptions import QUOTE_CHARS, exempt_task_text, is_translation_prompt, requested_languages
from filters.function_words import PROFILED_LANGS, foreign_words_pattern
from filters.language_mixing import langdetect_code, language_scores, latin_language_scores
from filters.measure import Batch, Measure, column
from filters.unicode_scripts import (
    ASCII_WORD,
    LANG_SCRIPTS,
    SCRIPT_WEIGHTS,
    UNKNOWN,
    dominant_script,
    normalize_lang,
    script_profile,
    strip_non_language,
)

# Foreign function words in a trace before its sentences are checked one by one (see language_columns).
LATIN_GATE_HITS = 3

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
    dom = dominant_script(profile, SCRIPT_WEIGHTS)
    if dom in ("Han", "Hiragana", "Katakana"):
        return "ja" if kana >= 0.1 * cjk else "zh"
    if dom in _SCRIPT_LANG:
        return _SCRIPT_LANG[dom]
    clean = strip_non_language(text)
    if dom == "Latin":
        # langdetect is unreliable on short English prompts ("Hello, how are you?" -> "so"); common
        # English function words settle those.
        words = ASCII_WORD.findall(clean.lower())
        if words and sum(w in _EN_FUNCTION_WORDS for w in words) >= 0.2 * len(words):
            return "en"
    return normalize_lang(langdetect_code(clean)) or UNKNOWN


# --- the measure ---------------------------------------------------------------------------------


def _targets(languages: list[object], prompts: list[str]) -> list[str]:
    """`language` where given, else the prompt's detected language (once per distinct prompt)."""
    cache: dict[str, str] = {}
    out = []
    for lang, prompt in zip(languages, prompts):
        code = normalize_lang(lang)
        if code is None:
            code = cache.get(prompt)
            if code is None:
                code = cache[prompt] = detect_language(prompt)
        out.append(code)
    return out


def _latin_gate(completions: pl.Series, targets: list[str]) -> np.ndarray:
    """Rows whose target is a profiled Latin language and whose text holds at least LATIN_GATE_HITS
    function words of other profiled languages (a vectorised count, so most rows skip the
    per-sentence pass)."""
    gate = np.zeros(len(targets), dtype=bool)
    tarr = np.array(targets, dtype=object)
    for lang in PROFILED_LANGS:
        idx = np.flatnonzero(tarr == lang)
        if len(idx):
            hits = completions.gather(idx).str.count_matches(foreign_words_pattern(lang)).to_numpy()
            gate[idx] = hits >= LATIN_GATE_HITS
    return gate


def _measured_part(text: str, translation: bool) -> str:
    """For a translation task the answer is in the requested language by design: only the reasoning
    is measured (when there is a think block)."""
    if not translation:
        return text
    split = split_think(text)
    return split.reasoning if split.has_think and split.reasoning else text


def language_columns(df: pl.DataFrame, completions: list[str], prompts: list[str]) -> dict[str, pl.Series]:
    """The language score columns of rows of `df` (its `completion` and `language` columns), whose
    completions and prompts are given as text."""
    targets = _targets(column(df, "language"), prompts)
    gate = _latin_gate(df.get_column("completion").cast(pl.Utf8).fill_null(""), targets)
    tasks: dict[str, tuple[bool, frozenset[str]]] = {}  # prompt -> (translation task, languages asked for)
    shares, switches = [], []
    for text, target, prompt, gated in zip(completions, targets, prompts, gate):
        share, sw = language_scores(text, target)
        allowed: frozenset[str] = frozenset()
        if (share < 1.0 or sw or gated) and prompt:
            task = tasks.get(prompt)
            if task is None:
                task = tasks[prompt] = (is_translation_prompt(prompt), requested_languages(prompt))
            translation, allowed = task
            if translation or any(q in text for q in QUOTE_CHARS):
                text = exempt_task_text(_measured_part(text, translation), prompt, translation)
                share, sw = language_scores(text, target, allowed=allowed)
        if gated:
            lshare, lsw = latin_language_scores(text, target, allowed)
            share, sw = share * lshare, sw + lsw
        shares.append(share)
        switches.append(sw)
    return {
        "target_language": pl.Series(targets, dtype=pl.Utf8),
        "target_lang_share": pl.Series(shares, dtype=pl.Float64),
        "lang_switches": pl.Series(switches, dtype=pl.Int64),
    }


def language_measures(texts: list[str], prompts: list[str], languages: list[str | None]) -> dict[str, pl.Series]:
    """`target_language`, `target_lang_share` and `lang_switches` of each text, measured exactly as the
    curate stage scores them (for callers without a table: the RL language-consistency reward)."""
    df = pl.DataFrame({"completion": texts, "language": languages}, schema={"completion": pl.Utf8, "language": pl.Utf8})
    return language_columns(df, list(texts), list(prompts))


class Language(Measure):
    """wrong_language: target_lang_share < min(cfg.wrong_language_share, cfg.min_target_lang_share),
    for languages whose script is known (an "unknown" target cannot be wrong), and the trace does not
    switch back and forth (that is mixing, whatever the share).
    language_mixing: lang_switches > cfg.max_lang_switches, or share below cfg.min_target_lang_share
    but not wrong_language. The two never apply together."""

    name = "language"
    columns = {"target_language": pl.Utf8, "target_lang_share": pl.Float64, "lang_switches": pl.Int64}
    reasons = ("wrong_language", "language_mixing")

    def score(self, batch: Batch) -> dict[str, pl.Series]:
        return language_columns(batch.df, batch.completions, batch.prompts)

    @classmethod
    def reject(cls, df: pl.DataFrame, cfg: CurateConfig) -> dict[str, pl.Expr]:
        share = pl.col("target_lang_share")
        switching = (
            pl.col("lang_switches") > cfg.max_lang_switches if cfg.max_lang_switches is not None else pl.lit(False)
        )
        wrong = (
            (share < min(cfg.wrong_language_share, cfg.min_target_lang_share))
            & pl.col("target_language").is_in(list(LANG_SCRIPTS))
            & ~switching
        )
        return {"wrong_language": wrong, "language_mixing": ((share < cfg.min_target_lang_share) & ~wrong) | switching}
