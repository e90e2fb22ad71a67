"""Curation measured on real teacher output (../shared/real-traces, not in the repository).

    .venv/bin/python scripts/real_traces.py [--shared DIR] [--html OUT.html] [--dropped N]

Curates all traces as a new user would (`distill curate` defaults: no language column, no verdicts),
then prints precision/recall of "drop" against labels.jsonl (unambiguous rows and all rows, recall per
labelled category), the drop rate per model and per source by primary reason, the labelled rows it
gets wrong, and with --dropped N up to N dropped traces per reason with the triggering span.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.config.curate import CurateConfig  # noqa: E402
from distill.report.quality import (  # noqa: E402
    LABEL_HEAD,
    drop_rates,
    format_drop_rates,
    format_label_metrics,
    label_metrics,
    quality_section,
    span_of,
)
from filters.curate import curate  # noqa: E402

SHARED = REPO.parent / "shared" / "real-traces"


def short_model(name: str) -> str:
    """"deepseek-r1:7b (Ollama tag = ...)" -> "deepseek-r1:7b"."""
    return name.split(" (", 1)[0]


def load_traces(shared: Path = SHARED) -> pl.DataFrame:
    rows = [json.loads(line) for line in (shared / "traces.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    return pl.DataFrame(
        {
            "id": [r["id"] for r in rows],
            "prompt": [r["prompt"] for r in rows],
            "completion": [r["completion"] for r in rows],
            "model": [short_model(r["model"]) for r in rows],
            "source": [r["source_repo"].split("/")[0] for r in rows],
            "prompt_language_hint": [r["prompt_language_hint"] for r in rows],
        }
    )


def load_labels(shared: Path = SHARED) -> list[dict]:
    return [json.loads(line) for line in (shared / "labels.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


def judge_all(df: pl.DataFrame, cfg: CurateConfig | None = None) -> pl.DataFrame:
    kept, rejected, _ = curate(df, cfg or CurateConfig())
    return pl.concat([kept, rejected], how="diagonal_relaxed")


def evaluate(judged: pl.DataFrame, labels: list[dict]) -> dict[str, dict]:
    clear = [lab for lab in labels if not lab["ambiguous_language"]]
    return {"unambiguous": label_metrics(judged, clear), "all": label_metrics(judged, labels)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--html", type=Path, help="write the quality section (samples with spans) here")
    ap.add_argument("--dropped", type=int, default=0, help="print up to N dropped traces per reason")
    args = ap.parse_args(argv)
    if not (args.shared / "traces.jsonl").is_file():
        print(f"no traces.jsonl under {args.shared}", file=sys.stderr)
        return 2
    df = load_traces(args.shared)
    t0 = time.perf_counter()
    judged = judge_all(df)
    print(f"curated {df.height} traces in {time.perf_counter() - t0:.1f} s\n")
    metrics = evaluate(judged, load_labels(args.shared))
    print(LABEL_HEAD)
    for name, m in metrics.items():
        print(format_label_metrics(name, m))
    print("\nlabelled rows judged differently (unambiguous first):")
    for name, m in metrics.items():
        for miss in m["misses"]:
            if name == "all" and miss in metrics["unambiguous"]["misses"]:
                continue
            print(f"  [{name}] {miss['id']}: label {miss['label']} ({miss['category']}), got {miss['got'] or 'keep'}")
    for by in ("model", "source"):
        print()
        print(format_drop_rates(drop_rates(judged, by), by))
    if args.dropped:
        for reason, g in judged.filter(pl.col("reject_reason").is_not_null()).group_by("reject_reason"):
            print(f"\n== {reason[0]} ({g.height})")
            for row in g.sample(min(args.dropped, g.height), seed=1).to_dicts():
                span = span_of(row)
                text = row["completion"]
                shown = text[max(0, span[0] - 80) : span[1] + 80] if span else text[-200:]
                print(f"- {row['id']} [{row['model']}] span={span}: {shown!r}")
    if args.html:
        args.html.write_text(f"<!doctype html><meta charset=utf-8>{quality_section(judged, 'model')}", encoding="utf-8")
        print(f"\nwrote {args.html}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
