"""Decontamination: word n-gram overlap of prompts and responses with benchmark sets.

A training row must not teach the answers of the benchmarks the students are evaluated on. For every
benchmark (a `datasets` Hub name in production, a local JSONL/parquet file in tests) the text fields
(`fields`: problem, question, prompt by default) are tokenised like the traces (filters/ngrams.py:
lower case, punctuation dropped, each CJK character a token) and cut into n-grams:

- prompts are compared with `prompt_ngram`-grams (8, as open-r1's decontamination), and a prompt
  equal to a whole benchmark text (after normalisation) matches too, so items shorter than n words are
  still caught;
- responses with `response_ngram`-grams (13, as GPT-3's): a response restating a benchmark problem
  word for word is contamination even when its prompt was paraphrased.

N-grams that occur in more than `boilerplate_items` items of the benchmarks ("express your answer as a
common fraction") are instructions, not content, and are not evidence. Scores per row: the number of
matching n-grams in the prompt and in the response, and the names of the benchmarks matched.

The index is a few sorted numpy arrays of n-gram hashes (polars' hash, the same in every process), so
it is built once and sent to worker processes as is.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from distill.config.curate import CurateConfig
from distill.core.storage import read_table
from filters.measure import Batch, Measure
from filters.ngrams import TOKEN_CHUNK, GramSet, Tokens, ngrams, normalize_words, tokenize

DEFAULT_FIELDS = ("problem", "question", "prompt")
MAX_BENCHMARKS = 63  # one bit each in an int64 mask


def whole_hashes(texts: pl.Series) -> np.ndarray:
    """Hash of each text's normalised token sequence (for whole-item matches)."""
    norm = normalize_words(texts).str.replace_all(r"\s+", " ").str.strip_chars()
    return norm.hash(seed=0xC0DE).to_numpy().view(np.int64)


def load_benchmark(spec) -> list[list[str]]:
    """The items of one benchmark (`BenchmarkSpec`), each as the texts of its listed fields."""
    if spec.kind == "file":
        df = read_table(Path(spec.path))
        if spec.split and "split" in df.columns:
            df = df.filter(df["split"] == spec.split)
        rows: Iterable[dict[str, Any]] = df.iter_rows(named=True)
        columns = df.columns
    else:
        import datasets  # slow to import, and only Hub benchmarks need it

        ds = datasets.load_dataset(spec.path, spec.config, split=spec.split)
        rows, columns = ds, ds.column_names
    fields = [f for f in spec.fields if f in columns]
    if not fields:
        raise ValueError(f"benchmark {spec.name!r} ({spec.path}): none of the fields {spec.fields} in its columns {columns}")
    out = []
    for r in rows:
        parts = [str(r[f]) for f in fields if r.get(f) is not None and str(r[f]).strip()]
        if parts:
            out.append(parts)
    return out


def load_items(cfg) -> dict[str, list[list[str]]]:
    """Benchmark name -> items (field texts), for every benchmark of a `DecontamConfig`."""
    items: dict[str, list[list[str]]] = {}
    for spec in cfg.benchmarks:
        if spec.name in items:
            raise ValueError(f"benchmark name {spec.name!r} is listed twice")
        items[spec.name] = load_benchmark(spec)
    if len(items) > MAX_BENCHMARKS:
        raise ValueError(f"at most {MAX_BENCHMARKS} benchmarks (got {len(items)})")
    return items


class ContaminationIndex:
    """N-gram index of benchmark items; `scan_prompts` / `scan_responses` score whole batches."""

    def __init__(self, items: dict[str, list[list[str]]], prompt_ngram: int = 8, response_ngram: int = 13, boilerplate_items: int = 5):
        if len(items) > MAX_BENCHMARKS:
            raise ValueError(f"at most {MAX_BENCHMARKS} benchmarks (got {len(items)})")
        self.names = list(items)
        self.prompt_n, self.response_n = prompt_ngram, response_ngram
        self.stats: dict[str, dict[str, int]] = {name: {"items": len(v)} for name, v in items.items()}
        texts, item_of, bench_of = [], [], []  # per field text: its item (numbered across benchmarks), its benchmark
        item = 0
        for b, benchmark in enumerate(items.values()):
            for fields in benchmark:
                for t in fields:
                    texts.append(t)
                    item_of.append(item)
                    bench_of.append(b)
                item += 1
        series = pl.Series(texts, dtype=pl.Utf8)
        item_arr, bench_arr = np.array(item_of, dtype=np.int64), np.array(bench_of, dtype=np.int64)
        tokens = tokenize(series)
        self.prompt_grams = self._build(tokens, prompt_ngram, item_arr, bench_arr, boilerplate_items, "prompt_ngrams")
        self.response_grams = self._build(tokens, response_ngram, item_arr, bench_arr, boilerplate_items, "response_ngrams")
        self.whole = GramSet(*_or_by_hash(whole_hashes(series), (np.int64(1) << bench_arr)))

    @classmethod
    def from_config(cls, cfg) -> "ContaminationIndex | None":
        """The index for a `DecontamConfig`, or None when it lists no benchmarks."""
        if not cfg.benchmarks:
            return None
        return cls.from_items(load_items(cfg), cfg)

    @classmethod
    def from_items(cls, items: dict[str, list[list[str]]], cfg) -> "ContaminationIndex":
        return cls(items, cfg.prompt_ngram, cfg.response_ngram, cfg.boilerplate_items)

    def _build(self, tokens: Tokens, n: int, item_of: np.ndarray, bench_of: np.ndarray, boilerplate: int, stat: str) -> GramSet:
        g = ngrams(tokens, n)
        df = pl.DataFrame({"h": g.hashes, "item": item_of[g.row], "bench": bench_of[g.row]}).unique()
        per = df.group_by("h").agg(pl.col("item").n_unique().alias("items"), pl.col("bench").unique().alias("bench"))
        per = per.filter(pl.col("items") <= boilerplate).with_row_index("i")
        pairs = per.select("i", "bench").explode("bench")
        rows, benches = pairs.get_column("i").to_numpy().astype(np.int64), pairs.get_column("bench").to_numpy().astype(np.int64)
        masks = np.zeros(per.height, dtype=np.int64)
        np.bitwise_or.at(masks, rows, np.left_shift(np.int64(1), benches))
        counts = np.bincount(benches, minlength=len(self.names))
        for b, name in enumerate(self.names):
            self.stats[name][stat] = int(counts[b])
        return GramSet(per.get_column("h").to_numpy().astype(np.int64), masks)

    def _scan(self, tokens: Tokens, n: int, grams: GramSet) -> tuple[np.ndarray, np.ndarray]:
        n_rows = len(tokens.lengths)
        g = ngrams(tokens, n)
        masks = grams.lookup(g.hashes)
        hit = masks != 0
        hits = np.bincount(g.row[hit], minlength=n_rows)
        mask = np.zeros(n_rows, dtype=np.int64)
        np.bitwise_or.at(mask, g.row[hit], masks[hit])
        return hits, mask

    def scan_prompts(self, prompts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        """(matching n-grams, benchmark bitmask) per prompt; a whole-text match counts as one more."""
        hits, mask = self._scan(tokenize(prompts), self.prompt_n, self.prompt_grams)
        whole = self.whole.lookup(whole_hashes(prompts))
        return hits + (whole != 0), mask | whole

    def scan_responses(self, tokens: Tokens) -> tuple[np.ndarray, np.ndarray]:
        """(matching n-grams, benchmark bitmask) per response, from their tokens."""
        return self._scan(tokens, self.response_n, self.response_grams)

    def names_of(self, mask: int) -> str | None:
        """Comma-joined benchmark names of a bitmask, None for 0."""
        if not mask:
            return None
        return ",".join(name for b, name in enumerate(self.names) if (int(mask) >> b) & 1)



class Decontam(Measure):
    """contaminated: contam_prompt_hits >= decontam.min_prompt_hits, or contam_response_hits >=
    decontam.min_response_hits (only with benchmarks listed: without, the hits are 0)."""

    name = "decontam"
    columns = {"contam_prompt_hits": pl.Int64, "contam_response_hits": pl.Int64, "contam_benchmarks": pl.Utf8}
    reasons = ("contaminated",)

    @classmethod
    def load(cls, cfg: CurateConfig) -> dict[str, list[list[str]]]:
        """The benchmarks' items ({} when none are listed)."""
        return load_items(cfg.decontam) if cfg.decontam.benchmarks else {}

    def __init__(self, cfg: CurateConfig, loaded: dict[str, list[list[str]]] | None = None) -> None:
        super().__init__(cfg)
        items = self.load(cfg) if loaded is None else loaded
        self.index = ContaminationIndex.from_items(items, cfg.decontam) if items else None

    def score(self, batch: Batch) -> dict[str, pl.Series]:
        n = batch.height
        if self.index is None:
            zeros = pl.Series(np.zeros(n, dtype=np.int64))
            return {
                "contam_prompt_hits": zeros,
                "contam_response_hits": zeros,
                "contam_benchmarks": pl.Series([None] * n, dtype=pl.Utf8),
            }
        comp = batch.completion_series
        r_hits = np.zeros(n, dtype=np.int64)
        r_mask = np.zeros(n, dtype=np.int64)
        for start in range(0, n, TOKEN_CHUNK):  # bounded memory
            chunk = comp.slice(start, TOKEN_CHUNK)
            end = start + len(chunk)
            r_hits[start:end], r_mask[start:end] = self.index.scan_responses(tokenize(chunk))
        prompts = batch.prompt_series
        distinct = prompts.unique(maintain_order=True)
        p_hits, p_mask = self.index.scan_prompts(distinct)
        found = pl.DataFrame({"p": distinct, "h": p_hits, "m": p_mask})
        joined = pl.DataFrame({"p": prompts}).join(found, on="p", how="left", maintain_order="left")
        mask = joined.get_column("m").to_numpy() | r_mask
        names = {int(m): self.index.names_of(int(m)) for m in np.unique(mask)}
        return {
            "contam_prompt_hits": joined.get_column("h").cast(pl.Int64),
            "contam_response_hits": pl.Series(r_hits, dtype=pl.Int64),
            "contam_benchmarks": pl.Series([names[int(m)] for m in mask], dtype=pl.Utf8),
        }

    @classmethod
    def reject(cls, df: pl.DataFrame, cfg: CurateConfig) -> dict[str, pl.Expr]:
        dc = cfg.decontam
        return {
            "contaminated": (pl.col("contam_prompt_hits") >= dc.min_prompt_hits)
            | (pl.col("contam_response_hits") >= dc.min_response_hits)
        }

def _or_by_hash(hashes: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    df = pl.DataFrame({"h": hashes, "m": masks}).group_by("h").agg(pl.col("m").unique())
    m = df.get_column("m").list.eval(pl.element()).list.sum()  # distinct single bits: sum == or
    return df.get_column("h").to_numpy(), m.to_numpy().astype(np.int64)
