import json
import random

import datasets
import polars as pl
import pytest
from transformers import AutoTokenizer

from distill.mix.merge import build_sft_set, merge, mix_by_tokens, write_hf_dataset
from distill.config.merge import IdentityConfig, KindWeights, MergeConfig, MergeSource, MixWeights, SourceFields
from distill.config.recipe import recipe_from_dict

KEPT = pl.DataFrame(
    {
        "id": [f"t{i}" for i in range(40)],
        "prompt": [f"What is {i} + 1?" for i in range(40)],
        "completion": [f"<think>\n{i} + 1 = {i + 1}. Adding one moves to the next number, so I check it twice.\n</think>\n\\boxed{{{i + 1}}}" for i in range(40)],
        "task": ["math"] * 40,
        "source": ["demo"] * 40,
    }
)


def _rows(rng, kind, category, source, n, lo, hi):
    return [{"id": f"{source}-{category}-{i}", "kind": kind, "category": category, "source": source,
             "prompt": [], "completion": [], "tokens": rng.randint(lo, hi)} for i in range(n)]


def test_mixer_hits_its_token_ratios_within_one_percent():
    rng = random.Random(0)
    rows = (
        _rows(rng, "reasoning", "math", "r1", 3000, 200, 2000)
        + _rows(rng, "reasoning", "code", "r2", 400, 500, 3000)
        + _rows(rng, "non_reasoning", "writing", "w1", 300, 50, 400)
        + _rows(rng, "non_reasoning", "writing", "w2", 2000, 50, 400)
        + _rows(rng, "non_reasoning", "factual_qa", "f", 900, 10, 120)
        + _rows(rng, "non_reasoning", "self_cognition", "s", 20, 20, 60)  # tiny pool: must be upsampled
    )
    weights = KindWeights(
        reasoning=MixWeights(categories={"math": 3, "code": 1}),
        non_reasoning=MixWeights(categories={"writing": 2, "factual_qa": 1.5, "self_cognition": 0.5}, sources={"w1": 1, "w2": 1, "f": 1, "s": 1}),
    )
    for total in (None, 4_000_000):
        chosen, dropped, mix = mix_by_tokens(rows, non_reasoning_fraction=0.25, total_tokens=total, weights=weights, seed=1)
        tokens = sum(r["tokens"] for r in chosen)
        assert abs(mix["non_reasoning_fraction"]["actual"] - 0.25) < 0.01
        share = lambda pred: sum(r["tokens"] for r in chosen if pred(r)) / tokens  # noqa: E731
        assert abs(share(lambda r: r["kind"] == "non_reasoning") - 0.25) < 0.01
        assert abs(share(lambda r: r["category"] == "math") - 0.75 * 3 / 4) < 0.01
        assert abs(share(lambda r: r["category"] == "writing") - 0.25 * 2 / 4) < 0.01
        assert abs(share(lambda r: r["source"] == "w1") - share(lambda r: r["source"] == "w2")) < 0.01  # 1:1 within writing
        assert abs(share(lambda r: r["category"] == "self_cognition") - 0.25 * 0.5 / 4) < 0.01
        for t in mix["table"]:  # every bucket within 1% of its target (relative)
            assert abs(t["tokens"] - t["target_tokens"]) <= 0.01 * t["target_tokens"] + 1
        if total:
            assert abs(tokens - total) / total < 0.01
        # the mix table adds up, and every row is either chosen or dropped with a reason
        assert sum(t["rows"] for t in mix["table"]) == len(chosen) and sum(t["tokens"] for t in mix["table"]) == tokens
        assert {r["id"] for r in chosen} | {r["id"] for r in dropped} == {r["id"] for r in rows}
        assert not {r["id"] for r in chosen} & {r["id"] for r in dropped}
        sc = next(t for t in mix["table"] if t["category"] == "self_cognition")
        assert sc["factor"] > 5 and sc["rows"] > sc["rows_available"]  # upsampled
        assert {d["drop_reason"] for d in dropped} == {"downsampled"}


def test_mixer_seed_and_default_three_to_one():
    rng = random.Random(1)
    rows = _rows(rng, "reasoning", "math", "r", 500, 100, 900) + _rows(rng, "non_reasoning", "writing", "w", 800, 20, 200)
    a = mix_by_tokens(rows, non_reasoning_fraction=MergeConfig().non_reasoning_fraction, seed=3)
    b = mix_by_tokens(rows, non_reasoning_fraction=0.25, seed=3)
    c = mix_by_tokens(rows, non_reasoning_fraction=0.25, seed=4)
    assert [r["id"] for r in a[0]] == [r["id"] for r in b[0]] != [r["id"] for r in c[0]]
    nr = a[2]["by_kind"]
    assert abs(nr["reasoning"]["tokens"] / nr["non_reasoning"]["tokens"] - 3.0) < 0.04
    assert nr["reasoning"]["tokens"] == nr["reasoning"]["tokens_available"]  # reasoning kept whole


def test_weights_must_name_every_category_with_rows():
    rows = _rows(random.Random(0), "non_reasoning", "writing", "w", 5, 1, 5) + _rows(random.Random(0), "reasoning", "math", "r", 5, 1, 5)
    with pytest.raises(ValueError, match="merge.weights.non_reasoning.categories has no weight for writing"):
        mix_by_tokens(rows, non_reasoning_fraction=0.25, weights=KindWeights(non_reasoning=MixWeights(categories={"translation": 1})))
    chosen, dropped, mix = mix_by_tokens(rows, non_reasoning_fraction=0.25, weights=KindWeights(non_reasoning=MixWeights(categories={"writing": 1, "poetry": 1})))
    assert "poetry" in mix["warnings"][0]


def test_sft_set_from_traces_and_bundled_sources(tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    cfg = MergeConfig(non_reasoning=[MergeSource(path="data/non_reasoning.jsonl"), MergeSource(kind="self_cognition")],
                      identity=IdentityConfig(name="Tiny-R1", maker="the test suite"))
    res = build_sft_set(KEPT, cfg, tokenizer=tok, student_name="ignored")
    df, mix = res.df, res.mix
    assert mix["token_counter"].endswith("tokenizer, completion") and mix["think_style"] == "absent"
    assert abs(mix["non_reasoning_fraction"]["actual"] - 0.25) < 0.02  # a small pool: rows are coarse
    for row in df.iter_rows(named=True):
        text = row["completion"][0]["content"]
        assert row["completion"][0]["role"] == "assistant" and row["prompt"][-1]["role"] == "user"
        assert ("<think>" in text) == (row["kind"] == "reasoning")
        assert row["tokens"] == len(tok(text, add_special_tokens=False)["input_ids"]) + 1
    text = json.dumps(df.to_dicts() + res.dropped.to_dicts(), ensure_ascii=False)
    assert "{name}" not in text and "{maker}" not in text
    sc = df.filter(pl.col("category") == "self_cognition")
    assert sc.height and all("Tiny-R1" in r[0]["content"] or "the test suite" in r[0]["content"] for r in sc["completion"])
    assert set(res.dropped["drop_reason"]) <= {"downsampled"} and mix["dropped"]["downsampled"] == res.dropped.height
    # rows in = unique rows out + dropped rows
    assert mix["rows_in"] == df.filter(pl.col("copy") == 0).height + res.dropped.height


def test_empty_think_style_for_templates_that_prefill(tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.chat_template = tok.chat_template.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n<think>\\n'")
    df, mix = merge(KEPT, MergeConfig(), tokenizer=tok)
    assert mix["think_style"] == "empty"
    nr = df.filter(pl.col("kind") == "non_reasoning")
    assert nr.height and all(c[0]["content"].startswith("<think>\n\n</think>\n\n") for c in nr["completion"])
    df2, mix2 = merge(KEPT, MergeConfig(think="absent"), tokenizer=tok)
    assert all("<think>" not in c[0]["content"] for c in df2.filter(pl.col("kind") == "non_reasoning")["completion"])


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
    src.write_text('{"prompt": "Hi", "response": "Hello! How are you doing today?", "category": "writing"}\n')
    # without a cap (merge.max_repeat: null) the one row is repeated up to the token share
    df, mix = merge(KEPT, MergeConfig(non_reasoning=[MergeSource(path=str(src))], non_reasoning_fraction=0.5, max_repeat=None))
    nr = df.filter(pl.col("kind") == "non_reasoning")
    assert nr.height > 20 and sorted(set(nr["copy"])) == list(range(nr.height))
    assert abs(mix["non_reasoning_fraction"]["actual"] - 0.5) < 0.01
    # the default cap: 4 copies, the rest reported as a shortfall (tests/test_scale_data.py)
    df, mix = merge(KEPT, MergeConfig(non_reasoning=[MergeSource(path=str(src))], non_reasoning_fraction=0.5))
    assert df.filter(pl.col("kind") == "non_reasoning").height == 4 and mix["shortfall_tokens"] > 0


def test_bad_rows_are_dropped_with_reasons_and_bad_sources_named(tmp_path):
    src = tmp_path / "nr.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "Hi", "response": "<think>hm</think> Hello"},
        {"prompt": "Hi", "response": "   "},
        {"prompt": "Name a colour.", "response": "Blue."},
        {"prompt": "Name a colour.", "response": "Blue."},
    ]) + "\n")
    res = build_sft_set(KEPT, MergeConfig(non_reasoning=[MergeSource(path=str(src), category="factual_qa")]))
    reasons = dict(res.dropped.filter(pl.col("drop_reason") != "downsampled").group_by("drop_reason").len().iter_rows())
    assert reasons == {"think_block": 1, "empty_prompt_or_response": 1, "duplicate": 1}
    src.write_text('{"prompt": "Hi", "answer": "Hello"}\n')
    with pytest.raises(ValueError, match=rf"{src}: column 'response' is missing"):
        merge(KEPT, MergeConfig(non_reasoning=[MergeSource(path=str(src))]))
    src.write_text('{"prompt": "Hi", "response": "<think>x</think>"}\n')
    with pytest.raises(ValueError, match=r"no non_reasoning rows are left \(dropped: think_block 1\)"):
        merge(KEPT, MergeConfig(non_reasoning=[MergeSource(path=str(src))]))


def test_datasets_source_with_column_mapping_and_chat_rows(tmp_path):
    d = tmp_path / "hub_like"
    d.mkdir()
    pl.DataFrame({"question": ["Capital of France?", "Capital of Spain?"], "reply": ["Paris.", "Madrid."], "sys": ["Be brief.", None]}).write_parquet(d / "train.parquet")
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "Translate 'cat' to French."}, {"role": "assistant", "content": "chat"}]}) + "\n")
    cfg = MergeConfig(non_reasoning=[
        MergeSource(kind="hf", path=str(d), name="geo", category="factual_qa", fields=SourceFields(prompt="question", response="reply", system="sys")),
        MergeSource(path=str(chat), category="translation", fields=SourceFields(messages="messages")),
    ], non_reasoning_fraction=0.5)
    res = build_sft_set(KEPT.head(2), cfg)
    rows = {r["id"]: r for r in res.df.filter(pl.col("kind") == "non_reasoning").to_dicts() + res.dropped.to_dicts()}
    geo = [r for r in rows.values() if r["source"] == "geo"]
    assert len(geo) == 2 and {r["category"] for r in geo} == {"factual_qa"}
    with_sys = next(r for r in geo if r["completion"][0]["content"] == "Paris.")
    assert with_sys["prompt"][0] == {"role": "system", "content": "Be brief."}
    tr = next(r for r in rows.values() if r["category"] == "translation")
    assert tr["prompt"][-1]["content"] == "Translate 'cat' to French." and tr["completion"][0]["content"] == "chat"


def test_generated_answers_through_a_real_engine(tiny_llama, tmp_path):
    """generate: true sources are answered by the generator through the sampling engines, resumably."""
    src = tmp_path / "prompts.jsonl"
    src.write_text("\n".join(json.dumps({"prompt": p}) for p in ["Say hello.", "Name a fruit.", "Count to three."]) + "\n")
    cfg = MergeConfig(
        non_reasoning=[MergeSource(path=str(src), category="writing", generate=True), MergeSource(path="data/non_reasoning.jsonl")],
        generator={"model": str(tiny_llama), "engine": "transformers", "max_tokens": 4, "temperature": 0.0},
    )
    res = build_sft_set(KEPT.head(4), cfg, generator_model=str(tiny_llama), work_dir=tmp_path / "gen")
    assert res.mix["generated_answers"] == 3
    # a random model does not stop within 4 tokens: every answer is cut, and dropped for it
    cut = res.dropped.filter(pl.col("drop_reason") == "generation_truncated")
    assert cut.height == 3 and set(cut["source"]) == {str(src)}
    shards = sorted((tmp_path / "gen").glob("shard-*.parquet"))
    assert shards
    mtimes = [p.stat().st_mtime_ns for p in shards]
    again = build_sft_set(KEPT.head(4), cfg, generator_model=str(tiny_llama), work_dir=tmp_path / "gen")
    assert again.df["id"].to_list() == res.df["id"].to_list()
    assert [p.stat().st_mtime_ns for p in shards] == mtimes  # finished shards are not regenerated


def test_generated_answers_lose_their_chain_of_thought(tmp_path):
    src = tmp_path / "prompts.jsonl"
    src.write_text(json.dumps({"id": "q1", "prompt": "Say hello."}) + "\n" + json.dumps({"id": "q2", "prompt": "Say bye."}) + "\n")
    cfg = MergeConfig(non_reasoning=[MergeSource(path=str(src), category="writing", generate=True)], generator={"model": "any"})
    answers = {"q1": {"text": "<think>\nA greeting.\n</think>\n\nHello!", "finish_reason": "stop", "tokens": 9},
               "q2": {"text": "<think>\nbye", "finish_reason": "length", "tokens": 4}}
    res = build_sft_set(KEPT.head(3), cfg, answers=lambda rows: answers)
    nr = res.df.filter(pl.col("kind") == "non_reasoning")
    assert set(c[0]["content"] for c in nr["completion"]) == {"Hello!"}
    assert res.dropped.filter(pl.col("id") == "q2")["drop_reason"].to_list() == ["generation_truncated"]


def test_merge_recipe_section_validates():
    with pytest.raises(Exception, match="merge.generator.model is required"):
        recipe_from_dict({"name": "x", "merge": {"non_reasoning": [{"path": "p.jsonl", "generate": True}]}})
    with pytest.raises(Exception, match="needs a path"):
        recipe_from_dict({"name": "x", "merge": {"non_reasoning": [{"kind": "hf"}]}})
    with pytest.raises(Exception, match="negative weight"):
        recipe_from_dict({"name": "x", "merge": {"weights": {"non_reasoning": {"categories": {"writing": -1}}}}})
