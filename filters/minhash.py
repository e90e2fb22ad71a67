"""MinHash signatures of prompts, for near-duplicate detection (filters/dedup.py).

A prompt is normalised (NFKC, lower case, whitespace collapsed); its word 3-gram shingles are hashed
and `num_perm` hashes of the multiply-shift family give its signature, computed with numpy over a
whole batch at once. `band_keys` cuts signatures into LSH bands: prompts agreeing in some band are
candidate pairs.
"""

from __future__ import annotations

import numpy as np
import polars as pl

PERM_CHUNK = 16  # permutations computed at once: bounds the (shingles x chunk) work array


def normalize_expr(text: pl.Expr) -> pl.Expr:
    """NFKC, lower case, runs of whitespace collapsed to one space, stripped."""
    return text.fill_null("").str.normalize("NFKC").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def numbers_expr(normalized: pl.Expr) -> pl.Expr:
    """Hash of the sequence of numbers in a normalised prompt."""
    return normalized.str.extract_all(r"\d+(?:[.,]\d+)*").list.join(" ").hash(seed=7)


class MinHasher:
    """MinHash signatures of word-shingle sets, for many texts at once."""

    def __init__(self, num_perm: int = 120, bands: int = 20, shingle: int = 3, seed: int = 0):
        if num_perm % bands:
            raise ValueError(f"num_perm ({num_perm}) must be a multiple of bands ({bands})")
        rng = np.random.default_rng(seed)
        self.num_perm, self.bands, self.rows, self.shingle = num_perm, bands, num_perm // bands, shingle
        self.a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self.mix = rng.integers(1, 2**63, size=(shingle, self.rows), dtype=np.uint64) | np.uint64(1)

    def shingles(self, normalized: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        """(shingle hashes, start offset of each text) with shingles grouped by text in order. A text
        shorter than `shingle` words uses its words."""
        words = pl.DataFrame({"t": normalized}).with_row_index("doc").select("doc", pl.col("t").str.split(" ")).explode("t")
        doc = words["doc"].to_numpy().astype(np.int64)
        wh = words["t"].fill_null("").hash(seed=11).to_numpy()
        k = self.shingle
        n_docs = len(normalized)
        if k > 1 and len(wh) >= k:
            same = doc[: len(doc) - k + 1] == doc[k - 1 :]
            sh = wh[: len(wh) - k + 1] * self.mix[0, 0]
            for j in range(1, k):
                sh = sh + wh[j : len(wh) - k + 1 + j] * self.mix[j, 0]
            sh, sdoc = sh[same], doc[: len(doc) - k + 1][same]
            has = np.zeros(n_docs, dtype=bool)
            has[sdoc] = True
            short = ~has[doc]
            if short.any():  # texts with fewer than k words: their words are their shingles
                sh = np.concatenate([sh, wh[short]])
                sdoc = np.concatenate([sdoc, doc[short]])
                order = np.argsort(sdoc, kind="stable")
                sh, sdoc = sh[order], sdoc[order]
        else:
            sh, sdoc = wh, doc
        starts = np.searchsorted(sdoc, np.arange(n_docs))
        return sh, starts

    def signatures(self, normalized: pl.Series) -> np.ndarray:
        """uint32 array [len(normalized), num_perm]."""
        n = len(normalized)
        out = np.empty((n, self.num_perm), dtype=np.uint32)
        if n == 0:
            return out
        sh, starts = self.shingles(normalized)
        for p0 in range(0, self.num_perm, PERM_CHUNK):
            a, b = self.a[p0 : p0 + PERM_CHUNK], self.b[p0 : p0 + PERM_CHUNK]
            v = ((sh[:, None] * a[None, :] + b[None, :]) >> np.uint64(32)).astype(np.uint32)
            out[:, p0 : p0 + PERM_CHUNK] = np.minimum.reduceat(v, starts, axis=0)
        return out

    def band_keys(self, sig: np.ndarray) -> np.ndarray:
        """uint64 array [bands, n]: one hash per band of each signature (band-major, for per-band sorts)."""
        keys = np.empty((self.bands, len(sig)), dtype=np.uint64)
        s = sig.astype(np.uint64)
        for j in range(self.bands):
            block = s[:, j * self.rows : (j + 1) * self.rows]
            keys[j] = (block * self.mix[0][None, :]).sum(axis=1) + np.uint64(j)
        return keys
