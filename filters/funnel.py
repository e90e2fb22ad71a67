"""The curation funnel: rows in and out of every measure, per reason, per source and per benchmark.

`Funnel.add` counts a judged batch (vectorised); `result` gives the dict written to funnel.json:

  rows_in, kept, rejected
  reasons            {reason: rows it applies to}, every reason in REASONS order (filters/registry.py)
  primary_reasons    {reason: rows for which it is the primary reason}
  measures           [{measure, reasons, rows_in, rows_out, dropped, applied}] in precedence order:
                     rows_in are the rows no earlier measure rejected, rows_out those it let through
  by_source          {source: {rows_in, kept, rejected, primary_reasons (non-zero)}} (`source` column;
                     "(none)" where missing)
  decontamination    {benchmarks: {name: {items, prompt_ngrams, response_ngrams, rows_matched,
                     prompt_rows, response_rows, contaminated_rows}}} (empty without benchmarks)
  dedup              counts from filters/dedup.py (distinct prompts, clusters, candidate pairs, ...)
  thresholds         the CurateConfig applied
  timing             {measures: {measure: {seconds, rows_per_s}}} (CPU seconds summed over worker
                     processes); curate_file adds wall_seconds, workers, batch_rows
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import polars as pl

from filters.registry import MEASURES, REASONS

NO_SOURCE = "(none)"


class Funnel:
    def __init__(self, cfg, index=None):
        self.cfg, self.index, self.reasons = cfg, index, REASONS
        self.rows = self.kept = 0
        self.applied: Counter[str] = Counter()
        self.primary: Counter[str] = Counter()
        self.sources: dict[str, dict[str, Any]] = {}
        self.bench: dict[str, Counter[str]] = {}

    def add(self, judged: pl.DataFrame) -> None:
        n = judged.height
        if not n:
            return
        self.rows += n
        primary = judged.get_column("reject_reason")
        self.kept += int(primary.is_null().sum())
        for reason, count in judged.get_column("reject_reasons").explode().drop_nulls().value_counts().iter_rows():
            self.applied[reason] += count
        for reason, count in primary.drop_nulls().value_counts().iter_rows():
            self.primary[reason] += count
        src = (
            judged.get_column("source").cast(pl.Utf8).fill_null(NO_SOURCE)
            if "source" in judged.columns
            else pl.Series([NO_SOURCE] * n)
        )
        by = pl.DataFrame({"source": src, "reason": primary}).group_by("source", "reason").len()
        for source, reason, count in by.iter_rows():
            s = self.sources.setdefault(source, {"rows_in": 0, "kept": 0, "primary": Counter()})
            s["rows_in"] += count
            if reason is None:
                s["kept"] += count
            else:
                s["primary"][reason] += count
        self._add_benchmarks(judged)

    def _add_benchmarks(self, judged: pl.DataFrame) -> None:
        if self.index is None:
            return
        dc = self.cfg.decontam
        hit = judged.filter(pl.col("contam_benchmarks").is_not_null()).select(
            pl.col("contam_benchmarks").str.split(","),
            (pl.col("contam_prompt_hits") >= dc.min_prompt_hits).alias("prompt_rows"),
            (pl.col("contam_response_hits") >= dc.min_response_hits).alias("response_rows"),
            (pl.col("reject_reasons").list.contains("contaminated")).alias("contaminated_rows"),
        )
        if not hit.height:
            return
        per = hit.explode("contam_benchmarks").group_by("contam_benchmarks").agg(
            pl.len().alias("rows_matched"), pl.col("prompt_rows").sum(), pl.col("response_rows").sum(),
            pl.col("contaminated_rows").sum(),
        )  # fmt: skip
        for row in per.iter_rows(named=True):
            c = self.bench.setdefault(row.pop("contam_benchmarks"), Counter())
            c.update({k: int(v) for k, v in row.items()})

    def result(self, timings: dict[str, float] | None = None, dedup: dict[str, Any] | None = None) -> dict[str, Any]:
        rejected = self.rows - self.kept
        measures, remaining = [], self.rows
        for measure, reasons in MEASURES.items():
            dropped = sum(self.primary.get(r, 0) for r in reasons)
            measures.append(
                {
                    "measure": measure,
                    "reasons": list(reasons),
                    "rows_in": remaining,
                    "rows_out": remaining - dropped,
                    "dropped": dropped,
                    "applied": sum(self.applied.get(r, 0) for r in reasons),
                }
            )
            remaining -= dropped
        benchmarks = {}
        if self.index is not None:
            for name in self.index.names:
                stats = dict(self.index.stats.get(name, {}))
                counts = self.bench.get(name, Counter())
                for key in ("rows_matched", "prompt_rows", "response_rows", "contaminated_rows"):
                    stats[key] = int(counts.get(key, 0))
                benchmarks[name] = stats
        timing = {
            "measures": {
                m: {"seconds": round(s, 3), "rows_per_s": round(self.rows / s) if s > 0 else None}
                for m, s in (timings or {}).items()
            }
        }
        return {
            "rows_in": self.rows,
            "kept": self.kept,
            "rejected": rejected,
            "reasons": {r: self.applied.get(r, 0) for r in self.reasons},
            "primary_reasons": {r: self.primary.get(r, 0) for r in self.reasons},
            "measures": measures,
            "by_source": {
                src: {
                    "rows_in": s["rows_in"],
                    "kept": s["kept"],
                    "rejected": s["rows_in"] - s["kept"],
                    "primary_reasons": {r: s["primary"][r] for r in self.reasons if s["primary"].get(r)},
                }
                for src, s in sorted(self.sources.items())
            },
            "decontamination": {"benchmarks": benchmarks},
            "dedup": dedup or {},
            "thresholds": self.cfg.model_dump(mode="json"),
            "timing": timing,
        }
