"""Sampling rounds that append to a dataset (distill/rounds.py)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from distill.config.recipe import recipe_from_dict
from distill.rounds import LEDGER, append_round, committed_rounds, dataset_rows, round_recipe, run_round


def test_round_recipe_moves_seeds_and_freezes_the_teacher():
    r = recipe_from_dict({"name": "x", "seed": 0, "prompts": {"seed": 5}, "sampling": {"seed": 7}})
    r3 = round_recipe(r, 3, "/models/teacher")
    assert (r3.prompts.seed, r3.sampling.seed) == (8, 10)
    assert r3.teacher.enabled is False and r3.teacher.model == "/models/teacher"
    assert r.prompts.seed == 5 and r.teacher.enabled  # the base recipe is untouched


def test_append_skips_rows_already_in_the_dataset_and_commits_with_a_ledger_line(tmp_path):
    a = pl.DataFrame({"id": ["a", "b"], "completion": ["1", "2"]})
    b = pl.DataFrame({"id": ["b", "c"], "completion": ["2", "3"]})
    first = append_round(tmp_path, 0, a, {})
    second = append_round(tmp_path, 1, b, {})
    assert (first["rows"], second["rows"], second["duplicates_skipped"]) == (2, 1, 1)
    assert [r["round"] for r in committed_rounds(tmp_path)] == [0, 1]
    assert sorted(dataset_rows(tmp_path)["id"]) == ["a", "b", "c"]
    # a parquet without its ledger line (a crash between the two) is not part of the dataset
    pl.DataFrame({"id": ["z"], "completion": ["9"]}).write_parquet(tmp_path / "data" / "round-00002.parquet")
    assert sorted(dataset_rows(tmp_path)["id"]) == ["a", "b", "c"]
    (tmp_path / LEDGER).write_text((tmp_path / LEDGER).read_text() + "{not json\n")
    with pytest.raises(ValueError, match=r"rounds.jsonl: line 3"):
        committed_rounds(tmp_path)


@pytest.mark.slow
def test_two_rounds_grow_the_dataset_from_one_teacher(tiny_llama, tmp_path):
    from test_pipeline import tiny_recipe

    raw = tiny_recipe(tiny_llama, tmp_path / "run")
    raw["teacher"]["enabled"] = False
    raw["prompts"]["n_train"] = 4
    # a random model writes symbol noise: let it through, this test is about rounds, not curation
    raw["curate"] |= {"max_mojibake": 10**6, "max_markup_debris": 10**6, "max_special_tokens": 10**6, "max_symbol_soup": 10**6,
                      "min_sentence_frac": 0.0, "reject_unbalanced_fences": False}
    recipe = recipe_from_dict(raw)
    ds = tmp_path / "dataset"
    r0 = run_round(recipe, ds, tmp_path / "rounds")
    r1 = run_round(recipe, ds, tmp_path / "rounds")
    assert (r0["round"], r1["round"]) == (0, 1)
    assert (r0["prompts_seed"], r1["prompts_seed"]) == (recipe.prompts.seed, recipe.prompts.seed + 1)
    assert r0["teacher"] == r1["teacher"]  # one teacher for every round
    rows = dataset_rows(ds)
    assert rows.height == r0["rows"] + r1["rows"] and rows["id"].n_unique() == rows.height
    assert r0["rows"] == r0["accepted"] > 0
    lines = [json.loads(x) for x in (ds / LEDGER).read_text().splitlines()]
    assert [x["file"] for x in lines] == ["data/round-00000.parquet", "data/round-00001.parquet"]
    # the second round sampled other prompts
    p0 = set(pl.read_parquet(tmp_path / "rounds" / "round-00000" / "prompts" / "train.parquet")["prompt_id"])
    p1 = set(pl.read_parquet(tmp_path / "rounds" / "round-00001" / "prompts" / "train.parquet")["prompt_id"])
    assert p0 != p1
