"""Word n-grams of a whole batch at once: tokens (polars, in Rust) and n-gram hashes (numpy).

Repetition and decontamination both look at word n-grams of every completion: ~1,000 per trace,
hundreds of millions per run. Building them as Python tuples costs ~0.5 ms per trace; here a batch is
tokenised by polars (split at whitespace, each CJK character its own token; for matching against
other text also lower-cased with punctuation removed) and each token hashed (polars' hash: the same in every process of one polars version, so an index built
in one process serves the others). An n-gram's hash is a mix of its tokens' hashes, computed with
numpy for all positions of all rows in a few array operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

# Rows tokenised at once by the n-gram measures (~1,000 tokens each: ~10 MB of arrays per 1,000 rows).
TOKEN_CHUNK = 2000

# ASCII punctuation and symbols, and the CJK ones, become spaces (Rust regex: one character class).
_PUNCT = r"[!-/:-@\[-`{-~\u00a1-\u00bf\u2010-\u2027\u2030-\u205e\u3000-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]"
_CJK = r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7a3]"
_SEED = 0x5EED
_MIX = (np.random.default_rng(_SEED).integers(1, 2**63, size=64, dtype=np.uint64) | np.uint64(1)).view(np.int64)
_FINAL = np.int64(-7046029254386353131)  # 0x9E3779B97F4A7C15 as int64: a final multiply spreads the bits


_EMPTY = pl.Series([""]).hash(seed=_SEED).to_numpy().view(np.int64)[0]


@dataclass
class Tokens:
    """Token hashes of a batch of texts, row after row; `offsets[i]:offsets[i + 1]` are row i's."""

    hashes: np.ndarray  # int64
    offsets: np.ndarray  # int64, len(rows) + 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def _split_cjk(s: pl.Series) -> pl.Series:
    """Spaces around every CJK character (rows without one are left alone: most rows, no copy)."""
    has_cjk = s.str.contains(_CJK)
    if not has_cjk.any():
        return s
    idx = has_cjk.arg_true()
    return s.scatter(idx, s.gather(idx).str.replace_all(f"({_CJK})", " $1 "))


def normalize_words(texts: pl.Series) -> pl.Series:
    """Lower case, punctuation to spaces, spaces around CJK characters (the text tokens are split from)."""
    return _split_cjk(texts.cast(pl.Utf8).fill_null("").str.to_lowercase().str.replace_all(_PUNCT, " "))


def tokenize(texts: pl.Series, normalize: bool = True) -> Tokens:
    """Token hashes of every text. `normalize`: words as `normalize_words` makes them (for matching
    text against other text); otherwise whitespace-separated words as written, CJK characters apart
    (cheaper; enough to find a text repeating itself)."""
    if normalize:
        s = normalize_words(texts)
    else:
        s = _split_cjk(texts.cast(pl.Utf8).fill_null("").str.replace_all(r"[\t\n\r\f\v]", " "))
    words = s.str.split(" ")
    lengths = words.list.len().to_numpy().astype(np.int64)
    flat = words.explode().hash(seed=_SEED).to_numpy().view(np.int64)
    keep = flat != _EMPTY  # consecutive separators leave empty words
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    kept = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    return Tokens(flat[keep], kept[offsets])


@dataclass
class Grams:
    """n-gram hashes of a batch: `hashes[k]` starts at token `pos[k]` of row `row[k]`."""

    hashes: np.ndarray  # int64
    row: np.ndarray  # int64
    pos: np.ndarray  # int64, position within the row
    per_row: np.ndarray  # n-grams per row


def ngrams(tokens: Tokens, n: int) -> Grams:
    """Every n-gram that lies inside one row (rows shorter than n have none)."""
    h, lengths = tokens.hashes, tokens.lengths
    n_rows = len(lengths)
    per_row = np.maximum(lengths - n + 1, 0)
    t = len(h) - n + 1
    if t <= 0:
        empty = np.empty(0, dtype=np.int64)
        return Grams(empty, empty, empty, per_row)
    token_row = np.repeat(np.arange(n_rows, dtype=np.int64), lengths)
    valid = token_row[:t] == token_row[n - 1 :]
    g = h[:t] * _MIX[0]
    tmp = np.empty_like(g)
    with np.errstate(over="ignore"):
        for j in range(1, n):
            np.multiply(h[j : j + t], _MIX[j], out=tmp)
            g += tmp
        g ^= g >> 31
        g *= _FINAL
    idx = np.flatnonzero(valid)
    row = token_row[idx]
    return Grams(g[idx], row, idx - tokens.offsets[row], per_row)


def loop_shares(grams: Grams, tail: float = 1 / 3) -> np.ndarray:
    """Per row: the share of its n-grams that are a third or later occurrence of the same n-gram in the
    row, over the whole row or over its last `tail` (a loop at the end), whichever is higher."""
    n_rows = len(grams.per_row)
    out = np.zeros(n_rows)
    if len(grams.hashes) == 0:
        return out
    with np.errstate(over="ignore"):
        key = grams.hashes ^ (grams.row * _FINAL)
    dup = np.flatnonzero(pl.Series(key).is_duplicated().to_numpy())  # hash-based: most occur once
    if len(dup) == 0:
        return out
    order = dup[np.argsort(key[dup], kind="stable")]  # by n-gram, then by position (stable)
    ks = key[order]
    start = np.ones(len(ks), dtype=bool)
    start[1:] = ks[1:] != ks[:-1]
    run_start = np.flatnonzero(start)
    rank = np.arange(len(ks)) - run_start[np.cumsum(start) - 1]
    third = order[rank >= 2]  # positions that are a third or later occurrence
    rows = grams.row[third]
    whole = np.bincount(rows, minlength=n_rows)
    cut = np.floor(grams.per_row * (1 - tail)).astype(np.int64)
    in_tail = grams.pos[third] >= cut[rows]
    tail_hits = np.bincount(rows[in_tail], minlength=n_rows)
    tail_n = grams.per_row - cut
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(grams.per_row > 0, whole / np.maximum(grams.per_row, 1), 0.0)
        b = np.where(tail_n > 0, tail_hits / np.maximum(tail_n, 1), 0.0)
    return np.maximum(a, b)


class GramSet:
    """A sorted set of n-gram hashes with a bitmask (of sources) per hash, and a bitmap of their top
    bits so that a lookup of millions of absent hashes costs one array gather."""

    BITS = 22

    def __init__(self, hashes: np.ndarray, masks: np.ndarray):
        order = np.argsort(hashes, kind="stable")
        self.hashes, self.masks = hashes[order], masks[order]
        self.bitmap = np.zeros(1 << self.BITS, dtype=bool)
        self.bitmap[self._top(self.hashes)] = True

    def _top(self, h: np.ndarray) -> np.ndarray:
        return (h.view(np.uint64) >> np.uint64(64 - self.BITS)).astype(np.int64)

    def __len__(self) -> int:
        return len(self.hashes)

    def lookup(self, queries: np.ndarray) -> np.ndarray:
        """The mask of each query hash (0 where absent)."""
        out = np.zeros(len(queries), dtype=np.int64)
        if len(self.hashes) == 0 or len(queries) == 0:
            return out
        cand = np.flatnonzero(self.bitmap[self._top(queries)])
        if len(cand):
            q = queries[cand]
            idx = np.searchsorted(self.hashes, q)
            idx[idx == len(self.hashes)] = 0
            out[cand] = np.where(self.hashes[idx] == q, self.masks[idx], 0)
        return out
