"""Curation: score every trace, then let the recipe's thresholds turn scores into reject reasons.

Score first, threshold later (as in data-juicer and datatrove): scoring only adds columns and never
drops or reorders rows, so a threshold can be changed and re-applied without re-measuring, and every
rejected row says why. `curate` splits kept from rejected and counts the funnel; `curate_file` does
the same from and to files, streaming in batches over worker processes (filters/streaming.py), for
inputs of millions of rows.

The pieces, bottom up:
  filters/measure.py    `Measure`: a measure's score columns, its reasons, `score` and `reject`
  measure modules       Decontam (decontam.py), Format and Readability (readability.py), Language
                        (language.py), Repetition (repetition.py), Chaos (chaos.py), Correctness
                        (correctness.py), Dedup (dedup.py)
  filters/registry.py   the measures in precedence order: MEASURES, REASONS, SCORE_COLUMNS
  filters/scoring.py    `Scorer`, `score`, `reject_reasons` (every measure's rules, then dedup)
  filters/funnel.py     the counts written to funnel.json
This module is the entry point the stages use; it re-exports the names callers need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from distill.config.curate import CurateConfig
from filters.funnel import Funnel
from filters.language import language_measures
from filters.registry import MEASURES, REASONS, SCORE_COLUMNS
from filters.scoring import Scorer, judge, reject_reasons, score
from filters.streaming import curate_stream

__all__ = [
    "MEASURES",
    "REASONS",
    "SCORE_COLUMNS",
    "Scorer",
    "curate",
    "curate_file",
    "language_measures",
    "reject_reasons",
    "score",
]


def curate(df: pl.DataFrame, cfg: CurateConfig | None = None) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Split traces into (kept, rejected, funnel). Both frames keep every input column plus the score
    and reason columns, in input order; kept + rejected are exactly the input rows."""
    cfg = cfg or CurateConfig()
    scorer = Scorer(cfg)
    judged, dedup_stats = judge(df, cfg, scorer)
    is_kept = judged.get_column("reject_reason").is_null()
    funnel = Funnel(cfg, scorer.index)
    funnel.add(judged)
    return judged.filter(is_kept), judged.filter(~is_kept), funnel.result(scorer.timings.seconds, dedup_stats)


def curate_file(
    input_path: str | Path,
    output_dir: str | Path,
    cfg: CurateConfig | None = None,
    *,
    batch_rows: int = 10_000,
    workers: int | None = None,
) -> dict[str, Any]:
    """Curate a JSONL/parquet file (or a directory of parquet shards) of traces into `output_dir`/
    {kept.parquet, rejected.parquet, funnel.json}, published together (a run killed at any moment leaves
    the previous run's three files; the layout, symlinks into a hidden run directory, is in
    filters/output_set.py); return the funnel. `output_dir` may not be, or lie inside, an input directory.

    Streams in batches of `batch_rows` over `workers` processes (None: one per core, up to 8, and none
    for inputs of up to two batches), so memory stays flat however large the input (parquet; JSONL is
    read whole). Results do not depend on either setting. Workers are spawned, so a script calling
    this with workers needs the usual `if __name__ == "__main__":` guard.

    Required columns: id, prompt, completion. Optional: answer, task (default "math"), language,
    finish_reason, correct, completion_tokens, prompt_id (samples of one prompt share it; dedup keeps
    that many per cluster), source (the funnel counts per source); any other column is carried through.
    """
    return curate_stream(Path(input_path), Path(output_dir), cfg or CurateConfig(), batch_rows=batch_rows, workers=workers)
