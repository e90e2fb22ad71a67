"""The curation measures, in precedence order: the one list that drives scoring, the rules, the funnel
and the report's reasons.

A row's `reject_reason` is the first reason that applies, in this order (each measure lists its own
reasons in its order); the funnel's steps (filters/funnel.py) follow it too. A new measure is a
`Measure` subclass in its module (filters/measure.py) and one entry here, before `Dedup`, which decides
over every row at once and so comes last.
"""

from __future__ import annotations

from filters.chaos import Chaos
from filters.correctness import Correctness
from filters.decontam import Decontam
from filters.dedup import Dedup
from filters.language import Language
from filters.measure import Measure
from filters.readability import Format, Readability
from filters.repetition import Repetition
from filters.sft_length import SFTLength

MEASURE_TYPES: tuple[type[Measure], ...] = (
    Decontam,
    Format,
    Language,
    Repetition,
    Chaos,
    Readability,
    SFTLength,
    Correctness,
    Dedup,
)
# Which measure gives which reasons, in precedence order (the funnel's steps).
MEASURES: dict[str, tuple[str, ...]] = {m.name: m.reasons for m in MEASURE_TYPES}
# Primary-reason precedence: a row's `reject_reason` is the first of these that applies.
REASONS: list[str] = [r for m in MEASURE_TYPES for r in m.reasons]
# Columns added by scoring, measure by measure.
SCORE_COLUMNS: tuple[str, ...] = tuple(c for m in MEASURE_TYPES for c in m.columns)

assert MEASURE_TYPES[-1] is Dedup, "dedup decides over all rows after every other measure: keep it last"
assert len(set(REASONS)) == len(REASONS) and len(set(SCORE_COLUMNS)) == len(SCORE_COLUMNS)
