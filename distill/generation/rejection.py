"""The rejection policy: per-prompt pass rates, up to k correct samples per prompt, unsolved prompts,
and which prompts deserve more samples. Pure functions over trace tables (no I/O, no engine).

- `pass_rates`: one row per prompt: samples, correct, unverifiable, pass rate and a difficulty level.
  Unverifiable samples never count as correct; a prompt none of whose samples could be judged (no or an
  unparseable reference) has no pass rate and the level "unverifiable", not "unsolved".
- `select_per_prompt`: keep up to k rows per prompt among rows already accepted (correct and clean),
  the `shortest` ones or the most `diverse` ones; the rest are returned with reject reason `over_k`.
- `unsolved_prompts`: prompts with no correct sample (or none that survived curation), for a later round.
- `adaptive_plan`: prompts whose pass rate is low but not zero get more samples, up to a budget.
"""

from __future__ import annotations

import polars as pl

from distill.core.schema import PROMPT_COLUMNS, normalize_text

OVER_K = "over_k"

# pass rate p: unsolved p = 0; hard 0 < p <= 0.25; medium 0.25 < p < 0.75; easy p >= 0.75
LEVELS = ("unsolved", "hard", "medium", "easy", "unverifiable")


def _level(p: float | None) -> str:
    if p is None:
        return "unverifiable"
    if p == 0:
        return "unsolved"
    return "hard" if p <= 0.25 else "medium" if p < 0.75 else "easy"


def pass_rates(df: pl.DataFrame) -> pl.DataFrame:
    """prompt_id, n_samples, n_correct, n_unverifiable, pass_rate (null when nothing could be judged),
    difficulty (1 - pass_rate) and level, in first-seen prompt order."""
    per = df.group_by("prompt_id", maintain_order=True).agg(
        pl.len().alias("n_samples"),
        pl.col("correct").fill_null(False).sum().cast(pl.Int64).alias("n_correct"),
        pl.col("correct").is_null().sum().cast(pl.Int64).alias("n_unverifiable"),
    )
    judged = pl.col("n_samples") > pl.col("n_unverifiable")
    per = per.with_columns(
        pl.when(judged).then(pl.col("n_correct") / pl.col("n_samples")).otherwise(None).alias("pass_rate")
    )
    return per.with_columns(
        (1 - pl.col("pass_rate")).alias("difficulty"),
        pl.col("pass_rate").map_elements(_level, return_dtype=pl.Utf8, skip_nulls=False).alias("level"),
    )


def _ngrams(text: str, n: int = 3) -> frozenset:
    words = normalize_text(text).split(" ")
    return frozenset(tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1)))


def _distance(a: frozenset, b: frozenset) -> float:
    union = len(a | b)
    return 1.0 - len(a & b) / union if union else 0.0


def _diverse_order(rows: list[dict], k: int) -> list[int]:
    """Farthest-point selection on word-trigram Jaccard distance, starting from the shortest sample:
    each next pick is the sample least like everything picked so far (ties: shorter first)."""
    grams = [_ngrams(r["completion"] or "") for r in rows]
    picked = [0]
    nearest = [_distance(grams[0], g) for g in grams]
    while len(picked) < min(k, len(rows)):
        best = max((i for i in range(len(rows)) if i not in picked), key=lambda i: (nearest[i], -i))
        picked.append(best)
        nearest = [min(d, _distance(grams[best], g)) for d, g in zip(nearest, grams)]
    return picked


def select_per_prompt(df: pl.DataFrame, k: int | None, strategy: str = "shortest") -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept, dropped): at most k rows per prompt; dropped rows get reject_reason `over_k`.

    Rows are ordered shortest first (completion_tokens, then characters, then sample index, then id), so
    the choice is deterministic; `diverse` then picks greedily for dissimilarity. Both frames keep `df`'s
    columns and its row order."""
    if strategy not in ("shortest", "diverse"):
        raise ValueError(f"unknown selection strategy {strategy!r} (shortest, diverse)")
    if k is None or df.height == 0:
        return df, df.clear()
    length = pl.col("completion_tokens") if "completion_tokens" in df.columns else pl.col("completion").str.len_chars()
    ranked = df.with_row_index("_row").with_columns(length.alias("_len"), pl.col("completion").str.len_chars().alias("_chars"))
    order = [c for c in ("_len", "_chars", "sample_index", "id") if c in ranked.columns]
    ranked = ranked.sort(order)
    keep_rows: list[int] = []
    for _, g in ranked.group_by("prompt_id", maintain_order=True):
        if g.height <= k:
            keep_rows += g["_row"].to_list()
        elif strategy == "shortest":
            keep_rows += g["_row"].head(k).to_list()
        else:
            rows = g.select("_row", "completion").to_dicts()
            keep_rows += [rows[i]["_row"] for i in _diverse_order(rows, k)]
    mask = pl.Series([False] * df.height)
    mask[sorted(keep_rows)] = True
    kept, dropped = df.filter(mask), df.filter(~mask)
    reason = [pl.lit(OVER_K).alias("reject_reason"), pl.lit([OVER_K], dtype=pl.List(pl.Utf8)).alias("reject_reasons")]
    return kept, dropped.with_columns(reason)


def unsolved_prompts(verified: pl.DataFrame, accepted: pl.DataFrame | None = None) -> pl.DataFrame:
    """Prompts to sample again later: `no_correct_sample` (none judged correct; prompts that could not
    be judged at all are left out: more samples will not help), or `no_accepted_sample` (correct samples
    exist, but curation rejected all of them)."""
    rates = pass_rates(verified)
    accepted_ids = set(accepted["prompt_id"].to_list()) if accepted is not None and accepted.height else set()
    rates = rates.with_columns(
        pl.when(pl.col("n_correct") == 0)
        .then(pl.lit("no_correct_sample"))
        .when(~pl.col("prompt_id").is_in(list(accepted_ids)) & pl.lit(accepted is not None))
        .then(pl.lit("no_accepted_sample"))
        .otherwise(None)
        .alias("reason")
    ).filter(pl.col("reason").is_not_null() & (pl.col("level") != "unverifiable"))
    cols = [c for c in PROMPT_COLUMNS if c in verified.columns]
    prompts = verified.select(cols).unique("prompt_id", keep="first", maintain_order=True)
    return rates.join(prompts, on="prompt_id", how="left", maintain_order="left").select(
        cols + ["n_samples", "n_correct", "pass_rate", "reason"]
    )


def adaptive_plan(verified: pl.DataFrame, cfg, keep_k: int | None = None) -> pl.DataFrame:
    """prompt_id, sample_offset, extra: who gets `extra` more samples starting at index `sample_offset`.

    Chosen: 0 < pass rate <= cfg.max_pass_rate, fewer correct samples than keep_k (when set), and fewer
    samples than cfg.max_samples_per_prompt. Empty when adaptive sampling is off."""
    empty = pl.DataFrame(schema={"prompt_id": pl.Utf8, "sample_offset": pl.Int64, "extra": pl.Int64})
    if not cfg.enabled or verified.height == 0:
        return empty
    rates = pass_rates(verified).join(
        verified.group_by("prompt_id").agg((pl.col("sample_index").max() + 1).cast(pl.Int64).alias("sample_offset")),
        on="prompt_id", how="left", maintain_order="left",
    )
    chosen = rates.filter(
        (pl.col("pass_rate") > 0)
        & (pl.col("pass_rate") <= cfg.max_pass_rate)
        & (pl.col("n_samples") < cfg.max_samples_per_prompt)
        & (pl.lit(True) if keep_k is None else pl.col("n_correct") < keep_k)
    )
    if chosen.height == 0:
        return empty
    return chosen.select(
        "prompt_id", "sample_offset",
        pl.min_horizontal(pl.lit(cfg.samples_per_round), cfg.max_samples_per_prompt - pl.col("n_samples")).cast(pl.Int64).alias("extra"),
    )
