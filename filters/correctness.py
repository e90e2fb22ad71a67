"""The correctness measure: the verifier's verdict (`correct`, from distill/verify) as reject reasons.

It adds no score column: `incorrect` when `correct` is false; `unverifiable` when `correct` is null
and the row has a reference `answer` to check against. Both only with cfg.reject_incorrect and a
`correct` column (without one, rows are taken as not verified and neither reason applies).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from distill.config.curate import CurateConfig
from filters.measure import Measure, column


def as_bool(value: Any) -> bool | None:
    """A verdict as True, False or None (unknown): bools, numbers and "true"/"1"/"yes"-style strings."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    text = str(value).strip().lower()
    return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text)


def has_reference(answer: Any) -> bool:
    if answer is None:
        return False
    if isinstance(answer, str):
        return bool(answer.strip())
    if isinstance(answer, (list, tuple, dict)):
        return len(answer) > 0
    return True


class Correctness(Measure):
    name = "correctness"
    reasons = ("incorrect", "unverifiable")

    @classmethod
    def reject(cls, df: pl.DataFrame, cfg: CurateConfig) -> dict[str, pl.Expr]:
        if not cfg.reject_incorrect or "correct" not in df.columns:
            return {}
        correct = [as_bool(v) for v in column(df, "correct")]
        has_ref = [has_reference(a) for a in column(df, "answer")]
        return {
            "incorrect": pl.lit(pl.Series([c is False for c in correct], dtype=pl.Boolean)),
            "unverifiable": pl.lit(pl.Series([c is None and r for c, r in zip(correct, has_ref)], dtype=pl.Boolean)),
        }
