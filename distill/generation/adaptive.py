"""Adaptive sampling: after the first n samples per prompt, rounds of more samples for the prompts whose
pass rate is low but not zero, until a per-prompt budget (distill.generation.rejection.adaptive_plan)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import polars as pl

from distill.engines.base import SamplingParams
from distill.generation.rejection import adaptive_plan
from distill.generation.shards import OFFSET, read_traces


def generate_adaptive(
    prompts: pl.DataFrame,
    out_dir: Path,
    *,
    params: SamplingParams,
    generate: Callable[..., dict],
    verify: Callable[[pl.DataFrame], pl.DataFrame],
    adaptive,
    keep_k: int | None = None,
) -> dict:
    """n samples per prompt, then rounds of `adaptive.samples_per_round` more for prompts whose pass rate
    is low but not zero, until the per-prompt budget (`distill.generation.rejection.adaptive_plan` decides).

    `generate(prompts, out_dir, params=, prefix=)` is one pass (generate_traces with its engine bound);
    `verify(df)` adds `correct`. Round r's shards are `round{r:02d}-NNNNN.parquet`. Which prompts a round
    samples depends only on what earlier rounds wrote, so a rerun after a kill plans the same rounds."""
    stats = generate(prompts, out_dir, params=params, prefix="shard")
    rounds: list[dict] = []
    verdicts = pl.DataFrame(schema={"id": pl.Utf8, "correct": pl.Boolean})
    prefixes = ["shard"]
    r = 0
    while r <= adaptive.max_samples_per_prompt:  # each round adds >= 1 sample to every prompt it picks
        traces = read_traces(out_dir, prefixes)
        new = traces.join(verdicts.select("id"), on="id", how="anti")
        if new.height:  # verify each sample once across rounds
            verdicts = pl.concat([verdicts, verify(new).select("id", pl.col("correct").cast(pl.Boolean))])
        df = traces.join(verdicts, on="id", how="left")
        plan = adaptive_plan(df, adaptive, keep_k)
        if plan.height == 0:
            break
        r += 1
        # prompts in a round normally all have the same number of samples so far, hence the same `extra`;
        # if not, each group gets its own shard series
        groups = plan.partition_by("extra", maintain_order=True)
        for j, group in enumerate(groups):
            extra = int(group["extra"][0])
            prefix = f"round{r:02d}" if len(groups) == 1 else f"round{r:02d}g{j}"
            todo = prompts.join(group.select("prompt_id", OFFSET), on="prompt_id", how="inner", maintain_order="left")
            st = generate(todo, out_dir, params=replace(params, n=extra), prefix=prefix)
            rounds.append({"round": r, "prompts": todo.height, "samples": st["rows"], "shards_generated": st["shards_generated"],
                           "completion_tokens": st["completion_tokens"], "engine_seconds": st["engine_seconds"]})
            for k in ("completion_tokens", "prompt_tokens", "engine_seconds", "shards_generated", "shards_corrupt"):
                stats[k] = round(stats[k] + st[k], 2) if isinstance(stats[k], float) else stats[k] + st[k]
            stats["rows"] += st["rows"]
            stats["files"] |= st["files"]
            stats["engine"] = stats["engine"] or st["engine"]
            if st.get("prefill"):
                stats["prefill"] = st["prefill"]
            prefixes.append(prefix)
    # rounds a previous run planned beyond this one's (its earlier shards were regenerated differently)
    for p in Path(out_dir).iterdir():
        if p.name.lstrip(".").startswith("round") and p.name.lstrip(".").split("-")[0] not in prefixes:
            p.unlink(missing_ok=True)
    secs = stats["engine_seconds"]
    stats["tokens_per_second"] = round(stats["completion_tokens"] / secs, 1) if secs else None
    stats["adaptive"] = {
        "rounds": rounds,
        "extra_samples": sum(r["samples"] for r in rounds),
        "correct_samples": int(df["correct"].fill_null(False).sum()) if df.height else 0,
    }
    return stats
