"""Data defects at production scale: traces longer than the students' SFT length are dropped in curation
with a reason (not cut by SFT), and the non-reasoning mix upsamples a source at most merge.max_repeat times."""

import json
from pathlib import Path

import polars as pl
import pytest

from distill.config.curate import CurateConfig, with_sft_length
from distill.config.merge import MergeConfig
from distill.config.recipe import load_recipe, recipe_from_dict
from distill.core.run import Run
from distill.mix.merge import build_sft_set, mix_by_tokens
from distill.stage_fns import curate_stage
from filters.curate import curate

ROOT = Path(__file__).resolve().parents[1]


def traces(lengths: list[int]) -> pl.DataFrame:
    n = len(lengths)
    return pl.DataFrame({
        "id": [f"t{i}" for i in range(n)], "prompt_id": [f"p{i}" for i in range(n)],
        "prompt": [f"What is {i} + {i}?" for i in range(n)],
        "completion": [f"<think>\n{i} + {i} = {2 * i}, and the sum of {i} with itself is {2 * i}.\n</think>\n\nThe answer is \\boxed{{{2 * i}}}."
                       for i in range(n)],
        "answer": [str(2 * i) for i in range(n)], "correct": [True] * n, "finish_reason": ["stop"] * n,
        "prompt_tokens": [120] * n, "completion_tokens": lengths,
    })


def test_traces_longer_than_the_sft_length_are_dropped_with_a_reason():
    df = traces([1_000, 16_000, 16_300, 20_000, 32_000])
    cfg = with_sft_length(CurateConfig(max_paragraph_chars=10_000), [16_384, 32_768])
    assert cfg.max_sft_tokens == 16_384  # the smallest student decides
    kept, rejected, funnel = curate(df, cfg)
    # 120 prompt + completion + 16 template tokens against 16,384: the 16,300-token trace would lose its end
    assert kept["id"].to_list() == ["t0", "t1"]
    assert rejected["reject_reason"].to_list() == ["too_long_for_sft"] * 3
    assert funnel["primary_reasons"]["too_long_for_sft"] == 3
    step = next(m for m in funnel["measures"] if m["measure"] == "sft_length")
    assert step["dropped"] == 3
    # the curation limit of its own (R1's 32,768) keeps its reason first
    kept, rejected, _ = curate(df, cfg.model_copy(update={"max_completion_tokens": 25_000}))
    assert rejected["reject_reason"].to_list() == ["too_long_for_sft", "too_long_for_sft", "too_long"]
    # off without students, and the default leaves the dump (the stage hashes) alone
    assert with_sft_length(CurateConfig(), []).max_sft_tokens is None
    assert "max_sft_tokens" not in CurateConfig().model_dump()
    assert with_sft_length(CurateConfig(max_sft_tokens=9_000), [16_384]).max_sft_tokens == 9_000


def test_the_curate_stage_passes_the_students_length(tmp_path):
    # an R1 recipe: curation's own limit is 32,768 tokens, the student trains at 16,384
    recipe = load_recipe(ROOT / "recipes" / "r1-distill-qwen2.5-math-7b.yaml", ["curate.max_paragraph_chars=10000"])
    assert recipe.curate.max_completion_tokens == 32_768 and recipe.students[0].training_args["max_length"] == 16_384
    (tmp_path / "verified").mkdir()
    traces([2_000, 20_000, 30_000]).write_parquet(tmp_path / "verified" / "traces.parquet")
    m = curate_stage(Run(recipe, tmp_path), {"fingerprint": "verify"})
    assert m["rows_out"] == 1 and m["funnel"]["primary_reasons"]["too_long_for_sft"] == 2
    assert m["settings"]["max_sft_tokens"] == 16_384
    assert pl.read_parquet(tmp_path / "curated" / "kept.parquet")["id"].to_list() == ["t0"]
    # a student with a longer max_length is a different curation
    longer = load_recipe(ROOT / "recipes" / "r1-distill-qwen2.5-math-7b.yaml",
                         ["curate.max_paragraph_chars=10000", "students.0.training_args.max_length=32768"])
    m2 = curate_stage(Run(longer, tmp_path), {"fingerprint": "verify"})
    assert m2["fingerprint"] != m["fingerprint"] and m2["rows_out"] == 3


def rows(kind: str, n: int, tokens: int, category: str) -> list[dict]:
    return [{"id": f"{kind}{i}", "kind": kind, "category": category, "source": f"{kind}.jsonl", "tokens": tokens} for i in range(n)]


def test_upsampling_is_capped_and_the_shortfall_reported():
    # production shape: 600 traces of 6,000 tokens against the 48 bundled rows of ~20 tokens
    data = rows("reasoning", 600, 6_000, "math") + rows("non_reasoning", 48, 20, "writing")
    uncapped, _, _ = mix_by_tokens(data, non_reasoning_fraction=0.25)
    assert sum(r["kind"] == "non_reasoning" for r in uncapped) > 100 * 48  # each bundled row repeated ~1,250 times
    chosen, _, mix = mix_by_tokens(data, non_reasoning_fraction=0.25, max_repeat=4)
    nr = [r for r in chosen if r["kind"] == "non_reasoning"]
    assert len(nr) == 4 * 48 and max(r["copy"] for r in nr) == 3
    target = 600 * 6_000 / 3
    assert mix["max_repeat"] == 4 and mix["shortfall_tokens"] == pytest.approx(target - 4 * 48 * 20)
    (row,) = [t for t in mix["table"] if t["kind"] == "non_reasoning"]
    assert row["factor"] == 4 and row["shortfall_tokens"] == pytest.approx(target - 3_840)
    assert mix["non_reasoning_fraction"]["actual"] < 0.01
    assert any("capped at 4x" in w and "merge.max_repeat" in w for w in mix["warnings"])
    # under the cap nothing changes
    small = rows("reasoning", 10, 100, "math") + rows("non_reasoning", 10, 20, "writing")
    assert mix_by_tokens(small, non_reasoning_fraction=0.25, max_repeat=4)[0] == mix_by_tokens(small, non_reasoning_fraction=0.25)[0]


def test_the_merge_applies_the_recipe_cap(tmp_path):
    assert MergeConfig().max_repeat == 4 and "max_repeat" not in MergeConfig().model_dump()
    assert MergeConfig(max_repeat=None).model_dump()["max_repeat"] is None
    src = tmp_path / "nr.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"Say hi {i}", "response": "Hi!", "category": "writing"}) + "\n" for i in range(3)))
    kept = pl.DataFrame({"id": [f"t{i}" for i in range(20)], "prompt": ["What is 1 + 1?"] * 20,
                         "completion": ["<think>\n" + "one plus one is two. " * 50 + "\n</think>\n\n\\boxed{2}"] * 20})
    cfg = recipe_from_dict({"name": "x", "merge": {"non_reasoning": [{"path": str(src)}], "think": "absent"}}).merge
    res = build_sft_set(kept, cfg)
    assert res.mix["non_reasoning_rows"] == 3 * 4 and res.mix["shortfall_tokens"] > 0
    res = build_sft_set(kept, cfg.model_copy(update={"max_repeat": None}))
    assert res.mix["non_reasoning_rows"] > 3 * 4 and res.mix["shortfall_tokens"] == 0
