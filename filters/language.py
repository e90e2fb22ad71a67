"""The language measure: each trace's target language (and how it was decided), the share of its chain
of thought written in that language, how often it switches, and the spans where it leaves the target
(`target_language`, `target_language_from`, `target_lang_share`, `lang_switches`, `foreign_spans`,
`language_span`), and the two reasons they give: `wrong_language` and `language_mixing`.

What is measured is the chain of thought (the think block; the whole text without one): a final answer
may quote, or answer in, the question's language. The scores come from filters/language_mixing.py
(scripts, and function words for languages sharing the Latin script) and filters/language_spans.py
(runs of a foreign script, paragraphs of another language of the same script by fastText). What the
task asks for is exempt (filters/exemptions.py, filters/language_spans.exempt_mentions): in a
translation task the requested language counts as target; the prompt's own words quoted back and
phrases inside quotation marks are mentions, not a switch of language.

The target is the row's `language` ("column"), else `prompt_target`: an explicit "think in X"
("request"), else the instruction's language when the prompt mixes languages ("instruction", the
recipe's `curate.target_language`), else the prompt's ("prompt"); identified by filters/langid.py,
once per distinct prompt.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from distill.config.curate import CurateConfig
from distill.core.schema import THINK_CLOSE, THINK_OPEN
from filters.exemptions import QUOTE_CHARS, exempt_task_text, is_translation_prompt, requested_language, requested_languages
from filters.langid import CONFIDENT, fasttext_code, identify, langdetect_code, script_language
from filters.language_spans import exempt_mentions, paragraph_spans, script_spans, shared_script
from filters.function_words import PROFILED_LANGS, foreign_words_pattern
from filters.language_mixing import language_scores, latin_language_scores
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


def detect_language(text: str, backend: str = "fasttext") -> str:
    """The language code of `text` ("en", "zh", "sw", ...), or "unknown" (filters.langid.identify)."""
    return identify(text, backend)  # type: ignore[arg-type]


def detect_language_legacy(text: str) -> str:
    """The identifier before issue 16 (kept for scripts/bench_langid.py): the language code of `text`
    ("en", "zh", "ru", ...), or "unknown" when it has no letters.

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


PROMPT_LINE_CHARS = 20


def _line_language(line: str) -> str:
    profile = script_profile(line)
    if not profile:
        return UNKNOWN
    by_script = script_language(profile)
    if by_script:
        return by_script
    code, p = fasttext_code(strip_non_language(line))
    return code if code and p >= CONFIDENT else UNKNOWN


def prompt_target(prompt: str, rule: str = "instruction", backend: str = "fasttext") -> tuple[str, str]:
    """(target language, how it was decided) for a prompt without a `language` value.

    An explicit request ("think in French", a system prompt's "reason in Swahili") decides: "request".
    Otherwise each line of the prompt is identified; when its lines are in more than one language
    (an English instruction around a Bangla question), rule "instruction" takes the first line's
    language ("instruction") and rule "majority" the whole prompt's ("prompt"). A prompt in one
    language: "prompt".
    """
    asked = requested_language(prompt)
    if asked:
        return asked, "request"
    whole = identify(prompt, backend)  # type: ignore[arg-type]
    if rule != "instruction":
        return whole, "prompt"
    # lines long enough to identify (an option "A. 18%" or "Answer:" says nothing): the first is the
    # instruction (identified in full: fastText, langdetect where fastText is unsure); the others by
    # script or a confident fastText only, enough to see that the prompt mixes languages
    lines = [line for line in (prompt or "").splitlines() if len(line.strip()) >= PROMPT_LINE_CHARS]
    if not lines:
        return whole, "prompt"
    first = identify(lines[0], backend)  # type: ignore[arg-type]
    others = {_line_language(line) for line in lines[1:]} - {UNKNOWN}
    if first != UNKNOWN and (others - {first} or (whole not in (first, UNKNOWN))):
        return first, "instruction"
    return whole, "prompt"


def _targets(languages: list[object], prompts: list[str], rule: str, backend: str) -> tuple[list[str], list[str]]:
    """`language` where given ("column"), else the prompt's target (`prompt_target`, once per distinct
    prompt), and how each was decided."""
    cache: dict[str, tuple[str, str]] = {}
    out, how = [], []
    for lang, prompt in zip(languages, prompts):
        code = normalize_lang(lang)
        if code is not None:
            out.append(code)
            how.append("column")
            continue
        got = cache.get(prompt)
        if got is None:
            got = cache[prompt] = prompt_target(prompt, rule, backend)
        out.append(got[0])
        how.append(got[1])
    return out, how


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


def _not_english(text: str) -> bool:
    """fastText's look at the start of a chain of thought (one call): confidently another language of
    the Latin script (Swahili or Indonesian reasoning on an English prompt has no profiled function words)."""
    clean = strip_non_language(text[:PROBE_CHARS])
    code, p = fasttext_code(clean)
    if code != "en" and p < CONFIDENT or code == "en" and p < PROBE_SURE:  # unsure (Swahili reads as en 0.2)
        code = normalize_lang(langdetect_code(" ".join(clean.split())))
    return code not in (None, "en") and "Latin" in (LANG_SCRIPTS.get(code or "") or ())


PROBE_CHARS = 600
# English reasoning reads as "en" with p > 0.9; below this the probe asks langdetect too.
PROBE_SURE = 0.5


def _reasoning_part(text: str) -> tuple[int, str]:
    """(offset, text) of the chain of thought: the think block's content, else the whole text."""
    close = text.find(THINK_CLOSE)
    if close < 0:
        return 0, text
    open_ = text.rfind(THINK_OPEN, 0, close)
    start = open_ + len(THINK_OPEN) if open_ >= 0 else 0
    return start, text[start:close]


def language_columns(
    df: pl.DataFrame, completions: list[str], prompts: list[str], cfg: CurateConfig | None = None
) -> dict[str, pl.Series]:
    """The language score columns of rows of `df` (its `completion` and `language` columns), whose
    completions and prompts are given as text."""
    cfg = cfg or CurateConfig()
    targets, how = _targets(column(df, "language"), prompts, cfg.target_language, cfg.language_id)
    gate = _latin_gate(df.get_column("completion").cast(pl.Utf8).fill_null(""), targets)
    tasks: dict[str, tuple[bool, frozenset[str]]] = {}  # prompt -> (translation task, languages asked for)
    shares, switches, n_spans, first_span = [], [], [], []
    for text, target, prompt, gated in zip(completions, targets, prompts, gate):
        # the chain of thought is measured (a final answer may quote, or answer in, the question's
        # language); without a closed think block, the whole text. Offsets stay the completion's.
        start, cot = _reasoning_part(text)
        share, sw = language_scores(cot, target)
        allowed: frozenset[str] = frozenset()
        measured = cot
        if prompt:
            task = tasks.get(prompt)
            if task is None:
                task = tasks[prompt] = (is_translation_prompt(prompt), requested_languages(prompt))
            translation, allowed = task
            if share < 1.0 or sw or gated:
                if translation or any(q in cot for q in QUOTE_CHARS):
                    measured = exempt_task_text(cot, prompt, translation)
                # the prompt's words quoted back and quoted phrases are mentions, not a switch of language
                measured = exempt_mentions(measured, target, prompt, allowed)
                if measured is not cot:
                    share, sw = language_scores(measured, target, allowed=allowed)
        if gated:
            lshare, lsw = latin_language_scores(measured, target, allowed)
            share, sw = share * lshare, sw + lsw
        spans = script_spans(measured, target, prompt, allowed)
        # English reasoning is checked paragraph by paragraph only when it shows other languages' function
        # words (the gate); any other target of a shared script always (English reasoning on a Swahili prompt)
        if shared_script(target) and (target != "en" or gated or _not_english(measured)):
            pspans, foreign, total, psw = paragraph_spans(measured, target, allowed)
            if total:
                share *= 1.0 - foreign / total
            sw += psw
            spans = sorted(spans + pspans)
        spans = [(a + start, b + start) for a, b in spans]
        shares.append(share)
        switches.append(sw)
        n_spans.append(len(spans))
        first_span.append(list(spans[0]) if spans else None)  # offsets into the completion (exemptions keep lengths)
    return {
        "target_language": pl.Series(targets, dtype=pl.Utf8),
        "target_language_from": pl.Series(how, dtype=pl.Utf8),
        "target_lang_share": pl.Series(shares, dtype=pl.Float64),
        "lang_switches": pl.Series(switches, dtype=pl.Int64),
        "foreign_spans": pl.Series(n_spans, dtype=pl.Int64),
        "language_span": pl.Series(first_span, dtype=pl.List(pl.Int64)),
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
    columns = {
        "target_language": pl.Utf8, "target_language_from": pl.Utf8, "target_lang_share": pl.Float64,
        "lang_switches": pl.Int64, "foreign_spans": pl.Int64, "language_span": pl.List(pl.Int64),
    }  # fmt: skip
    reasons = ("wrong_language", "language_mixing")

    def score(self, batch: Batch) -> dict[str, pl.Series]:
        return language_columns(batch.df, batch.completions, batch.prompts, self.cfg)

    @classmethod
    def reject(cls, df: pl.DataFrame, cfg: CurateConfig) -> dict[str, pl.Expr]:
        share = pl.col("target_lang_share")
        switching = (
            pl.col("lang_switches") > cfg.max_lang_switches if cfg.max_lang_switches is not None else pl.lit(False)
        )
        spans = pl.col("foreign_spans") > cfg.max_foreign_spans if cfg.max_foreign_spans is not None else pl.lit(False)
        wrong = (
            (share < min(cfg.wrong_language_share, cfg.min_target_lang_share))
            & pl.col("target_language").is_in(list(LANG_SCRIPTS))
            & ~switching
        )
        return {"wrong_language": wrong, "language_mixing": ((share < cfg.min_target_lang_share) | spans) & ~wrong | switching}
