"""The measure protocol (filters/measure.py) and the registry (filters/registry.py): every registered
measure keeps its contract, and the registry gives the reasons in their fixed precedence."""

from __future__ import annotations

import polars as pl
import pytest

from distill.config.curate import CurateConfig
from filters.dedup import Dedup
from filters.measure import Batch, Measure
from filters.registry import MEASURE_TYPES, MEASURES, REASONS, SCORE_COLUMNS
from filters.scoring import Scorer, rules

# The primary-reason precedence curation has always had; a change here changes which reason a row reports.
PRECEDENCE = [
    "contaminated", "truncated", "bad_think_format", "wrong_language", "language_mixing", "repetition", "chaotic",
    "long_paragraph", "too_long", "too_short", "too_long_for_sft", "incorrect", "unverifiable", "duplicate", "near_duplicate",
]  # fmt: skip

ROWS = pl.DataFrame(
    {
        "id": ["a", "b", "c"],
        "prompt": ["What is 2 + 2?", "求 3 乘以 4。", None],
        "completion": ["<think>2 + 2 = 4.</think>The answer is 4.", "<think>3 × 4 = 12。</think>答案是 12。", None],
        "task": ["math", None, "general"],
        "finish_reason": ["stop", "length", None],
        "correct": [True, False, None],
        "answer": ["4", "12", None],
    }
)


def test_registry_gives_the_reasons_in_precedence_order():
    assert REASONS == PRECEDENCE
    assert [r for reasons in MEASURES.values() for r in reasons] == REASONS
    assert list(MEASURES) == [m.name for m in MEASURE_TYPES]
    assert MEASURE_TYPES[-1] is Dedup  # dedup decides over every row, after the others
    assert SCORE_COLUMNS == tuple(c for m in MEASURE_TYPES for c in m.columns)


@pytest.mark.parametrize("kind", MEASURE_TYPES, ids=lambda m: m.name)
def test_every_measure_keeps_the_contract(kind: type[Measure]):
    assert issubclass(kind, Measure) and kind.name and kind.reasons
    measure = kind(CurateConfig())
    for df in (ROWS, ROWS.clear()):
        got = measure.score(Batch(df))
        assert set(got) == set(kind.columns)
        for name, dtype in kind.columns.items():
            assert len(got[name]) == df.height
            assert got[name].dtype == dtype, (kind.name, name)


def test_rules_name_only_registered_reasons_and_switches_turn_them_off():
    scored = Scorer().score(ROWS)
    # too_long_for_sft is off until the curate stage gives the students' SFT length
    assert set(rules(scored, CurateConfig())) == set(REASONS) - {"duplicate", "near_duplicate", "too_short", "too_long_for_sft"}
    off = CurateConfig(reject_truncated=False, require_think=False, reject_incorrect=False, max_completion_tokens=None)
    assert set(rules(scored, off)) == set(REASONS) - {
        "truncated", "bad_think_format", "incorrect", "unverifiable", "too_long", "too_short", "too_long_for_sft", "duplicate",
        "near_duplicate",
    }  # fmt: skip
    for kind in MEASURE_TYPES:
        assert set(kind.reject(scored, CurateConfig())) <= set(kind.reasons)


def test_scorer_times_each_measure_with_score_columns():
    scorer = Scorer()
    scored = scorer.score(ROWS)
    assert scored.columns == ROWS.columns + list(SCORE_COLUMNS)
    assert set(scorer.timings.seconds) == {m.name for m in MEASURE_TYPES if m.columns}
