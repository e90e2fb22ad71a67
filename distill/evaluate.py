"""Evaluation: pass@1 averaged over k samples, and cons@k (majority vote), on held-out prompts.

Scores the final answer with the same verifier registry as rejection sampling and the RL rewards, but
never the format: a right answer without a think block is still right, so before/after comparisons
measure reasoning, not tags. Format compliance is reported beside it.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Callable

import polars as pl

from distill.engines import Engine, SamplingParams
from distill.sample import generate_traces
from distill.schema import format_ok
from distill.storage import read_table
from distill.verify import extract_final_answer, verify_table


def score_samples(df: pl.DataFrame, k: int) -> dict:
    """pass@1 (mean over prompts of the share of correct samples), cons@k, format rate, with a 95% CI."""
    df = df.with_columns(
        pl.col("correct").fill_null(False).alias("_ok"),
        pl.col("completion").map_elements(lambda c: extract_final_answer(c) or "", return_dtype=pl.Utf8).alias("_final"),
        pl.col("completion").map_elements(format_ok, return_dtype=pl.Boolean).alias("_format"),
    )
    per_prompt = []
    for _, g in df.group_by("prompt_id", maintain_order=True):
        votes = Counter(a.strip() for a in g["_final"] if a.strip())
        cons = False
        if votes:
            top = votes.most_common(1)[0][0]
            cons = bool(g.filter(pl.col("_final").str.strip_chars() == top)["_ok"][0])
        per_prompt.append((float(g["_ok"].mean()), cons))
    n = len(per_prompt)
    p = [x for x, _ in per_prompt]
    mean = sum(p) / n if n else 0.0
    # standard error over prompts (samples within a prompt are correlated)
    se = math.sqrt(sum((x - mean) ** 2 for x in p) / (n - 1) / n) if n > 1 else 0.0
    return {
        "pass@1": round(mean, 4),
        "pass@1_ci95": [round(max(0.0, mean - 1.96 * se), 4), round(min(1.0, mean + 1.96 * se), 4)],
        f"cons@{k}": round(sum(c for _, c in per_prompt) / n, 4) if n else 0.0,
        "format_rate": round(float(df["_format"].mean()), 4) if df.height else 0.0,
        "unverifiable_rate": round(float(df["correct"].is_null().mean()), 4) if df.height else 0.0,
        "mean_completion_tokens": round(float(df["completion_tokens"].mean()), 1) if df.height else 0.0,
        "n_prompts": n,
        "k": k,
        "n_samples": df.height,
    }


def evaluate_model(
    prompts: pl.DataFrame,
    out_dir: Path,
    *,
    model_label: str,
    params: SamplingParams,
    engine_factory: Callable[[], Engine],
    verifier: str = "math",
    system_prompt: str | None = None,
    shard_size: int = 64,
) -> dict:
    """Generate k samples per prompt (resumable shards in `out_dir`), verify, score."""
    stats = generate_traces(
        prompts, out_dir, model_label=model_label, params=params, engine_factory=engine_factory,
        shard_size=shard_size, system_prompt=system_prompt,
    )
    df = verify_table(read_table(out_dir), verifier=verifier)
    result = score_samples(df, params.n)
    result["generation"] = {k: stats[k] for k in ("engine", "completion_tokens", "engine_seconds", "tokens_per_second") if k in stats}
    return result
