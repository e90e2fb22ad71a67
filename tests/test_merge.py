import datasets
import polars as pl
import pytest

from distill.merge import merge, write_hf_dataset
from distill.recipe import MergeConfig, MergeSource

KEPT = pl.DataFrame(
    {
        "id": [f"t{i}" for i in range(9)],
        "prompt": [f"What is {i} + 1?" for i in range(9)],
        "completion": [f"<think>\n{i} + 1 = {i + 1}\n</think>\n\\boxed{{{i + 1}}}" for i in range(9)],
        "task": ["math"] * 9,
        "source": ["demo"] * 9,
    }
)


def test_ratio_and_formats(tmp_path):
    df, mix = merge(KEPT, MergeConfig(non_reasoning_fraction=0.25))
    assert mix["reasoning_rows"] == 9 and mix["non_reasoning_rows"] == 3 and df.height == 12
    for row in df.iter_rows(named=True):
        text = row["completion"][0]["content"]
        assert row["completion"][0]["role"] == "assistant" and row["prompt"][-1]["role"] == "user"
        assert ("<think>" in text) == (row["kind"] == "reasoning")
    # self-cognition answers name the student, never the raw placeholder
    all_text = " ".join(r["completion"][0]["content"] for r in df.iter_rows(named=True))
    assert "{name}" not in all_text and "{maker}" not in all_text


def test_same_seed_same_mix_and_datasets_loads(tmp_path):
    a, _ = merge(KEPT, MergeConfig(seed=3))
    b, _ = merge(KEPT, MergeConfig(seed=3))
    assert a["id"].to_list() == b["id"].to_list()
    a.write_parquet(tmp_path / "train.parquet")
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "train.parquet"), split="train")
    assert len(ds) == a.height and ds[0]["completion"][0]["role"] == "assistant"
    write_hf_dataset(a, tmp_path / "hf")
    assert len(datasets.load_from_disk(str(tmp_path / "hf"))) == a.height


def test_upsamples_when_the_pool_is_small(tmp_path):
    src = tmp_path / "nr.jsonl"
    src.write_text('{"prompt": "Hi", "response": "Hello!", "category": "writing"}\n')
    df, mix = merge(KEPT, MergeConfig(non_reasoning=[MergeSource(path=str(src))], non_reasoning_fraction=0.5))
    assert mix["non_reasoning_rows"] == 9


def test_bad_source_rows_are_named(tmp_path):
    src = tmp_path / "nr.jsonl"
    src.write_text('{"prompt": "Hi", "response": "<think>hm</think> Hello"}\n')
    with pytest.raises(ValueError, match=r"row 0 carries a think block"):
        merge(KEPT, MergeConfig(non_reasoning=[MergeSource(path=str(src))]))
    src.write_text('{"prompt": "Hi", "answer": "Hello"}\n')
    with pytest.raises(ValueError, match=r"column 'response' is missing"):
        merge(KEPT, MergeConfig(non_reasoning=[MergeSource(path=str(src))]))
