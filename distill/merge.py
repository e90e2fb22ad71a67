"""Merge curated reasoning traces with non-reasoning samples into one SFT set.

R1 trained its students on ~600k reasoning and ~200k non-reasoning samples (writing, factual QA,
self-cognition, translation), the latter without a chain of thought. Rows come out in TRL's
conversational prompt/completion form; reasoning completions keep their `<think>` block, and
non-reasoning ones carry none (a stray think block in a source row is an error, not silently kept).
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import polars as pl

from distill.recipe import MergeConfig, MergeSource
from distill.schema import THINK_CLOSE, THINK_OPEN, content_id
from distill.storage import read_table

SFT_SCHEMA = {
    "id": pl.Utf8,
    "kind": pl.Utf8,  # "reasoning" | "non_reasoning"
    "category": pl.Utf8,
    "source": pl.Utf8,
    "prompt": pl.List(pl.Struct({"role": pl.Utf8, "content": pl.Utf8})),
    "completion": pl.List(pl.Struct({"role": pl.Utf8, "content": pl.Utf8})),
}


def _conv(prompt: str, completion: str, system_prompt: str | None = None) -> tuple[list[dict], list[dict]]:
    msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": prompt}]
    return msgs, [{"role": "assistant", "content": completion}]


def load_non_reasoning(src: MergeSource, student_name: str = "the student", maker: str = "the r1-distill project") -> list[dict]:
    if src.kind == "file":
        df = read_table(src.path)
        origin = src.path
    else:
        import datasets

        df = pl.from_arrow(datasets.load_dataset(src.path, split=src.split).data.table)
        origin = f"hf:{src.path}"
    for col in ("prompt", "response"):
        if col not in df.columns:
            raise ValueError(f"non-reasoning source {origin}: column {col!r} is missing")
    rows = []
    for i, r in enumerate(df.iter_rows(named=True)):
        response = (r["response"] or "").strip()
        if not response or not (r["prompt"] or "").strip():
            raise ValueError(f"non-reasoning source {origin}: row {i} has an empty prompt or response")
        if THINK_OPEN in response or THINK_CLOSE in response:
            raise ValueError(f"non-reasoning source {origin}: row {i} carries a think block")
        category = src.category or r.get("category") or "general"
        if category == "self_cognition":  # answers name the student and its maker
            response = response.replace("{name}", student_name).replace("{maker}", maker)
        prompt, completion = _conv(r["prompt"], response)
        rows.append(
            {
                "id": r.get("id") or content_id(origin, r["prompt"]),
                "kind": "non_reasoning",
                "category": category,
                "source": origin,
                "prompt": prompt,
                "completion": completion,
            }
        )
    return rows


def _resample(rows: list[dict], n: int, rng: random.Random) -> list[dict]:
    """Exactly n rows: down-sample without replacement, or repeat whole copies then top up."""
    if n <= 0 or not rows:
        return []
    if n <= len(rows):
        return rng.sample(rows, n)
    out = rows * (n // len(rows))
    return out + rng.sample(rows, n - len(out))


def merge(kept: pl.DataFrame, cfg: MergeConfig, system_prompt: str | None = None) -> tuple[pl.DataFrame, dict]:
    """The SFT set and its mix summary. `kept` are curated traces (prompt, completion, id, source)."""
    reasoning = []
    for r in kept.iter_rows(named=True):
        prompt, completion = _conv(r["prompt"], r["completion"].strip(), system_prompt)
        reasoning.append(
            {"id": r["id"], "kind": "reasoning", "category": r.get("task") or "math", "source": r.get("source") or "traces", "prompt": prompt, "completion": completion}
        )
    pool = [row for src in cfg.non_reasoning for row in load_non_reasoning(src)]
    f = cfg.non_reasoning_fraction
    n_non = math.ceil(len(reasoning) * f / (1 - f)) if reasoning else len(pool)
    rng = random.Random(cfg.seed)
    chosen = _resample(pool, n_non, rng)
    rows = reasoning + chosen
    rng.shuffle(rows)
    df = pl.DataFrame(rows, schema=SFT_SCHEMA)
    mix = {
        "rows": df.height,
        "reasoning_rows": len(reasoning),
        "non_reasoning_rows": len(chosen),
        "non_reasoning_available": len(pool),
        "by_category": dict(sorted(df.group_by("category").len().iter_rows())),
    }
    return df, mix


def to_training_rows(df: pl.DataFrame) -> list[dict]:
    return df.select("prompt", "completion").to_dicts()


def write_hf_dataset(df: pl.DataFrame, out: Path) -> None:
    """Also save in `datasets`' own format, so `load_from_disk` works as well as parquet loading."""
    import datasets

    from distill.storage import atomic_dir

    with atomic_dir(out) as tmp:
        datasets.Dataset.from_list(df.to_dicts()).save_to_disk(str(tmp))
