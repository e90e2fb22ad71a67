"""Repetition loops: a model that repeats lines, paragraphs or phrases instead of reasoning.

Three scores per completion:

- `dup_line_frac`: share of the characters of substantial lines (>= MIN_LINE_CHARS) that are a third or
  later occurrence of the same line. A repeated paragraph repeats its lines, so this sees it too.
- `max_line_repeats`: how often the most repeated substantial line occurs ("Let me check again." x 40).
- `dup_ngram_frac`: share of word 10-grams that are a third or later occurrence, over the whole text
  or over its last third, whichever is higher (a loop at the end of an otherwise good trace is the
  common failure). Words are whitespace-separated as written; in Chinese or Japanese each character is
  a word. Computed for a whole batch at once (`ngram_loop_shares`, filters/ngrams.py).

Only third and later occurrences count because saying something twice is normal: a trace drafts code
in its reasoning and gives the same code as its answer, or restates a result before concluding. A loop
repeats many times. Short lines ("So x = 3.", "Wait,") and short n-grams are not counted at all.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from distill.config.curate import CurateConfig
from filters.measure import Batch, Measure
from filters.ngrams import TOKEN_CHUNK, Tokens, loop_shares, ngrams, tokenize

MIN_LINE_CHARS = 20
NGRAM = 10
TAIL = 1 / 3
# Below this many words, n-gram repetition is not measured (a short answer has nothing to loop on).
MIN_TOKENS = 60


def line_repetition(text: str | None) -> tuple[float, int]:
    """(dup_line_frac, max_line_repeats) over lines of at least MIN_LINE_CHARS characters."""
    seen: dict[str, int] = {}
    total = dup = 0
    for line in (text or "").split("\n"):
        line = line.strip()
        n = len(line)
        if n < MIN_LINE_CHARS:
            continue
        total += n
        c = seen.get(line, 0)
        if c >= 2:
            dup += n
        seen[line] = c + 1
    if not total:
        return 0.0, 0
    return dup / total, max(seen.values())


def ngram_loop_shares(tokens: Tokens) -> np.ndarray:
    """dup_ngram_frac of every row of a tokenised batch (0 for rows under MIN_TOKENS words)."""
    shares = loop_shares(ngrams(tokens, NGRAM), TAIL)
    shares[tokens.lengths < MIN_TOKENS] = 0.0
    return shares


def repetition_scores(text: str | None) -> tuple[float, int, float]:
    """(dup_line_frac, max_line_repeats, dup_ngram_frac) of one completion."""
    frac, repeats = line_repetition(text)
    share = ngram_loop_shares(tokenize(pl.Series([text or ""], dtype=pl.Utf8), normalize=False))[0]
    return frac, repeats, float(share)


class Repetition(Measure):
    """repetition: dup_line_frac > cfg.max_dup_line_frac, max_line_repeats > cfg.max_line_repeats, or
    dup_ngram_frac > cfg.max_dup_ngram_frac."""

    name = "repetition"
    columns = {"dup_line_frac": pl.Float64, "max_line_repeats": pl.Int64, "dup_ngram_frac": pl.Float64}
    reasons = ("repetition",)

    def score(self, batch: Batch) -> dict[str, pl.Series]:
        lines = [line_repetition(c) for c in batch.completions]
        comp = batch.completion_series
        loops = np.zeros(batch.height)
        for start in range(0, batch.height, TOKEN_CHUNK):  # bounded memory
            chunk = comp.slice(start, TOKEN_CHUNK)
            loops[start : start + len(chunk)] = ngram_loop_shares(tokenize(chunk, normalize=False))
        return {
            "dup_line_frac": pl.Series([x[0] for x in lines], dtype=pl.Float64),
            "max_line_repeats": pl.Series([x[1] for x in lines], dtype=pl.Int64),
            "dup_ngram_frac": pl.Series(loops, dtype=pl.Float64),
        }

    @classmethod
    def reject(cls, df: pl.DataFrame, cfg: CurateConfig) -> dict[str, pl.Expr]:
        return {
            "repetition": (pl.col("dup_line_frac") > cfg.max_dup_line_frac)
            | (pl.col("max_line_repeats") > cfg.max_line_repeats)
            | (pl.col("dup_ngram_frac") > cfg.max_dup_ngram_frac)
        }
