"""Curation: score every trace, then let the recipe's thresholds turn scores into reject reasons.

Score first, threshold later (as in data-juicer and datatrove): `score` only adds columns and never
drops or reorders rows, so a threshold can be changed and re-applied without re-measuring, and every
rejected row says why. `reject_reasons` applies a `CurateConfig`; `curate` splits kept from rejected
and counts the funnel; `curate_file` does the same from and to files.

Columns added by `score`:
  target_language      the row's `language` (normalized: "zh-CN" -> "zh"), else detected from `prompt`
  think_format         null when the think block is well formed, else a code (readability.think_format)
  truncated            finish_reason == "length", or a `<think>` opened and never closed
  target_lang_share    share of the completion's letters (reasoning + answer) in the target's script
  lang_switches        target <-> foreign script switches between sentences/clauses
  max_paragraph_chars  longest paragraph (text without a blank line), code fences left out
  completion_chars     len(completion)
Columns added by `reject_reasons`: `reject_reasons` (list[str], empty when kept) and `reject_reason`
(the first of them in `REASONS` order, null when kept).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

from distill.recipe import CurateConfig
from distill.storage import read_table, write_json, write_parquet
from filters.language import LANG_SCRIPTS, UNKNOWN, detect_language, language_scores, normalize_lang
from filters.readability import REASONING_TASKS, is_truncated, max_paragraph_chars, think_format

# Primary-reason precedence: a row's `reject_reason` is the first of these that applies.
REASONS: list[str] = [
    "truncated",
    "bad_think_format",
    "wrong_language",
    "language_mixing",
    "long_paragraph",
    "too_long",
    "incorrect",
    "unverifiable",
]

SCORE_COLUMNS: tuple[str, ...] = (
    "target_language",
    "think_format",
    "truncated",
    "target_lang_share",
    "lang_switches",
    "max_paragraph_chars",
    "completion_chars",
)
REASON_COLUMNS: tuple[str, ...] = ("reject_reasons", "reject_reason")
REQUIRED_COLUMNS: tuple[str, ...] = ("id", "prompt", "completion")
DEFAULT_TASK = "math"


def _column(df: pl.DataFrame, name: str) -> list[Any]:
    return df.get_column(name).to_list() if name in df.columns else [None] * df.height


def _prompt_text(prompt: Any) -> str:
    """A prompt as text; chat-style prompts (a list of {"role", "content"} messages) are joined."""
    if prompt is None:
        return ""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, dict):
        return _prompt_text(prompt.get("content"))
    if isinstance(prompt, (list, tuple)):
        return "\n".join(_prompt_text(p) for p in prompt)
    return str(prompt)


def _task(value: Any) -> str:
    return str(value).strip().lower() if value is not None and str(value).strip() else DEFAULT_TASK


def _target_languages(df: pl.DataFrame) -> list[str]:
    """`language` where given, else the prompt's detected language (detected once per distinct prompt)."""
    cache: dict[str, str] = {}
    out = []
    for lang, prompt in zip(_column(df, "language"), _column(df, "prompt")):
        code = normalize_lang(lang)
        if code is None:
            text = _prompt_text(prompt)
            code = cache.get(text)
            if code is None:
                code = cache[text] = detect_language(text)
        out.append(code)
    return out


def score(df: pl.DataFrame) -> pl.DataFrame:
    """Add the score columns (see module doc). Rows are neither dropped nor reordered; scoring an
    already scored frame replaces the columns with the same values."""
    completions = [c if isinstance(c, str) else "" for c in _column(df, "completion")]
    tasks = [_task(t) for t in _column(df, "task")]
    targets = _target_languages(df)
    lang = [language_scores(c, t) for c, t in zip(completions, targets)]
    return df.with_columns(
        pl.Series("target_language", targets, dtype=pl.Utf8),
        pl.Series("think_format", [think_format(c, t) for c, t in zip(completions, tasks)], dtype=pl.Utf8),
        pl.Series(
            "truncated",
            [is_truncated(f, c) for f, c in zip(_column(df, "finish_reason"), completions)],
            dtype=pl.Boolean,
        ),
        pl.Series("target_lang_share", [s for s, _ in lang], dtype=pl.Float64),
        pl.Series("lang_switches", [n for _, n in lang], dtype=pl.Int64),
        pl.Series("max_paragraph_chars", [max_paragraph_chars(c) for c in completions], dtype=pl.Int64),
        pl.Series("completion_chars", [len(c) for c in completions], dtype=pl.Int64),
    )


def _as_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    text = str(value).strip().lower()
    return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text)


def _has_reference(answer: Any) -> bool:
    if answer is None:
        return False
    if isinstance(answer, str):
        return bool(answer.strip())
    if isinstance(answer, (list, tuple, dict)):
        return len(answer) > 0
    return True


def reject_reasons(df: pl.DataFrame, cfg: CurateConfig | None = None) -> pl.DataFrame:
    """Add `reject_reasons` (every reason that applies, in REASONS order) and `reject_reason`.

    Scores the frame first if its score columns are missing. Rules:
      truncated         cfg.reject_truncated and `truncated`
      bad_think_format  cfg.require_think, task "math" or "code" (default "math"), think_format set
      wrong_language    target_lang_share < min(cfg.wrong_language_share, cfg.min_target_lang_share),
                        for languages whose script is known (an "unknown" target cannot be wrong), and
                        the trace does not switch back and forth (that is mixing, whatever the share)
      language_mixing   lang_switches > cfg.max_lang_switches, or share below
                        cfg.min_target_lang_share but not wrong_language
    The two language reasons never apply together: a trace consistently in another language is
    wrong_language; one that alternates, or is only partly foreign, is language_mixing.
      long_paragraph    max_paragraph_chars > cfg.max_paragraph_chars
      too_long          completion_tokens > cfg.max_completion_tokens (when both are there)
      incorrect         cfg.reject_incorrect and `correct` is false
      unverifiable      cfg.reject_incorrect, `correct` is null and the row has a reference `answer`
    Without a `correct` column rows are taken as not verified: the last two rules are skipped.
    """
    cfg = cfg or CurateConfig()
    if any(c not in df.columns for c in SCORE_COLUMNS):
        df = score(df)
    n = df.height
    task = pl.Series([_task(t) for t in _column(df, "task")], dtype=pl.Utf8)
    share = pl.col("target_lang_share")
    switching = (
        pl.col("lang_switches") > cfg.max_lang_switches if cfg.max_lang_switches is not None else pl.lit(False)
    )
    wrong = (
        (share < min(cfg.wrong_language_share, cfg.min_target_lang_share))
        & pl.col("target_language").is_in(list(LANG_SCRIPTS))
        & ~switching
    )
    mixing = ((share < cfg.min_target_lang_share) & ~wrong) | switching

    rules: dict[str, pl.Expr] = {}
    if cfg.reject_truncated:
        rules["truncated"] = pl.col("truncated")
    if cfg.require_think:
        rules["bad_think_format"] = pl.lit(task).is_in(list(REASONING_TASKS)) & pl.col("think_format").is_not_null()
    rules["wrong_language"] = wrong
    rules["language_mixing"] = mixing
    rules["long_paragraph"] = pl.col("max_paragraph_chars") > cfg.max_paragraph_chars
    if cfg.max_completion_tokens is not None and "completion_tokens" in df.columns:
        rules["too_long"] = pl.col("completion_tokens").cast(pl.Int64, strict=False) > cfg.max_completion_tokens
    if cfg.reject_incorrect and "correct" in df.columns:
        correct = [_as_bool(v) for v in _column(df, "correct")]
        has_ref = [_has_reference(a) for a in _column(df, "answer")]
        rules["incorrect"] = pl.lit(pl.Series([c is False for c in correct], dtype=pl.Boolean))
        rules["unverifiable"] = pl.lit(
            pl.Series([c is None and r for c, r in zip(correct, has_ref)], dtype=pl.Boolean)
        )

    parts = [pl.when(rules[r]).then(pl.lit(r)).otherwise(pl.lit(None, dtype=pl.Utf8)) for r in REASONS if r in rules]
    if parts and n:
        reasons = pl.concat_list(parts).list.drop_nulls()
        out = df.with_columns(reasons.alias("reject_reasons"))
    else:
        out = df.with_columns(pl.Series("reject_reasons", [[] for _ in range(n)], dtype=pl.List(pl.Utf8)))
    return out.with_columns(pl.col("reject_reasons").list.first().alias("reject_reason"))


def _funnel(scored: pl.DataFrame, kept: pl.DataFrame, rejected: pl.DataFrame) -> dict[str, Any]:
    applied = Counter(r for rs in scored.get_column("reject_reasons").to_list() for r in rs)
    primary = Counter(r for r in scored.get_column("reject_reason").to_list() if r is not None)
    return {
        "rows_in": scored.height,
        "kept": kept.height,
        "rejected": rejected.height,
        "reasons": {r: applied.get(r, 0) for r in REASONS},
        "primary_reasons": {r: primary.get(r, 0) for r in REASONS},
    }


def curate(df: pl.DataFrame, cfg: CurateConfig | None = None) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Split traces into (kept, rejected, funnel). Both frames keep every input column plus the score
    and reason columns, in input order; kept + rejected are exactly the input rows."""
    scored = reject_reasons(df, cfg)
    is_kept = scored.get_column("reject_reason").is_null()
    kept = scored.filter(is_kept)
    rejected = scored.filter(~is_kept)
    return kept, rejected, _funnel(scored, kept, rejected)


def curate_file(
    input_path: str | Path, output_dir: str | Path, cfg: CurateConfig | None = None
) -> dict[str, Any]:
    """Curate a JSONL/parquet file of traces into `output_dir`/{kept.parquet, rejected.parquet,
    funnel.json} (each written atomically); return the funnel.

    Required columns: id, prompt, completion. Optional: answer, task (default "math"), language,
    finish_reason, correct, completion_tokens; any other column is carried through.
    """
    input_path = Path(input_path)
    df = read_table(input_path)
    for col in REQUIRED_COLUMNS:
        if col not in df.columns:
            raise ValueError(
                f"{input_path}: missing required column {col!r} (curate needs {', '.join(REQUIRED_COLUMNS)}; "
                f"found {', '.join(df.columns)})"
            )
    if "task" not in df.columns:
        df = df.with_columns(pl.lit(DEFAULT_TASK, dtype=pl.Utf8).alias("task"))
    elif df.schema["task"] in (pl.Utf8, pl.Null):
        df = df.with_columns(pl.col("task").cast(pl.Utf8).fill_null(DEFAULT_TASK))
    kept, rejected, funnel = curate(df, cfg)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(kept, out / "kept.parquet")
    write_parquet(rejected, out / "rejected.parquet")
    write_json(out / "funnel.json", funnel)
    return funnel
