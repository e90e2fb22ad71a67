"""Verifying tables and files: a verifier over a completion column, the verify stage's recipe settings, and
rows routed to a verifier by their `task` column (math / code / general) for mixed files.

Every function keeps the input's columns and row order and adds `correct` (nullable Boolean: None is
unverifiable, never correct) and `verify_reason`; routed tables also get `verifier` (which one ran).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

from distill.core.models import resolve_model
from distill.core.schema import PREFILL, full_completion
from distill.core.storage import read_table, write_parquet
from distill.engines.factory import engine_for
from distill.verify.registry import Verifier, get_verifier, map_verdicts, unrouted_reason, verifier_for_task
from distill.verify.sandbox import Limits


def check_columns(df: pl.DataFrame, completion_col: str = "completion", answer_col: str = "answer",
                  source: str | Path | None = None) -> None:
    """A ValueError naming the column (and `source`, the file) unless the completions are text and the answers
    and tasks plain values: a list or struct column (nested parquet) cannot be verified."""
    where = f"{source}: " if source is not None else ""
    if completion_col not in df.columns:
        raise ValueError(f"{where}column {completion_col!r} not found (columns: {', '.join(df.columns)})")
    for col in (completion_col, answer_col, "task"):
        dtype = df.schema.get(col)
        if dtype is None or dtype == pl.Null:
            continue
        text = dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum))
        if dtype.is_nested() or dtype in (pl.Object, pl.Binary) or (col != answer_col and not text):
            raise ValueError(f"{where}column {col!r} holds {dtype} values; verify needs {'plain values' if col == answer_col else 'text'}")


def verify_table_with_stats(
    df: pl.DataFrame,
    verifier: str | Verifier = "math",
    completion_col: str = "completion",
    answer_col: str = "answer",
    *,
    workers: int = 1,
    prompt_col: str = "prompt",
    **options: Any,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """verify_table, plus the verifier's stats: {} for math; {"sandbox": ...} for code; {"judge": ...}
    (asked, decided, disagreements with the rules...) for a cascade. `options` go to the verifier's
    factory; `verifier` may also be a verifier object. The prompt column (when present) is shown to a judge."""
    fn = get_verifier(verifier, **options) if isinstance(verifier, str) else verifier
    check_columns(df, completion_col, answer_col)
    completions = [c or "" for c in df.get_column(completion_col).to_list()]
    if PREFILL in df.columns:  # the model's whole turn: a prefilled `<think>` that never closed is unfinished reasoning
        completions = [full_completion(c, p) for c, p in zip(completions, df.get_column(PREFILL).to_list())]
    # Answers can arrive typed (JSONL `"answer": 42` reads as Int64); verifiers take strings.
    answers = (
        [None if a is None else str(a) for a in df.get_column(answer_col).to_list()]
        if answer_col in df.columns
        else [None] * df.height
    )
    batch = getattr(fn, "verify_batch", None)
    if batch is not None:
        prompts = df.get_column(prompt_col).to_list() if prompt_col in df.columns else None
        verdicts, stats = batch(completions, answers, prompts=prompts, workers=workers)
    else:
        verdicts, stats = map_verdicts(fn, completions, answers, workers), {}
    out = df.with_columns(
        pl.Series("correct", [v.correct for v in verdicts], dtype=pl.Boolean),
        pl.Series("verify_reason", [v.reason for v in verdicts], dtype=pl.Utf8),
    )
    return out, stats


def verify_table(
    df: pl.DataFrame,
    verifier: str | Verifier = "math",
    completion_col: str = "completion",
    answer_col: str = "answer",
    **kwargs: Any,
) -> pl.DataFrame:
    """`df` with every column kept, in the same row order, plus `correct` (nullable Boolean) and
    `verify_reason` (Utf8). Existing verdict columns are replaced. `workers=N` runs a per-row verifier in N
    processes; other keyword arguments as in verify_table_with_stats."""
    return verify_table_with_stats(df, verifier, completion_col, answer_col, **kwargs)[0]


def verdict_counts(df: pl.DataFrame) -> dict[str, Any]:
    correct = df.get_column("correct")
    return {
        "rows": df.height,
        "correct": int(correct.sum()),  # sums skip nulls
        "incorrect": int((~correct).sum()),
        "unverifiable": int(correct.null_count()),
        "reasons": dict(Counter(df.get_column("verify_reason").to_list())),
    }


def verify_file(
    input_path: str | Path, output_path: str | Path, verifier: str | Verifier = "math", **kwargs: Any
) -> dict[str, Any]:
    """Verify a JSONL/parquet file into a parquet file (written atomically); return the counts, plus the
    verifier's stats (`judge`, `sandbox`) when it has any."""
    df = read_table(input_path)
    check_columns(df, kwargs.get("completion_col", "completion"), kwargs.get("answer_col", "answer"), input_path)
    out, stats = verify_table_with_stats(df, verifier=verifier, **kwargs)
    write_parquet(out, Path(output_path))
    return {**verdict_counts(out), **stats}


# --- the recipe's verify section ---------------------------------------------------------------------------


def judge_engine(judge: Any) -> Any:
    """An engine for the judge model of a VerifyConfig.Judge section (the caller closes it)."""
    return engine_for(judge, resolve_model(judge.model))


def verifier_options(name: str, cfg: Any, engine: Any = None) -> dict[str, Any]:
    """The factory options of verifier `name` from a VerifyConfig: sandbox limits for code; the engine and
    judge settings for judge verifiers (`engine` must then be given)."""
    if name == "code":
        c = cfg.code
        limits = Limits(wall_s=c.wall_s, cpu_s=c.cpu_s, memory_mb=c.memory_mb, nproc=c.nproc, output_bytes=c.output_kb << 10)
        return {"limits": limits, "isolation": c.isolation, "python": c.python, "max_tests": c.max_tests}
    if "judge" in name:
        j = cfg.judge
        options = {"engine": engine, "max_tokens": j.max_tokens}
        if name == "math+judge":
            options.update(check_fraction=j.check_fraction, seed=j.seed)
        return options
    return {}


def verify_with_config(
    df: pl.DataFrame, cfg: Any, engine: Any = None, *, by_task: bool = False
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The verify stage's work for a recipe's `verify` section (a distill.config.recipe.VerifyConfig): its verifier
    with its settings; a judge engine is started for judge verifiers (unless `engine` is given) and closed.

    `by_task`: when `df` has a `task` column, each row goes to the verifier of its task instead
    (verify_by_task); without one, the section's verifier as usual."""
    if by_task and "task" in df.columns:
        return verify_by_task(df, cfg, engine)
    owned = None
    if "judge" in cfg.verifier and engine is None:
        engine = owned = judge_engine(cfg.judge)
    try:
        options = verifier_options(cfg.verifier, cfg, engine)
        return verify_table_with_stats(df, cfg.verifier, workers=cfg.workers, **options)
    finally:
        if owned is not None:
            owned.close()


def verify_by_task(df: pl.DataFrame, cfg: Any, engine: Any = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Each row verified by the verifier of its `task` (registry.verifier_for_task, with the section's verifier
    as the default and its judge, when it names a judge model, for `general` rows), with the section's
    settings; a row no verifier applies to is unverifiable with the reason why. Adds a `verifier` column
    (null where none ran). Stats: each verifier's own (a second one of the same key gets `key:verifier`),
    and `verifiers`: rows per verifier."""
    tasks = df.get_column("task").cast(pl.Utf8).to_list() if "task" in df.columns else [None] * df.height
    routed = [verifier_for_task(t, cfg.verifier, judge=bool(cfg.judge.model)) for t in tasks]
    correct: list[bool | None] = [None] * df.height
    reasons = [unrouted_reason(t) for t in tasks]
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(routed):
        if name is not None:
            groups.setdefault(name, []).append(i)
    stats: dict[str, Any] = {"verifiers": {name: len(rows) for name, rows in groups.items()}}
    owned = None
    if engine is None and any("judge" in name for name in groups):
        engine = owned = judge_engine(cfg.judge)
    try:
        for name, rows in groups.items():
            part, part_stats = verify_table_with_stats(
                df[rows], name, workers=cfg.workers, **verifier_options(name, cfg, engine)
            )
            for i, c, r in zip(rows, part.get_column("correct").to_list(), part.get_column("verify_reason").to_list()):
                correct[i], reasons[i] = c, r
            for key, value in part_stats.items():
                stats[key if key not in stats else f"{key}:{name}"] = value
    finally:
        if owned is not None:
            owned.close()
    out = df.with_columns(
        pl.Series("correct", correct, dtype=pl.Boolean),
        pl.Series("verify_reason", reasons, dtype=pl.Utf8),
        pl.Series("verifier", routed, dtype=pl.Utf8),
    )
    return out, stats
