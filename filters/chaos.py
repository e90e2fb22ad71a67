"""Chaotic output: text that is broken rather than wrong.

Scores per completion (the thresholds live in CurateConfig):

- `fence_unbalanced`: an odd number of ``` (or ~~~ at a line start): a code block never closed, or a
  stray fence.
- `mojibake`: UTF-8 read as Latin-1/cp1252 ("Ã©", "â€™", "Ð¿") and U+FFFD replacement characters.
- `markup_debris`: HTML tags and entities outside code (`<div>`, `</span>`, `&nbsp;`).
- `special_tokens`: chat-template or tokenizer tokens leaked into the text (`<|im_end|>`, `[INST]`,
  `</s>`, DeepSeek's `<｜end▁of▁sentence｜>`), outside code.
- `symbol_soup`: characters in runs of >= 8 symbols holding >= 4 different symbols (`}{)(*&^%$#@!`),
  outside code and LaTeX, plus control, zero-width and private-use characters.
- `sentence_frac`: share of the prose lines (lines outside code and LaTeX that start with a word of two
  or more letters: not headings, list items, tables, numbers, equations) that are sentence-like (>= 4 words, or >= 6 CJK characters in
  a row). Output made of one- to three-word fragments scores low; with fewer than MIN_PROSE_LINES
  prose lines it is 1.0.

All of them run as polars expressions over a whole batch (Rust, vectorised); `chaos_scores` gives
them for a single text.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from distill.config.curate import CurateConfig
from filters.measure import Batch, Measure

MIN_PROSE_LINES = 8
SOUP_RUN = 8
SOUP_DISTINCT = 4

# Polars (Rust regex) patterns: no look-around, lazy quantifiers are fine.
_CODE = r"(?s)```.*?(?:```|\z)|~~~.*?(?:~~~|\z)|`[^`\n]+`"
_LATEX = r"(?s)\$\$.*?(?:\$\$|\z)|\\\[.*?(?:\\\]|\z)|\\\(.*?(?:\\\)|\z)|\$[^$\n]+\$|\\[A-Za-z]+"
_MOJIBAKE = (
    "[\u00c2\u00c3\u00c4\u00c5\u00c6\u00c7\u00d0\u00d1\u00d8\u00d9\u00e2]"
    "[\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014"
    "\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]|\ufffd"
)
_HTML = (
    r"(?i)</?(?:div|span|p|br|hr|html|body|head|script|style|table|tbody|thead|tr|td|th|li|ul|ol|a|img"
    r"|font|center|meta|link|iframe|sup|sub|pre|h[1-6]|b|i|u|em|strong)(?:\s[^<>\n]{0,200})?/?>"
    r"|&(?:nbsp|amp|lt|gt|quot|apos|#[0-9]{2,5}|#x[0-9a-fA-F]{2,4});"
)
_SPECIAL = (
    r"<\|[^|<>\s]{1,40}\|>|<\uff5c[^\uff5c<>\s]{1,40}\uff5c>|\[/?INST\]|</?s>|<unk>|<pad>|<eos>|<bos>"
    r"|<\|?endoftext\|?>"
)
_SOUP_RUN = rf"[^\w\s]{{{SOUP_RUN},}}"
_ASCII_RUN = rf"[!-/:-@\[-`{{-~]{{{SOUP_RUN}}}"
_WEIRD_ASCII = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
_WEIRD_WIDE = "[\u200b-\u200f\u2028\u2029\ue000-\uf8ff\ufff9-\ufffc]"
# Prose lines start with a word of two letters or more (not a heading, list item, table row, quote,
# number, or an equation such as "x = 3");
# sentence-like ones hold >= 4 words or >= 6 CJK characters in a row.
_CJK_CLASS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7a3"
_PROSE_LINE = r"(?m)^[ \t]*\p{L}{2}"
_SENTENCE_LINE = rf"(?m)^[ \t]*\p{{L}}{{2}}(?:\S*(?:[ \t]+\S+){{3}}|[^\n]*[{_CJK_CLASS}]{{6}})"

CHAOS_SCHEMA = {
    "fence_unbalanced": pl.Boolean, "mojibake": pl.Int64, "markup_debris": pl.Int64, "special_tokens": pl.Int64,
    "symbol_soup": pl.Int64, "sentence_frac": pl.Float64,
}  # fmt: skip
CHAOS_COLUMNS = tuple(CHAOS_SCHEMA)


def chaos_frame(texts: pl.Series) -> pl.DataFrame:
    """Every chaos score (CHAOS_COLUMNS) of a batch of texts (nulls read as "")."""
    text = texts.cast(pl.Utf8).fill_null("")
    prose = text.str.replace_all(_CODE, " ")
    no_math = prose.str.replace_all(_LATEX, " ")
    # Non-ASCII patterns only where there is non-ASCII text; symbol runs only where a cheap ASCII test
    # or non-ASCII text says one may be.
    non_ascii = (text.str.len_bytes() != text.str.len_chars()).to_numpy()
    mojibake = _on_rows(text, non_ascii, lambda s: s.str.count_matches(_MOJIBAKE))
    weird = text.str.count_matches(_WEIRD_ASCII).cast(pl.Int64).to_numpy() + _on_rows(
        text, non_ascii, lambda s: s.str.count_matches(_WEIRD_WIDE)
    )
    maybe_soup = non_ascii | no_math.str.contains(_ASCII_RUN).to_numpy()
    soup = _on_rows(no_math, maybe_soup, _soup_chars)
    prose_lines = no_math.str.count_matches(_PROSE_LINE).cast(pl.Int64).to_numpy()
    sentence_lines = no_math.str.count_matches(_SENTENCE_LINE).cast(pl.Int64).to_numpy()
    sentence_frac = np.where(prose_lines >= MIN_PROSE_LINES, sentence_lines / np.maximum(prose_lines, 1), 1.0)
    return pl.DataFrame(
        {
            "fence_unbalanced": (text.str.count_matches("```", literal=True) % 2 == 1)
            | (text.str.count_matches(r"(?m)^[ \t]*~~~") % 2 == 1),
            "mojibake": mojibake,
            "markup_debris": prose.str.count_matches(_HTML).cast(pl.Int64),
            "special_tokens": prose.str.count_matches(_SPECIAL).cast(pl.Int64),
            "symbol_soup": soup + weird,
            "sentence_frac": sentence_frac,
        },
        schema=CHAOS_SCHEMA,
    )


def _on_rows(s: pl.Series, rows: np.ndarray, fn) -> np.ndarray:
    """fn(s) on the rows where `rows` is true, 0 elsewhere (as an int64 array)."""
    out = np.zeros(len(s), dtype=np.int64)
    if rows.any():
        idx = np.flatnonzero(rows)
        out[idx] = fn(s.gather(idx)).cast(pl.Int64).to_numpy()
    return out


def _soup_chars(s: pl.Series) -> pl.Series:
    """Characters in runs of >= SOUP_RUN symbols with >= SOUP_DISTINCT different ones."""
    return (
        s.str.extract_all(_SOUP_RUN)
        .list.eval(
            pl.when(pl.element().str.split("").list.n_unique() >= SOUP_DISTINCT)
            .then(pl.element().str.len_chars())
            .otherwise(0)
        )
        .list.sum()
        .fill_null(0)
    )


def chaos_scores(text: str | None) -> dict[str, object]:
    """Every chaos score of one text (for tests and one-off checks; curation scores whole batches)."""
    return chaos_frame(pl.Series([text], dtype=pl.Utf8)).row(0, named=True)


class Chaos(Measure):
    """chaotic: unbalanced fences (cfg.reject_unbalanced_fences), or mojibake, markup_debris,
    special_tokens, symbol_soup above their maximum, or sentence_frac below cfg.min_sentence_frac."""

    name = "chaos"
    columns = CHAOS_SCHEMA
    reasons = ("chaotic",)

    def score(self, batch: Batch) -> dict[str, pl.Series]:
        frame = chaos_frame(batch.completion_series)
        return {name: frame.get_column(name) for name in frame.columns}

    @classmethod
    def reject(cls, df: pl.DataFrame, cfg: CurateConfig) -> dict[str, pl.Expr]:
        return {
            "chaotic": (pl.col("fence_unbalanced") & pl.lit(cfg.reject_unbalanced_fences))
            | (pl.col("mojibake") > cfg.max_mojibake)
            | (pl.col("markup_debris") > cfg.max_markup_debris)
            | (pl.col("special_tokens") > cfg.max_special_tokens)
            | (pl.col("symbol_soup") > cfg.max_symbol_soup)
            | (pl.col("sentence_frac") < cfg.min_sentence_frac)
        }
