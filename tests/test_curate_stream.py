"""Streaming `curate_file` (filters/streaming.py): same results as in memory, whatever the batch size or
the number of worker processes; shards with different schemas; the funnel's per-measure and per-source
counts."""

from __future__ import annotations

import json

import polars as pl
import pytest

from distill.config.curate import CurateConfig
from filters.curate import MEASURES, REASONS, curate, curate_file

GOOD = "<think>\nWe add {a} and {b} to get {c}. Checking: {c} minus {b} is {a}, so the sum is right.\n</think>\n\nThe answer is $\\boxed{{{c}}}$."


def traces(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        a, b = i, 2 * i + 1
        completion = GOOD.format(a=a, b=b, c=a + b)
        kind = i % 7
        if kind == 1:
            completion = completion.replace("<think>\n", "").replace("</think>", "")  # bad format
        elif kind == 2:
            completion = completion[:40]  # truncated
        elif kind == 3:
            completion = completion.replace("We add", "我们再检查一遍。We add")  # mixing
        rows.append(
            {
                "id": f"r{i}", "prompt_id": f"p{i // 2}", "prompt": f"What is {a // 2 * 2} + {b}? (problem {i // 2})",
                "completion": completion, "answer": str(a + b), "language": "en", "correct": i % 5 != 0,
                "finish_reason": "length" if kind == 2 else "stop", "source": ["alpha", "beta"][i % 2],
            }
        )  # fmt: skip
    return rows


CFG = CurateConfig()


@pytest.fixture(scope="module")
def expected() -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    return curate(pl.DataFrame(traces(40)), CFG)


def _check_same(out, expected):
    kept, rejected = pl.read_parquet(out / "kept.parquet"), pl.read_parquet(out / "rejected.parquet")
    e_kept, e_rej, e_funnel = expected
    assert kept["id"].to_list() == e_kept["id"].to_list()
    assert rejected["id"].to_list() == e_rej["id"].to_list()
    assert rejected["reject_reasons"].to_list() == e_rej["reject_reasons"].to_list()
    assert [c for c in kept.columns if c != "task"] == e_kept.columns  # curate_file fills in `task`
    funnel = json.loads((out / "funnel.json").read_text())
    for key in ("rows_in", "kept", "rejected", "reasons", "primary_reasons", "measures", "by_source", "dedup"):
        assert funnel[key] == e_funnel[key], key
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["funnel.json", "kept.parquet", "rejected.parquet"]
    # and the run they come from (filters/output_set.py): no spill or temporary directory is left
    hidden = {p.name for p in out.iterdir() if p.name.startswith(".")}
    assert hidden == {".curate-current", ".curate-lock", (out / ".curate-current").readlink().name}


@pytest.mark.parametrize("batch_rows", [3, 16, 1000])
def test_batches_do_not_change_results(tmp_path, expected, batch_rows):
    src = tmp_path / "in.parquet"
    pl.DataFrame(traces(40)).write_parquet(src, row_group_size=7)
    curate_file(src, tmp_path / "out", CFG, batch_rows=batch_rows, workers=0)
    _check_same(tmp_path / "out", expected)


def test_worker_processes_give_the_same_results(tmp_path, expected):
    src = tmp_path / "in.parquet"
    pl.DataFrame(traces(40)).write_parquet(src)
    funnel = curate_file(src, tmp_path / "out", CFG, batch_rows=8, workers=2)
    assert funnel["timing"]["workers"] == 2
    _check_same(tmp_path / "out", expected)


def test_shards_with_different_schemas(tmp_path):
    rows = traces(12)
    shards = tmp_path / "shards"
    shards.mkdir()
    pl.DataFrame(rows[:6]).write_parquet(shards / "part-0.parquet")
    second = pl.DataFrame(rows[6:]).drop("source").with_columns(pl.lit(None).alias("correct"), pl.lit(1).alias("extra"))
    second.write_parquet(shards / "part-1.parquet")
    funnel = curate_file(shards, tmp_path / "out", CFG, batch_rows=4, workers=0)
    assert funnel["rows_in"] == 12
    out = pl.concat([pl.read_parquet(tmp_path / "out" / n) for n in ("kept.parquet", "rejected.parquet")], how="diagonal_relaxed")
    assert out.height == 12 and "extra" in out.columns and out.schema["correct"] == pl.Boolean
    assert set(funnel["by_source"]) == {"alpha", "beta", "(none)"}


def test_funnel_steps_and_sources(expected):
    _, _, funnel = expected
    steps = funnel["measures"]
    assert [s["measure"] for s in steps] == list(MEASURES)
    assert steps[0]["rows_in"] == funnel["rows_in"] and steps[-1]["rows_out"] == funnel["kept"]
    for a, b in zip(steps, steps[1:]):
        assert a["rows_out"] == b["rows_in"]
    assert sum(s["dropped"] for s in steps) == funnel["rejected"]
    assert [r for m in MEASURES.values() for r in m] == REASONS
    by = funnel["by_source"]
    assert set(by) == {"alpha", "beta"}
    assert sum(s["rows_in"] for s in by.values()) == funnel["rows_in"]
    assert sum(s["kept"] for s in by.values()) == funnel["kept"]
    for reason in ("language_mixing", "truncated", "bad_think_format", "incorrect"):
        assert funnel["primary_reasons"][reason] > 0, reason
    assert set(funnel["timing"]["measures"]) >= {"format", "language", "repetition", "chaos", "dedup"}
    assert funnel["thresholds"]["max_paragraph_chars"] == CFG.max_paragraph_chars


def test_recurating_a_curated_file_replaces_the_columns(tmp_path, expected):
    first = tmp_path / "first"
    src = tmp_path / "in.parquet"
    pl.DataFrame(traces(40)).write_parquet(src)
    curate_file(src, first, CFG, workers=0)
    both = pl.concat([pl.read_parquet(first / "kept.parquet"), pl.read_parquet(first / "rejected.parquet")])
    both.write_parquet(tmp_path / "again.parquet")
    funnel = curate_file(tmp_path / "again.parquet", tmp_path / "second", CFG, workers=0)
    assert funnel["kept"] == expected[2]["kept"]


def test_empty_input_writes_empty_files(tmp_path):
    src = tmp_path / "empty.parquet"
    pl.DataFrame(traces(2)).clear().write_parquet(src)
    funnel = curate_file(src, tmp_path / "out", CFG)
    assert funnel["rows_in"] == 0
    assert pl.read_parquet(tmp_path / "out" / "kept.parquet").height == 0
