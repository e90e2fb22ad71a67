"""Prompt sources: the built-in demo task, a local JSONL/parquet file, or a `datasets` source."""

from __future__ import annotations

import polars as pl

from distill.generation import demo_task
from distill.config.prompts import PromptsConfig
from distill.core.schema import content_id
from distill.core.storage import read_table

PROMPT_SCHEMA = {
    "prompt_id": pl.Utf8,
    "prompt": pl.Utf8,
    "answer": pl.Utf8,
    "task": pl.Utf8,
    "language": pl.Utf8,
    "source": pl.Utf8,
}


def _normalise(df: pl.DataFrame, cfg: PromptsConfig, origin: str) -> pl.DataFrame:
    for col in (cfg.prompt_field, cfg.answer_field):
        if col not in df.columns:
            raise ValueError(f"{origin}: column {col!r} is missing (prompts.prompt_field / prompts.answer_field)")
    df = df.rename({cfg.prompt_field: "prompt", cfg.answer_field: "answer"})
    bad = df.with_row_index("row").filter(pl.col("prompt").is_null() | (pl.col("prompt").cast(pl.Utf8).str.strip_chars() == ""))
    if bad.height:
        raise ValueError(f"{origin}: row {bad['row'][0]} has an empty prompt")
    df = df.with_columns(pl.col("prompt").cast(pl.Utf8), pl.col("answer").cast(pl.Utf8))
    defaults = {"task": "math", "language": None, "source": origin}
    for col, val in defaults.items():
        if col not in df.columns:
            df = df.with_columns(pl.lit(val, dtype=pl.Utf8).alias(col))
    if "prompt_id" not in df.columns:
        df = df.with_columns(
            pl.col("prompt").map_elements(lambda p: content_id(origin, p), return_dtype=pl.Utf8).alias("prompt_id")
        )
    df = df.unique(subset="prompt_id", keep="first", maintain_order=True)
    return df.select([pl.col(c).cast(t) for c, t in PROMPT_SCHEMA.items()])


def load_prompts(cfg: PromptsConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, eval) prompt tables with the PROMPT_SCHEMA columns, deterministic for a given config."""
    if cfg.source == "demo_arithmetic":
        train, ev = demo_task.make_prompts(cfg.n_train, cfg.n_eval, cfg.seed)
        return pl.DataFrame(train, schema=PROMPT_SCHEMA), pl.DataFrame(ev, schema=PROMPT_SCHEMA)
    if cfg.source == "file":
        df = _normalise(read_table(cfg.path), cfg, cfg.path)
    else:
        import datasets  # heavy: only for Hub prompt sets

        ds = datasets.load_dataset(cfg.path, cfg.hf_config, split=cfg.split)
        df = _normalise(pl.from_arrow(ds.data.table), cfg, f"hf:{cfg.path}")
    df = df.sample(fraction=1.0, shuffle=True, seed=cfg.seed)
    if df.height < cfg.n_eval + 1:
        raise ValueError(f"prompts: {df.height} rows, fewer than n_eval + 1 = {cfg.n_eval + 1}")
    return df.slice(cfg.n_eval, cfg.n_train), df.head(cfg.n_eval)
