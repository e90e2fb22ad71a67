"""The SFT-length measure: traces the students' SFT would cut.

SFT truncates every row at the student's `max_length` (TRL's SFTConfig): a trace longer than that loses
its end, which is its answer and the EOS that ends the turn, and the student learns to stop mid-thought.
Curation's own limit (`max_completion_tokens`, R1's 32,768) is the teacher's; this measure compares each
trace with the SFT's: `too_long_for_sft` when the row SFT would see, `sft_tokens` = prompt tokens + completion
tokens + TEMPLATE_TOKENS, exceeds `cfg.max_sft_tokens`. The curate stage sets that to the smallest
`students[].training_args.max_length` (distill.config.curate.with_sft_length); None (no students, or
`distill curate` on its own) turns the check off.

Counts are the teacher's (`prompt_tokens`, `completion_tokens` from sampling, the prompt as the teacher's
template rendered it), else UTF-8 bytes / 4; the student's tokenizer may differ by a few percent, which
the merge's exact, student-tokenized `merge.max_tokens` catches when set.
"""

from __future__ import annotations

import polars as pl

from distill.config.curate import CurateConfig
from filters.measure import Batch, Measure

TEMPLATE_TOKENS = 16  # the student's role markers, a prefilled `<think>\n` and the closing EOS


def _tokens(batch: Batch, column: str, text: pl.Series) -> pl.Series:
    estimate = (text.str.len_bytes().cast(pl.Int64) + 3) // 4
    if column in batch.df.columns:
        return batch.df.get_column(column).cast(pl.Int64, strict=False).fill_null(estimate)
    return estimate


class SFTLength(Measure):
    name = "sft_length"
    columns = {"sft_tokens": pl.Int64}
    reasons = ("too_long_for_sft",)

    def score(self, batch: Batch) -> dict[str, pl.Series]:
        prompt = _tokens(batch, "prompt_tokens", batch.prompt_series)
        completion = _tokens(batch, "completion_tokens", batch.completion_series)
        return {"sft_tokens": (prompt + completion + TEMPLATE_TOKENS).cast(pl.Int64).alias("sft_tokens")}

    @classmethod
    def reject(cls, df: pl.DataFrame, cfg: CurateConfig) -> dict[str, pl.Expr]:
        if cfg.max_sft_tokens is None:
            return {}
        return {"too_long_for_sft": pl.col("sft_tokens") > cfg.max_sft_tokens}
