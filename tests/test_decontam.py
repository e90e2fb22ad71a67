"""Decontamination (filters/decontam.py): n-gram overlap of prompts and responses with benchmark files."""

from __future__ import annotations

import json

import polars as pl
import pytest

from distill.config.curate import CurateConfig
from distill.config.base import RecipeError
from distill.config.recipe import recipe_from_dict
from filters.curate import curate
from filters.decontam import ContaminationIndex, load_items
from filters.ngrams import tokenize

AIME = [
    {"problem": "Find the number of ordered pairs of positive integers (m, n) such that m^2 n = 20^20.", "answer": "231", "split": "test"},
    {"problem": "Let N be the greatest four-digit positive integer with the property that whenever one of its digits is changed to 1, the resulting number is divisible by 7.", "answer": "5694", "split": "test"},
    {"problem": "This item is in the train split and must be ignored by the test split.", "answer": "0", "split": "train"},
]
GPQA = [{"question": "Which of the following molecules has a trigonal pyramidal geometry according to VSEPR theory?", "answer": "NH3"}]
THINK = "<think>\nSome careful reasoning about the problem that leads to an answer.\n</think>\n\nThe answer is $\\boxed{7}$."


@pytest.fixture
def cfg(tmp_path) -> CurateConfig:
    (tmp_path / "aime.jsonl").write_text("".join(json.dumps(r) + "\n" for r in AIME))
    pl.DataFrame(GPQA).write_parquet(tmp_path / "gpqa.parquet")
    return CurateConfig(
        decontam={
            "benchmarks": [
                {"name": "aime", "path": str(tmp_path / "aime.jsonl"), "kind": "file"},
                {"name": "gpqa", "path": str(tmp_path / "gpqa.parquet"), "kind": "file", "split": "train", "fields": ["question"]},
            ]
        },
        dedup={"enabled": False},
    )


def row(id, prompt, completion=THINK, **kw):
    return {"id": id, "prompt": prompt, "completion": completion, "language": "en", "correct": True, "answer": "7", "source": kw.pop("source", "s"), **kw}


def test_prompt_response_and_clean_rows(cfg):
    rows = [
        row("verbatim", AIME[0]["problem"]),
        row("embedded", "Solve this: let N be the greatest four-digit positive integer with the property that whenever one of its digits is changed to 1, the result is divisible by 7. Explain."),
        row("gpqa", "Which of the following molecules has a trigonal pyramidal geometry according to VSEPR theory? Options: CH4, NH3, BF3."),
        row("recites", "Tell me a hard number theory problem.", completion="<think>\nHere is one: Find the number of ordered pairs of positive integers (m, n) such that m^2 n = 20^20. Now I solve it.\n</think>\n\nDone."),
        row("clean", "Find the number of ordered pairs of integers (a, b) with a + b = 10 and both positive."),
        row("train_split_only", "This item is in the train split and must be ignored by the test split."),
    ]
    kept, rejected, funnel = curate(pl.DataFrame(rows), cfg)
    got = dict(zip(rejected["id"], rejected["reject_reason"]))
    assert got == {"verbatim": "contaminated", "embedded": "contaminated", "gpqa": "contaminated", "recites": "contaminated"}
    assert set(kept["id"]) == {"clean", "train_split_only"}
    by_id = {r["id"]: r for r in rejected.iter_rows(named=True)}
    assert by_id["verbatim"]["contam_benchmarks"] == "aime"
    assert by_id["gpqa"]["contam_benchmarks"] == "gpqa"
    assert by_id["recites"]["contam_prompt_hits"] == 0 and by_id["recites"]["contam_response_hits"] >= 3
    bench = funnel["decontamination"]["benchmarks"]
    assert bench["aime"]["items"] == 2 and bench["gpqa"]["items"] == 1
    assert bench["aime"]["contaminated_rows"] == 3 and bench["aime"]["prompt_rows"] == 2 and bench["aime"]["response_rows"] == 1
    assert bench["gpqa"]["contaminated_rows"] == 1
    assert funnel["primary_reasons"]["contaminated"] == 4


def test_boilerplate_ngrams_are_not_evidence(tmp_path):
    boiler = "Express your answer as a common fraction in lowest terms please."
    items = {"bench": [[f"Problem {i} about {w} apples and pears. {boiler}"] for i, w in enumerate("abcdefgh")]}
    index = ContaminationIndex(items, prompt_ngram=8, response_ngram=13, boilerplate_items=5)
    hits, _ = index.scan_prompts(pl.Series([f"How many oranges are there? {boiler}"]))
    assert hits.tolist() == [0]
    index = ContaminationIndex(items, prompt_ngram=8, response_ngram=13, boilerplate_items=10)
    hits, _ = index.scan_prompts(pl.Series([f"How many oranges are there? {boiler}"]))
    assert hits.tolist() == [4]  # the four 8-grams of the 11-word sentence


def test_tokens_ignore_case_punctuation_and_split_cjk():
    a, b = tokenize(pl.Series(["Hello, World! (x+1)", "hello world x 1"])), tokenize(pl.Series(["求 x 的值。"]))
    assert a.hashes[a.offsets[0] : a.offsets[1]].tolist() == a.hashes[a.offsets[1] : a.offsets[2]].tolist()
    assert len(b.hashes) == 4  # 求 x 的 值; the full stop is no token


def test_chinese_benchmark_matches_chinese_prompt():
    items = {"cmath": [["小明有十二个苹果，他给了小红三个，又买了五个，现在他有多少个苹果？"]]}
    index = ContaminationIndex(items)
    hits, mask = index.scan_prompts(pl.Series(["题目：小明有十二个苹果，他给了小红三个，又买了五个，现在他有几个？", "完全不同的一道题目，和苹果没有关系。"]))
    assert hits[0] > 0 and mask[0] == 1 and hits[1] == 0


def test_config_errors(tmp_path):
    with pytest.raises(RecipeError):
        recipe_from_dict({"name": "x", "curate": {"decontam": {"benchmarks": [{"name": "b"}]}}})
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "no known field"}) + "\n")
    cfg = CurateConfig(decontam={"benchmarks": [{"name": "b", "path": str(tmp_path / "b.jsonl"), "kind": "file"}]})
    with pytest.raises(ValueError, match="none of the fields"):
        load_items(cfg.decontam)


def test_hub_benchmarks_load_through_datasets(monkeypatch):
    """kind "hf" (the production path) calls datasets.load_dataset(path, config, split=split)."""
    import datasets

    calls = []

    def fake_load(path, config=None, split=None):
        calls.append((path, config, split))
        return datasets.Dataset.from_list([{"problem": AIME[0]["problem"], "answer": "231"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cfg = CurateConfig(decontam={"benchmarks": [{"name": "aime24", "path": "HuggingFaceH4/aime_2024", "split": "train"}]})
    assert load_items(cfg.decontam) == {"aime24": [[AIME[0]["problem"]]]}
    assert calls == [("HuggingFaceH4/aime_2024", None, "train")]
    kept, rejected, funnel = curate(pl.DataFrame([row("a", AIME[0]["problem"])]), cfg)
    assert rejected["reject_reason"].to_list() == ["contaminated"]
    assert funnel["decontamination"]["benchmarks"]["aime24"]["contaminated_rows"] == 1
