"""Scoring and judging: every measure's score columns, then the reject reasons under a `CurateConfig`.

Score first, threshold later (as in data-juicer and datatrove): `Scorer.score` only adds columns and
never drops or reorders rows, so a threshold can be changed and re-applied without re-measuring, and
every rejected row says why. `local_reasons` applies every measure's rules but dedup's; `judge` adds
dedup across the frame. The measures and their order come from filters/registry.py.

Columns added: SCORE_COLUMNS (each measure's `columns`), then by `judge` DEDUP_COLUMNS (dup_cluster,
dup_cluster_prompts, duplicate_of: filters/dedup.py), `reject_reasons` (list[str], empty when kept,
in REASONS order) and `reject_reason` (the first, null when kept).
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from typing import Any, Iterator

import polars as pl

from distill.config.curate import CurateConfig
from filters.decontam import ContaminationIndex, Decontam
from filters.dedup import DEDUP_COLUMNS, Dedup, DedupIndex, apply_dedup, duplicate_ids, no_dedup
from filters.measure import DEFAULT_TASK, Batch, Measure
from filters.registry import MEASURE_TYPES, REASONS, SCORE_COLUMNS

REASON_COLUMNS: tuple[str, ...] = ("reject_reasons", "reject_reason")
REQUIRED_COLUMNS: tuple[str, ...] = ("id", "prompt", "completion")


def prepare(df: pl.DataFrame) -> pl.DataFrame:
    """The input as curation reads it: `task` defaults to "math"."""
    if "task" not in df.columns:
        return df.with_columns(pl.lit(DEFAULT_TASK, dtype=pl.Utf8).alias("task"))
    if df.schema["task"] in (pl.Utf8, pl.Null):
        return df.with_columns(pl.col("task").cast(pl.Utf8).fill_null(DEFAULT_TASK))
    return df


def check_columns(columns: list[str], source: Any) -> None:
    for col in REQUIRED_COLUMNS:
        if col not in columns:
            raise ValueError(
                f"{source}: missing required column {col!r} (curate needs {', '.join(REQUIRED_COLUMNS)}; "
                f"found {', '.join(columns)})"
            )


class Timings:
    """Seconds spent per measure (summed over batches and processes)."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()

    @contextmanager
    def __call__(self, measure: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[measure] += time.perf_counter() - t0


def load_measures(cfg: CurateConfig) -> dict[str, Any]:
    """What every measure reads from outside (`Measure.load`), once, to hand to `Scorer`s in workers."""
    return {m.name: m.load(cfg) for m in MEASURE_TYPES}


class Scorer:
    """Computes the score columns for batches of rows. Holds one instance of every measure, with what
    it builds once per process (the contamination index, the MinHash permutations). `loaded`: the
    measures' `load` results by name (`load_measures`); a measure missing from it loads for itself."""

    def __init__(self, cfg: CurateConfig | None = None, loaded: dict[str, Any] | None = None):
        self.cfg = cfg or CurateConfig()
        loaded = loaded or {}
        self.measures: list[Measure] = [m(self.cfg, loaded.get(m.name)) for m in MEASURE_TYPES]
        self.timings = Timings()

    def measure(self, kind: type[Measure]) -> Any:
        return next(m for m in self.measures if isinstance(m, kind))

    @property
    def index(self) -> ContaminationIndex | None:
        """The contamination index (None without benchmarks)."""
        return self.measure(Decontam).index

    def score(self, df: pl.DataFrame) -> pl.DataFrame:
        """Add SCORE_COLUMNS. Rows are neither dropped nor reordered; scoring an already scored frame
        replaces the columns with the same values."""
        df = df.drop([c for c in (*SCORE_COLUMNS, *DEDUP_COLUMNS, *REASON_COLUMNS) if c in df.columns])
        batch = Batch(df)
        cols: dict[str, pl.Series] = {}
        for m in self.measures:
            if m.columns:
                with self.timings(m.name):
                    got = m.score(batch)
                cols.update({name: got[name].cast(dtype).alias(name) for name, dtype in m.columns.items()})
        return df.with_columns(**{name: cols[name] for name in SCORE_COLUMNS})

    def dedup_inputs(self, judged: pl.DataFrame) -> dict[str, Any]:
        """What `DedupIndex` needs from one judged batch (`Dedup.inputs`)."""
        with self.timings(Dedup.name):
            return self.measure(Dedup).inputs(judged)


def score(df: pl.DataFrame, cfg: CurateConfig | None = None) -> pl.DataFrame:
    """Add the score columns with a fresh `Scorer`."""
    return Scorer(cfg).score(df)


def rules(df: pl.DataFrame, cfg: CurateConfig) -> dict[str, pl.Expr]:
    """Every measure's reasons but the dedup ones, as boolean expressions over a scored frame."""
    out: dict[str, pl.Expr] = {}
    for m in MEASURE_TYPES:
        out.update(m.reject(df, cfg))
    return out


def local_reasons(df: pl.DataFrame, cfg: CurateConfig) -> pl.DataFrame:
    """`reject_reasons` from every measure but dedup (which needs all rows), in REASONS order."""
    found = rules(df, cfg)
    parts = [pl.when(found[r]).then(pl.lit(r)).otherwise(pl.lit(None, dtype=pl.Utf8)) for r in REASONS if r in found]
    if parts and df.height:
        return df.with_columns(pl.concat_list(parts).list.drop_nulls().alias("reject_reasons"))
    return df.with_columns(pl.Series("reject_reasons", [[] for _ in range(df.height)], dtype=pl.List(pl.Utf8)))


def judge(df: pl.DataFrame, cfg: CurateConfig | None = None, scorer: Scorer | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """`reject_reasons` and the dedup counts, over one in-memory frame."""
    cfg = cfg or CurateConfig()
    scorer = scorer or Scorer(cfg)
    if any(c not in df.columns for c in SCORE_COLUMNS):
        df = scorer.score(df)
    df = df.drop([c for c in (*DEDUP_COLUMNS, *REASON_COLUMNS) if c in df.columns])
    judged = local_reasons(df, cfg)
    if not cfg.dedup.enabled or judged.height == 0:
        return no_dedup(judged), {}
    inputs = scorer.dedup_inputs(judged)
    index = DedupIndex(cfg.dedup)
    index.add_rows(**inputs["rows"])
    if inputs["prompts"]:
        index.add_prompts(**inputs["prompts"])
    with scorer.timings(Dedup.name):
        result = index.decide()
    dup_of = duplicate_ids(judged.get_column("id"), result.duplicate_of)
    return apply_dedup(judged, result.reason, dup_of, result.cluster, result.cluster_prompts), result.stats


def reject_reasons(df: pl.DataFrame, cfg: CurateConfig | None = None, scorer: Scorer | None = None) -> pl.DataFrame:
    """Add `reject_reasons` (every reason that applies, in REASONS order) and `reject_reason`.

    Scores the frame first if its score columns are missing. Each measure's class documents its rules
    (thresholds from `cfg`): Decontam (filters/decontam.py), Format and Readability
    (filters/readability.py), Language (filters/language.py), Repetition, Chaos, Correctness and Dedup
    (filters/dedup.py, across the frame).
    """
    return judge(df, cfg, scorer)[0]
