"""What one curation measure is: the score columns it adds and the reject reasons they give.

Score first, threshold later (as in data-juicer and datatrove): a measure's `score` reads a `Batch`
and returns its score columns, never dropping or reordering rows; its `reject` turns a scored frame
and a `CurateConfig` into one boolean expression per reject reason. The ordered list of measures
(filters/registry.py) drives scoring (filters/scoring.py), the reasons and their precedence, and the
funnel (filters/funnel.py).

A new measure is one class (its module: columns, reasons, score, reject), one line in
filters/registry.py, and its thresholds in `CurateConfig` (distill/config/curate.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any, ClassVar

import polars as pl
from polars.datatypes import DataType

from distill.config.curate import CurateConfig

DEFAULT_TASK = "math"


def column(df: pl.DataFrame, name: str) -> list[Any]:
    """A column as a list; None for every row when the frame has no such column."""
    return df.get_column(name).to_list() if name in df.columns else [None] * df.height


def task_of(value: Any) -> str:
    """A row's `task`, lower case; DEFAULT_TASK when missing or blank."""
    return str(value).strip().lower() if value is not None and str(value).strip() else DEFAULT_TASK


def tasks_of(df: pl.DataFrame) -> list[str]:
    return [task_of(t) for t in column(df, "task")]


def prompt_text(prompt: Any) -> str:
    """A prompt as text; chat-style prompts (a list of {"role", "content"} messages) are joined."""
    if prompt is None:
        return ""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, dict):
        return prompt_text(prompt.get("content"))
    if isinstance(prompt, (list, tuple)):
        return "\n".join(prompt_text(p) for p in prompt)
    return str(prompt)


def prompt_series(df: pl.DataFrame) -> pl.Series:
    """The `prompt` column as text (nulls as "")."""
    col = df.get_column("prompt")
    if col.dtype == pl.Utf8:
        return col.fill_null("")
    return pl.Series("prompt", [prompt_text(p) for p in col.to_list()], dtype=pl.Utf8)


class Batch:
    """One batch of input rows as the measures read it; each view is computed once, when first asked for."""

    def __init__(self, df: pl.DataFrame) -> None:
        self.df = df

    @property
    def height(self) -> int:
        return self.df.height

    def column(self, name: str) -> list[Any]:
        return column(self.df, name)

    @cached_property
    def completions(self) -> list[str]:
        """Completions as Python strings (anything else as "")."""
        return [c if isinstance(c, str) else "" for c in self.column("completion")]

    @cached_property
    def completion_series(self) -> pl.Series:
        """Completions as a Utf8 series (nulls as "")."""
        return self.df.get_column("completion").cast(pl.Utf8).fill_null("")

    @cached_property
    def prompt_series(self) -> pl.Series:
        return prompt_series(self.df)

    @cached_property
    def prompts(self) -> list[str]:
        return self.prompt_series.to_list()

    @cached_property
    def tasks(self) -> list[str]:
        return tasks_of(self.df)


class Measure:
    """One curation measure. Subclasses set `name`, `columns` (score column -> polars dtype, in output
    order) and `reasons` (reject reasons, in precedence order), and override `score` and `reject`.

    `load` fetches what the measure reads from outside (benchmark files, the Hub) once per run, in the
    parent process; its result is given to `__init__` in every worker process as is (so it must pickle).
    """

    name: ClassVar[str] = ""
    columns: ClassVar[Mapping[str, DataType | type[DataType]]] = {}
    reasons: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def load(cls, cfg: CurateConfig) -> Any:
        return None

    def __init__(self, cfg: CurateConfig, loaded: Any = None) -> None:
        self.cfg = cfg

    def score(self, batch: Batch) -> dict[str, pl.Series]:
        """Every column of `columns` for the batch's rows, in row order."""
        return {}

    @classmethod
    def reject(cls, df: pl.DataFrame, cfg: CurateConfig) -> dict[str, pl.Expr]:
        """Boolean expressions over a scored frame, one per reason of `reasons` that is switched on."""
        return {}
