"""Prompt deduplication (filters/dedup.py): exact and near duplicates, which rows a cluster keeps."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from distill.config.curate import CurateConfig, DedupConfig
from distill.config.base import RecipeError
from distill.config.recipe import recipe_from_dict
from filters.curate import reject_reasons
from filters.dedup import connected_components
from filters.minhash import MinHasher, normalize_expr

BASE = "A rectangular garden is 24 metres long and 15 metres wide. A path of width 2 metres runs around the outside of the garden. What is the area of the path?"
GOOD = "<think>\nThe outer rectangle is 28 by 19, so its area is 532. The garden is 360. The path is 532 - 360 = 172.\n</think>\n\nThe area is $\\boxed{172}$."


def row(id, prompt=BASE, completion=GOOD, prompt_id=None, correct=True, **extra):
    return {"id": id, "prompt_id": prompt_id or id, "prompt": prompt, "completion": completion, "answer": "172", "correct": correct, "language": "en", **extra}


def judge(rows, **dedup):
    return reject_reasons(pl.DataFrame(rows), CurateConfig(dedup=dedup) if dedup else CurateConfig())


def reasons(df):
    return dict(zip(df["id"], df["reject_reason"]))


def test_signatures_estimate_jaccard():
    h = MinHasher(num_perm=120, bands=20, shingle=3, seed=0)
    texts = pl.select(normalize_expr(pl.Series([BASE, BASE.upper(), BASE.replace("garden", "yard", 1), "Something else entirely, with no words in common."]))).to_series()
    sig = h.signatures(texts)
    sim = lambda i, j: (sig[i] == sig[j]).mean()  # noqa: E731
    assert sim(0, 1) == 1.0  # normalisation: case does not matter
    assert 0.7 < sim(0, 2) < 1.0  # one word changed
    assert sim(0, 3) < 0.1
    keys = h.band_keys(sig)
    assert keys.shape == (20, 4) and (keys[:, 0] == keys[:, 1]).all()


def test_short_texts_and_empty_get_signatures():
    h = MinHasher(num_perm=24, bands=4, shingle=3, seed=0)
    sig = h.signatures(pl.Series(["", "hi", "two words", "three words here"]))
    assert sig.shape == (4, 24)
    assert not (sig[1] == sig[2]).all()


def test_components_union_find():
    labels = connected_components(6, np.array([0, 1, 4]), np.array([1, 2, 5]))
    assert labels.tolist() == [0, 0, 0, 3, 4, 4]
    assert connected_components(3, np.array([], dtype=np.int64), np.array([], dtype=np.int64)).tolist() == [0, 1, 2]


def test_samples_of_one_prompt_are_not_duplicates():
    rows = [row(f"s{i}", prompt_id="p", completion=GOOD + " " * i + f" (sample {i})") for i in range(4)]
    assert set(reasons(judge(rows)).values()) == {None}


def test_exact_duplicate_prompt_keeps_best_samples():
    # Two prompt ids, same text (modulo case and spaces): the cluster keeps 2 rows (its largest prompt
    # group), preferring correct ones, then the shortest.
    rows = [
        row("a1", prompt_id="a", completion=GOOD + " long long long"),
        row("a2", prompt_id="a", completion=GOOD, correct=False),
        row("b1", prompt=BASE.upper().replace(" ", "  "), prompt_id="b", completion=GOOD + " x"),
        row("b2", prompt=BASE.upper(), prompt_id="b", completion=GOOD + " xx"),
    ]
    got = judge(rows)
    assert reasons(got) == {"a1": "duplicate", "a2": "incorrect", "b1": None, "b2": None}
    by_id = {r["id"]: r for r in got.iter_rows(named=True)}
    assert by_id["a2"]["reject_reasons"] == ["incorrect", "duplicate"]
    assert by_id["a1"]["duplicate_of"] == "b1"
    assert by_id["b1"]["duplicate_of"] is None
    assert by_id["a1"]["dup_cluster"] == by_id["b2"]["dup_cluster"]
    assert by_id["a1"]["dup_cluster_prompts"] == 1  # one distinct normalised prompt


def test_near_duplicate_prompt():
    near = BASE.replace("What is the area of the path?", "What is the area of this path?")
    rows = [row("a", prompt_id="a"), row("b", prompt=near, prompt_id="b", completion=GOOD + " (checked)")]
    got = judge(rows)
    assert reasons(got) == {"a": None, "b": "near_duplicate"}
    assert got["dup_cluster_prompts"].to_list() == [2, 2]
    assert reasons(judge(rows, near_duplicates=False)) == {"a": None, "b": None}
    assert reasons(judge(rows, enabled=False)) == {"a": None, "b": None}


def test_same_words_other_numbers_are_different_problems():
    other = BASE.replace("24 metres", "26 metres")
    rows = [row("a"), row("b", prompt=other)]
    assert reasons(judge(rows)) == {"a": None, "b": None}
    assert reasons(judge(rows, same_numbers=False)) == {"a": None, "b": "near_duplicate"}


def test_identical_completions_of_one_prompt():
    rows = [row("a", prompt_id="p"), row("b", prompt_id="p"), row("c", prompt_id="p", completion=GOOD + " Yes.")]
    assert reasons(judge(rows)) == {"a": None, "b": "duplicate", "c": None}
    assert reasons(judge(rows, completions=False)) == {"a": None, "b": None, "c": None}


def test_samples_per_prompt_caps_every_cluster():
    rows = [row(f"s{i}", prompt_id="p", completion=GOOD + "!" * i) for i in range(4)]
    got = reasons(judge(rows, samples_per_prompt=2))
    assert got == {"s0": None, "s1": None, "s2": "duplicate", "s3": "duplicate"}  # shortest first


def test_rejected_rows_rank_last():
    rows = [row("a", prompt_id="a", completion="No think block at all."), row("b", prompt_id="b", completion=GOOD + " longer")]
    got = judge(rows)
    assert reasons(got) == {"a": "bad_think_format", "b": None}
    assert got.filter(pl.col("id") == "a")["reject_reasons"].to_list() == [["bad_think_format", "duplicate"]]


def test_without_prompt_id_identical_prompts_are_one_prompt():
    rows = [{k: v for k, v in row(f"s{i}", completion=GOOD + "?" * i).items() if k != "prompt_id"} for i in range(3)]
    assert set(reasons(judge(rows)).values()) == {None}


def test_config_validates():
    assert DedupConfig().num_perm % DedupConfig().bands == 0
    with pytest.raises(RecipeError, match="multiple of bands"):
        recipe_from_dict({"name": "x", "curate": {"dedup": {"num_perm": 100, "bands": 16}}})
    with pytest.raises(RecipeError):
        recipe_from_dict({"name": "x", "curate": {"dedup": {"treshold": 0.5}}})
