"""Sharded, resumable, exactly-once generation (real transformers engine on a tiny model, and a scripted
engine where only the bookkeeping matters), the accounting ledger, data-parallel workers, adaptive
sampling rounds, the rejection policy, and the sample stage's reuse rules."""

import json

import polars as pl
import pytest

from distill.engines.base import Completion, Result, SamplingParams
from distill.engines.transformers import TransformersEngine
from distill.generation.prompts import PROMPT_SCHEMA
from distill.config.sampling import AdaptiveConfig, CostConfig
from distill.generation.rejection import adaptive_plan, pass_rates, select_per_prompt, unsolved_prompts
from distill.generation.ledger import accounting, ledger_totals, read_ledger
from distill.generation.adaptive import generate_adaptive
from distill.generation.sample import generate_traces
from distill.generation.parallel import generate_traces_parallel
from distill.generation.shards import sample_ids, shard_status
from distill.core.storage import read_table


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
    df = read_table(tmp_path)
    assert df.height == 10 and df["id"].n_unique() == 10
    assert set(df["finish_reason"]) <= {"stop", "length"}
    assert (df["completion_tokens"] <= 8).all() and (df["prompt_tokens"] > 0).all()
    expected = [i for pid in prompts["prompt_id"] for i in sample_ids(pid, 2, "m", PARAMS)]
    assert sorted(df["id"].to_list()) == sorted(expected)
    assert {"answer", "task", "language", "source", "prompt"} <= set(df.columns)


def test_rerun_generates_only_missing_or_corrupt_shards(tmp_path, tiny_llama):
    prompts = _prompts(6)
    generate_traces(prompts, tmp_path, model_label="m", params=PARAMS, engine_factory=Counting(tiny_llama), shard_size=2)
    before = read_table(tmp_path).sort("id")

    again = Counting(tiny_llama)
    stats = generate_traces(prompts, tmp_path, model_label="m", params=PARAMS, engine_factory=again, shard_size=2)
    assert again.starts == 0 and stats["shards_generated"] == 0  # nothing missing: engine never started

    (tmp_path / "shard-00001.parquet").unlink()  # lost
    (tmp_path / "shard-00002.parquet").write_bytes(b"PAR1 truncated")  # killed mid-write by an old tool
    third = Counting(tiny_llama)
    stats = generate_traces(prompts, tmp_path, model_label="m", params=PARAMS, engine_factory=third, shard_size=2)
    assert third.starts == 1 and stats["shards_generated"] == 2
    assert sorted(third.asked) == ["p2", "p3", "p4", "p5"]
    after = read_table(tmp_path).sort("id")
    assert after["id"].to_list() == before["id"].to_list()  # same set, no duplicates


def test_changed_settings_change_ids(tiny_llama):
    a = sample_ids("p", 2, "m", PARAMS)
    b = sample_ids("p", 2, "m", SamplingParams(n=2, temperature=0.5, top_p=1.0, max_tokens=8))
    c = sample_ids("p", 4, "m", SamplingParams(n=4, temperature=1.0, top_p=1.0, max_tokens=8))
    assert not set(a) & set(b)
    assert c[:2] == a  # more samples later keep the first ones' ids


# --- commit records: what counts as a finished shard ----------------------------------------------------------

class Scripted:
    """A fast deterministic engine: sample i of prompt p says f"{p}#{first_index + i}" in i + 1 tokens."""

    name, version = "scripted", "1"

    def __init__(self):
        self.asked: list[tuple[str, int]] = []

    def __call__(self):
        return self

    def generate(self, requests, params):
        self.asked += [(r.request_id, r.first_index) for r in requests]
        return [
            Result(r.request_id, 5, [Completion(f"{r.request_id}#{r.first_index + i}", "stop", i + 1) for i in range(params.n)])
            for r in requests
        ]

    def close(self):
        pass


def _run(tmp_path, prompts, engine=None, **kw):
    return generate_traces(prompts, tmp_path, model_label="m", params=PARAMS, engine_factory=engine or Scripted(), shard_size=2, **kw)


def test_every_kind_of_damaged_shard_is_regenerated_never_read(tmp_path):
    prompts = _prompts(10)  # 5 shards
    _run(tmp_path, prompts)
    before = read_table(tmp_path).sort("id")
    # 0: one flipped byte, same size; 1: truncated; 2: parquet intact but no commit record (killed between
    # the two renames); 3: commit record gone and file gone; 4: sidecar unreadable
    p0 = tmp_path / "shard-00000.parquet"
    raw = bytearray(p0.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    p0.write_bytes(bytes(raw))
    p1 = tmp_path / "shard-00001.parquet"
    p1.write_bytes(p1.read_bytes()[:-100])
    (tmp_path / "shard-00002.json").unlink()
    (tmp_path / "shard-00003.parquet").unlink()
    (tmp_path / "shard-00004.json").write_text("{not json")
    (tmp_path / ".shard-00001.parquet.abc.tmp").write_bytes(b"left by a kill")
    eng = Scripted()
    stats = _run(tmp_path, prompts, eng)
    assert stats["shards_generated"] == 5 and stats["shards_corrupt"] == 4  # shard 3 was simply missing
    assert sorted({p for p, _ in eng.asked}) == [f"p{i}" for i in range(10)]
    after = read_table(tmp_path).sort("id")
    assert after.equals(before)
    assert not list(tmp_path.glob(".*.tmp"))
    for i in range(5):
        side = json.loads((tmp_path / f"shard-{i:05d}.json").read_text())
        assert side["rows"] == 4 and side["file"] == f"shard-{i:05d}.parquet"


def test_shard_of_other_settings_is_stale(tmp_path):
    prompts = _prompts(4)
    _run(tmp_path, prompts)
    other = [i for pid in ["p0", "p1"] for i in sample_ids(pid, 2, "other-model", PARAMS)]
    assert shard_status(tmp_path / "shard-00000.parquet", other) == "corrupt"
    expected = [i for pid in ["p0", "p1"] for i in sample_ids(pid, 2, "m", PARAMS)]
    assert shard_status(tmp_path / "shard-00000.parquet", expected) == "ok"
    assert shard_status(tmp_path / "shard-00009.parquet", expected) == "missing"


def test_smaller_prompt_set_drops_extra_shards_and_sidecars(tmp_path):
    _run(tmp_path, _prompts(6))
    _run(tmp_path, _prompts(3))
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == ["shard-00000.json", "shard-00000.parquet", "shard-00001.json", "shard-00001.parquet"]


def test_system_prompt_and_template_are_part_of_the_ids(tmp_path):
    a = sample_ids("p", 2, "m", PARAMS)
    assert sample_ids("p", 2, "m", PARAMS, context={"system_prompt": None, "chat_template": None}) == a
    assert not set(sample_ids("p", 2, "m", PARAMS, context={"system_prompt": "Think."})) & set(a)
    assert sample_ids("p", 2, "m", PARAMS, start=2) == sample_ids("p", 4, "m", PARAMS)[2:]


def test_ledger_counts_all_work_and_accounting_prices_it(tmp_path):
    prompts = _prompts(4)
    first = _run(tmp_path, prompts)
    (tmp_path / "shard-00001.parquet").unlink()
    second = _run(tmp_path, prompts)
    totals = ledger_totals(tmp_path)
    # per sample i: i + 1 tokens; n=2 -> 3 tokens per prompt
    assert first["completion_tokens"] == 12 and second["completion_tokens"] == 6
    assert totals["completion_tokens"] == 18 and totals["shards_written"] == 3 and totals["engine_starts"] == 2
    assert [e["file"] for e in read_ledger(tmp_path) if e["event"] == "shard"] == ["shard-00000.parquet", "shard-00001.parquet", "shard-00001.parquet"]
    acc = accounting(tmp_path, gpus=2, cost=CostConfig(gpu_hour_usd=3600.0, output_usd_per_mtok=1e6), samples=8, correct=4)
    seconds = totals["engine_seconds"] + totals["engine_start_seconds"]
    assert acc["gpu_hours"] == pytest.approx(2 * seconds / 3600, abs=1e-5)
    assert acc["cost_usd"] == pytest.approx(2 * seconds + 18, abs=0.05)  # GPU time + $1 per output token
    assert acc["cost_per_sample_usd"] == pytest.approx(acc["cost_usd"] / 8, rel=1e-3)
    assert acc["cost_per_correct_sample_usd"] == pytest.approx(acc["cost_usd"] / 4, rel=1e-3)
    with open(next(tmp_path.glob("_ledger-*.jsonl")), "a") as f:
        f.write('{"event": "shard", "rows"')  # torn by a kill
    assert ledger_totals(tmp_path)["completion_tokens"] == 18


def test_workers_split_shards_without_overlap(tmp_path):
    prompts = _prompts(10)
    engines = [Scripted(), Scripted()]
    for rank, eng in enumerate(engines):
        stats = _run(tmp_path, prompts, eng, rank=rank, world_size=2)
        assert stats["shards_generated"] == (3 if rank == 0 else 2)
    assert not {p for p, _ in engines[0].asked} & {p for p, _ in engines[1].asked}
    final = Scripted()
    stats = _run(tmp_path, prompts, final)
    assert final.asked == [] and stats["shards_generated"] == 0 and read_table(tmp_path).height == 20
    with pytest.raises(ValueError, match="rank"):
        _run(tmp_path, prompts, rank=2, world_size=2)


@pytest.mark.slow  # two spawned processes that each import torch: ~15 s on two cores
def test_parallel_workers_on_this_machine(tmp_path, tiny_llama):
    """Two spawned processes, each with its own (transformers) engine, then a checking pass here."""
    from functools import partial

    from distill.engines.factory import make_engine

    prompts = _prompts(6)
    factory = partial(make_engine, "transformers", str(tiny_llama))
    stats = generate_traces_parallel(prompts, tmp_path, workers=2, engine_factory=factory, model_label="m", params=PARAMS, shard_size=2)
    assert stats["workers"] == 2 and stats["shards_generated"] == 0  # the workers did it all
    pids = {e["pid"] for e in read_ledger(tmp_path) if e["event"] == "shard"}
    assert len(pids) == 2
    reference = tmp_path / "one"
    _run(reference, prompts, factory)
    a, b = read_table(tmp_path).sort("id"), read_table(reference).sort("id")
    assert a["id"].to_list() == b["id"].to_list() and a["completion"].to_list() == b["completion"].to_list()


# --- the rejection policy --------------------------------------------------------------------------------------


def _verified(spec: dict[str, list[bool | None]]) -> pl.DataFrame:
    rows = []
    for pid, verdicts in spec.items():
        for i, v in enumerate(verdicts):
            rows.append({"id": f"{pid}-{i}", "prompt_id": pid, "sample_index": i, "prompt": f"q {pid}", "answer": "1",
                         "completion": f"answer {pid} {i}", "completion_tokens": 10 - i, "correct": v})
    return pl.DataFrame(rows, schema_overrides={"correct": pl.Boolean})


def test_pass_rates_and_difficulty_levels():
    df = _verified({"easy": [True, True, True, False], "hard": [True, False, False, False, False], "none": [False, None],
                    "nogold": [None, None], "mid": [True, False]})
    r = {row["prompt_id"]: row for row in pass_rates(df).iter_rows(named=True)}
    assert r["easy"]["pass_rate"] == 0.75 and r["easy"]["level"] == "easy" and r["easy"]["difficulty"] == 0.25
    assert r["hard"]["level"] == "hard" and r["mid"]["level"] == "medium"
    assert r["none"]["pass_rate"] == 0 and r["none"]["level"] == "unsolved" and r["none"]["n_unverifiable"] == 1
    assert r["nogold"]["pass_rate"] is None and r["nogold"]["level"] == "unverifiable"  # never "unsolved"


def test_keep_k_shortest_and_diverse():
    rows = [{"id": f"a{i}", "prompt_id": "a", "sample_index": i, "completion": c, "completion_tokens": t}
            for i, (c, t) in enumerate([("we add two and two to get four", 9), ("we add two and two to get four", 8),
                                        ("four, since 2 + 2 = 4 by counting", 12), ("we add two and two and get four", 7)])]
    rows.append({"id": "b0", "prompt_id": "b", "sample_index": 0, "completion": "x", "completion_tokens": 1})
    df = pl.DataFrame(rows)
    kept, dropped = select_per_prompt(df, 2, "shortest")
    assert kept["id"].to_list() == ["a1", "a3", "b0"]  # df's order kept; a3 (7) and a1 (8) are the shortest
    assert dropped["reject_reason"].to_list() == ["over_k", "over_k"] and dropped["reject_reasons"].to_list() == [["over_k"]] * 2
    kept, _ = select_per_prompt(df, 2, "diverse")
    assert set(kept.filter(pl.col("prompt_id") == "a")["id"]) == {"a3", "a2"}  # shortest, then the least alike
    assert select_per_prompt(df, None)[0].height == 5
    assert kept.columns == df.columns


def test_unsolved_prompts_for_a_later_round():
    df = _verified({"solved": [True, False], "never": [False, False], "nogold": [None], "filtered": [True]})
    accepted = df.filter(pl.col("prompt_id") == "solved")
    out = unsolved_prompts(df, accepted)
    assert dict(zip(out["prompt_id"], out["reason"])) == {"never": "no_correct_sample", "filtered": "no_accepted_sample"}
    assert {"prompt", "answer", "n_samples", "pass_rate"} <= set(out.columns)


def test_adaptive_plan_picks_low_but_nonzero_pass_rates():
    cfg = AdaptiveConfig(enabled=True, max_pass_rate=0.5, samples_per_round=4, max_samples_per_prompt=10)
    df = _verified({"low": [True, False, False, False], "zero": [False] * 4, "high": [True, True, True, False],
                    "budget": [True] + [False] * 9, "near": [True] + [False] * 7})
    plan = {r["prompt_id"]: (r["sample_offset"], r["extra"]) for r in adaptive_plan(df, cfg).iter_rows(named=True)}
    assert plan == {"low": (4, 4), "near": (8, 2)}  # "near" is capped by the budget of 10
    assert adaptive_plan(df, cfg, keep_k=1).height == 0  # each already has one correct sample
    assert adaptive_plan(df, AdaptiveConfig(enabled=False)).height == 0


def test_adaptive_rounds_resume_and_never_redraw(tmp_path):
    prompts = _prompts(6)
    hard = {"p0", "p1"}  # one correct sample in four: pass rate 0.25; the others never

    def verify(df):
        return df.with_columns(correct=pl.col("prompt_id").is_in(list(hard)) & (pl.col("sample_index") % 4 == 0))

    cfg = AdaptiveConfig(enabled=True, max_pass_rate=0.5, samples_per_round=4, max_samples_per_prompt=12)
    params = SamplingParams(n=4, temperature=1.0, top_p=1.0, max_tokens=8)

    def run(engine):
        gen = lambda p, d, params, prefix: generate_traces(p, d, model_label="m", params=params, engine_factory=engine, shard_size=2, prefix=prefix)  # noqa: E731
        return generate_adaptive(prompts, tmp_path, params=params, generate=gen, verify=verify, adaptive=cfg)

    eng = Scripted()
    stats = run(eng)
    df = read_table(tmp_path)
    counts = dict(df.group_by("prompt_id").len().iter_rows())
    assert counts == {"p0": 12, "p1": 12, "p2": 4, "p3": 4, "p4": 4, "p5": 4}
    assert df["id"].n_unique() == df.height == 40 and df["completion"].n_unique() == 40  # new draws, new ids
    assert [r["prompts"] for r in stats["adaptive"]["rounds"]] == [2, 2]
    assert stats["adaptive"]["extra_samples"] == 16 and stats["adaptive"]["correct_samples"] == 6
    assert sorted(df.filter(pl.col("prompt_id") == "p0")["sample_index"]) == list(range(12))

    (tmp_path / "round02-00000.parquet").unlink()  # lost: only that is redone
    again = Scripted()
    run(again)
    assert again.asked == [("p0", 8), ("p1", 8)]
    assert read_table(tmp_path).sort("id").equals(df.sort("id"))

    keep = Scripted()  # keep_k=1: the hard prompts have one correct sample already, no rounds
    gen = lambda p, d, params, prefix: generate_traces(p, d, model_label="m", params=params, engine_factory=keep, shard_size=2, prefix=prefix)  # noqa: E731
    stats = generate_adaptive(prompts, tmp_path, params=params, generate=gen, verify=verify, adaptive=cfg, keep_k=1)
    assert stats["adaptive"]["rounds"] == [] and not list(tmp_path.glob("round*"))


# --- the stage: what reruns it, and what the report says ---------------------------------------------------------


def test_sample_stage_survives_engine_switch_and_price_changes(tmp_path, tiny_llama):
    from distill.pipeline import Run, run_pipeline
    from distill.config.recipe import recipe_from_dict
    from distill.report.summary import generation_accounting

    base = {"name": "fp", "run_dir": str(tmp_path / "run"), "threads": 1, "prompts": {"n_train": 6, "n_eval": 1},
            "teacher": {"enabled": False, "model": str(tiny_llama)},
            "sampling": {"engine": "transformers", "n": 2, "max_tokens": 8, "shard_size": 2, "cost": {"gpu_hour_usd": 3600.0}}}

    def sample(*overrides):
        return run_pipeline(Run(recipe_from_dict(base, overrides=list(overrides))), only="sample")["sample"]

    first = sample()
    g = first["generation"]
    assert not first["cached"] and first["rows_out"] == 12 and g["shards_generated"] == 3
    assert g["engine"].startswith("transformers") and g["completion_tokens"] > 0 and g["gpus"] == 1
    assert g["cost_usd"] == pytest.approx(g["total_engine_seconds"] + g["total_engine_start_seconds"], abs=0.01)
    # none of these changes which samples exist: the stage is reused (an openai engine at a dead
    # address would fail if it were started)
    for o in ("sampling.engine=openai", "sampling.openai.base_url=http://127.0.0.1:9/v1", "sampling.rejection.keep_k=1",
              "sampling.cost.gpu_hour_usd=1.0", "sampling.vllm.tensor_parallel_size=2"):
        assert sample(o)["cached"], o
    # a damaged shard after the stage finished: the stage reruns and regenerates only that shard
    shard = tmp_path / "run" / "traces" / "shard-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:50])
    again = sample()
    assert not again["cached"] and again["generation"]["shards_generated"] == 1 and again["generation"]["shards_corrupt"] == 1
    assert again["generation"]["engine_starts"] == 2  # the ledger keeps the first pass's cost
    # the report prices with the current recipe, per accepted sample
    run = Run(recipe_from_dict(base, overrides=["sampling.cost.gpu_hour_usd=7200.0"]))
    acc = generation_accounting(run, {"sample": again, "select": {"rows_out": 4}})
    assert acc["cost_usd"] == pytest.approx(2 * again["generation"]["gpu_hours"] * 3600, rel=1e-3)
    assert acc["accepted_samples"] == 4 and acc["cost_per_accepted_sample_usd"] == pytest.approx(acc["cost_usd"] / 4, rel=1e-3)
    assert not sample("sampling.temperature=0.9")["cached"]  # a sampling setting: new samples
    # adaptive sampling verifies with the recipe's verifier; a random model solves nothing: no extra rounds
    adaptive = sample("sampling.rejection.adaptive.enabled=true", "sampling.rejection.adaptive.max_samples_per_prompt=4")
    assert not adaptive["cached"] and adaptive["generation"]["adaptive"]["rounds"] == []
    assert adaptive["generation"]["adaptive"]["correct_samples"] == 0 and adaptive["rows_out"] == 12
