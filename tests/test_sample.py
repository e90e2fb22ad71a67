"""Sharded, resumable generation with the real transformers engine on a tiny model."""

import polars as pl
import pytest

from distill.engines import SamplingParams, TransformersEngine
from distill.prompts import PROMPT_SCHEMA
from distill.sample import generate_traces, sample_ids


def _prompts(n):
    return pl.DataFrame(
        [{"prompt_id": f"p{i}", "prompt": f"What is {i} + {i}?", "answer": str(2 * i), "task": "math", "language": "en", "source": "t"} for i in range(n)],
        schema=PROMPT_SCHEMA,
    )


class Counting:
    """The real engine, counting how often it is started and which prompts it is asked for."""

    def __init__(self, model):
        self.model, self.starts, self.asked = model, 0, []

    def __call__(self):
        self.starts += 1
        engine = TransformersEngine(str(self.model), seed=0)
        inner = engine.generate

        def generate(requests, params):
            self.asked += [r.request_id for r in requests]
            return inner(requests, params)

        engine.generate = generate
        return engine


PARAMS = SamplingParams(n=2, temperature=1.0, top_p=1.0, max_tokens=8, seed=0)


def test_generates_all_samples_with_stable_ids(tmp_path, tiny_llama):
    prompts = _prompts(5)
    factory = Counting(tiny_llama)
    stats = generate_traces(prompts, tmp_path, model_label="m", params=PARAMS, engine_factory=factory, shard_size=2)
    assert stats["shards"] == 3 and stats["shards_generated"] == 3 and stats["rows"] == 10
    df = pl.read_parquet(tmp_path)
    assert df.height == 10 and df["id"].n_unique() == 10
    assert set(df["finish_reason"]) <= {"stop", "length"}
    assert (df["completion_tokens"] <= 8).all() and (df["prompt_tokens"] > 0).all()
    expected = [i for pid in prompts["prompt_id"] for i in sample_ids(pid, 2, "m", PARAMS)]
    assert sorted(df["id"].to_list()) == sorted(expected)
    assert {"answer", "task", "language", "source", "prompt"} <= set(df.columns)


def test_rerun_generates_only_missing_or_corrupt_shards(tmp_path, tiny_llama):
    prompts = _prompts(6)
    generate_traces(prompts, tmp_path, model_label="m", params=PARAMS, engine_factory=Counting(tiny_llama), shard_size=2)
    before = pl.read_parquet(tmp_path).sort("id")

    again = Counting(tiny_llama)
    stats = generate_traces(prompts, tmp_path, model_label="m", params=PARAMS, engine_factory=again, shard_size=2)
    assert again.starts == 0 and stats["shards_generated"] == 0  # nothing missing: engine never started

    (tmp_path / "shard-00001.parquet").unlink()  # lost
    (tmp_path / "shard-00002.parquet").write_bytes(b"PAR1 truncated")  # killed mid-write by an old tool
    third = Counting(tiny_llama)
    stats = generate_traces(prompts, tmp_path, model_label="m", params=PARAMS, engine_factory=third, shard_size=2)
    assert third.starts == 1 and stats["shards_generated"] == 2
    assert sorted(third.asked) == ["p2", "p3", "p4", "p5"]
    after = pl.read_parquet(tmp_path).sort("id")
    assert after["id"].to_list() == before["id"].to_list()  # same set, no duplicates


def test_changed_settings_change_ids(tiny_llama):
    a = sample_ids("p", 2, "m", PARAMS)
    b = sample_ids("p", 2, "m", SamplingParams(n=2, temperature=0.5, top_p=1.0, max_tokens=8))
    c = sample_ids("p", 4, "m", SamplingParams(n=4, temperature=1.0, top_p=1.0, max_tokens=8))
    assert not set(a) & set(b)
    assert c[:2] == a  # more samples later keep the first ones' ids
