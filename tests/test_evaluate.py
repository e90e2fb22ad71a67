import json

import polars as pl
import pytest

from distill.verify.answers import extract_choice, extract_json_answer, gold_letter, render_prompt
from distill.evaluate.evaluate import evaluate_all, load_benchmark, mean_ci, paired_delta, score_samples, t_quantile
from distill.config.eval import EvalBenchmark, EvalConfig
from distill.config.recipe import recipe_from_dict
from distill.verify.registry import get_verifier


def test_pass_at_1_and_cons_at_k():
    # prompt a: 3 of 4 right (majority right); prompt b: 1 of 4 right, majority wrong
    rows = []
    for pid, answers, gold in [("a", ["5", "5", "5", "6"], "5"), ("b", ["7", "8", "8", "9"], "7")]:
        for a in answers:
            rows.append({"prompt_id": pid, "completion": f"\\boxed{{{a}}}", "correct": a == gold, "completion_tokens": 3})
    r = score_samples(pl.DataFrame(rows), k=4)
    assert r["pass@1"] == (0.75 + 0.25) / 2
    assert r["cons@4"] == 0.5
    assert r["n_prompts"] == 2 and r["k"] == 4 and r["n_samples"] == 8
    assert r["format_rate"] == 0.0  # no think blocks: reported, but the answers still count
    lo, hi = r["pass@1_ci95"]
    assert lo <= r["pass@1"] <= hi


def test_unverifiable_counts_as_not_correct():
    df = pl.DataFrame({"prompt_id": ["a", "a"], "completion": ["x", "\\boxed{1}"], "correct": [None, True], "completion_tokens": [1, 1]},
                      schema_overrides={"correct": pl.Boolean})
    r = score_samples(df, k=2)
    assert r["pass@1"] == 0.5 and r["unverifiable_rate"] == 0.5
    assert r["pass@1_ci95"] is None  # one prompt: no interval


def test_t_quantile_and_interval():
    for df, exact in [(1, 12.706), (2, 4.303), (3, 3.182), (9, 2.262), (31, 2.040), (1000, 1.962)]:
        assert abs(t_quantile(0.975, df) - exact) < 2e-3
    mean, ci = mean_ci([0.0, 1.0, 0.5, 0.5])
    half = 3.182 * (0.5 / 3) ** 0.5 / 2  # sd = sqrt(0.5/3), n = 4
    assert mean == 0.5 and ci == pytest.approx([0.5 - half, 0.5 + half], abs=2e-3)


def test_paired_delta():
    before = pl.DataFrame({"prompt_id": ["a", "b", "c", "d"], "pass_rate": [0.0, 0.25, 0.5, 0.5]})
    after = pl.DataFrame({"prompt_id": ["d", "c", "b", "a", "extra"], "pass_rate": [1.0, 0.5, 0.5, 0.25, 1.0]})
    d = paired_delta(before, after)
    diffs = [0.25, 0.25, 0.0, 0.5]  # a, b, c, d
    mean, ci = mean_ci(diffs)
    assert d["n_prompts"] == 4 and d["delta"] == pytest.approx(0.25) and d["ci95"] == ci
    assert d["before"] == pytest.approx(0.3125) and d["after"] == pytest.approx(0.5625)
    assert d["prompts_improved"] == 3 and d["prompts_worse"] == 0
    assert d["ci95"][0] < 0.25 < d["ci95"][1]


@pytest.mark.parametrize("text, letter", [
    ("Let me think.\nOption B looks right.\nAnswer: C", "C"),
    ("<think>Answer: A</think>\nSo the answer is:\n**Answer:** $D$", "D"),  # reads after </think>
    ("answer: b", "B"),
    ("The answer is (B).", "B"),  # loose form only when no Answer: line exists
    ("Answer: C\n...on reflection\nAnswer: A", "A"),  # the last line wins
    ("I cannot decide between A and B.", None),
])
def test_multiple_choice_parser(text, letter):
    assert extract_choice(text) == letter


def test_json_parser_and_verifiers():
    assert extract_json_answer('Work...\n```json\n{"answer": 42, "why": "x"}\n```') == 42
    assert extract_json_answer('{"answer": 1} then {"note": 2} and finally {"answer": "Paris"}') == "Paris"
    assert extract_json_answer('<think>{"answer": 3}</think> no json here') is None
    assert extract_json_answer('{"result": {"answer": 5}}', key="result") == {"answer": 5}
    js = get_verifier("json")
    assert js('{"answer": "  paris "}', "Paris").correct is True
    assert js('{"answer": 0.5}', "1/2").correct is False and js('{"answer": "1,000"}', "1000").correct is True
    assert js("no object", "1").correct is None
    mc = get_verifier("multiple_choice")
    assert mc("Answer: B", "B").correct is True and mc("Answer: B", "2").correct is False
    assert mc("nothing", "B").reason == "no_answer" and mc("Answer: B", "EF").reason == "unparseable_reference"
    assert gold_letter("(c)") == "C" and gold_letter("0") == "A"
    p = render_prompt("Q: {question}\n{choices}\nOne of {letters}. {\"answer\": x}", "2+2?", ["3", "4"])
    assert p == 'Q: 2+2?\nA) 3\nB) 4\nOne of AB. {"answer": x}'


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_benchmarks_from_local_files(tmp_path):
    mc = _write(tmp_path / "mc.jsonl", [
        {"q": "2 + 2 = ?", "options": ["3", "4", "5"], "gold": "4", "split": "test"},
        {"q": "Capital of France?", "options": ["Paris", "Rome"], "gold": 0, "split": "test"},
        {"q": "ignored", "options": ["x"], "gold": "A", "split": "train"},
    ])
    df = load_benchmark(EvalBenchmark(name="mc", kind="multiple_choice", source="file", path=mc, question_field="q", choices_field="options", answer_field="gold"))
    assert df.height == 2 and df["answer"].to_list() == ["B", "A"]
    assert "Answer: $LETTER" in df["prompt"][0] and "A) 3\nB) 4\nC) 5" in df["prompt"][0] and "one of ABC" in df["prompt"][0]
    js = _write(tmp_path / "js.jsonl", [{"problem": f"What is {i} * 2?", "answer": i * 2} for i in range(10)])
    df = load_benchmark(EvalBenchmark(name="js", kind="json", source="file", path=js, split="test", n=4, seed=1))
    assert df.height == 4 and '{"answer": <your answer>}' in df["prompt"][0]
    again = load_benchmark(EvalBenchmark(name="js", kind="json", source="file", path=js, n=4, seed=1))
    assert again["prompt_id"].to_list() == df["prompt_id"].to_list()  # the same items for the same spec
    with pytest.raises(ValueError, match=r"column 'question' is missing"):
        load_benchmark(EvalBenchmark(name="js", kind="math", source="file", path=js, question_field="question"))
    with pytest.raises(ValueError, match=r"row 0: answer 'maybe' is not a letter"):
        bad = _write(tmp_path / "bad.jsonl", [{"q": "x", "options": ["a", "b"], "gold": "maybe"}])
        load_benchmark(EvalBenchmark(name="b", kind="multiple_choice", source="file", path=bad, question_field="q", choices_field="options", answer_field="gold"))


def test_eval_section_validates():
    with pytest.raises(Exception, match="multiple_choice needs choices_field"):
        recipe_from_dict({"name": "x", "eval": {"benchmarks": [{"name": "g", "kind": "multiple_choice", "path": "p"}]}})
    with pytest.raises(Exception, match="must be unique"):
        recipe_from_dict({"name": "x", "eval": {"benchmarks": [{"name": "heldout", "path": "p"}]}})


def test_evaluate_all_writes_manifest_results_and_deltas(tiny_llama, tiny_qwen2, tmp_path):
    """Two real models on held-out prompts and a local benchmark with the transformers engine."""
    from functools import partial

    from distill.engines.factory import make_engine

    heldout = pl.DataFrame({"prompt_id": ["p1", "p2", "p3"], "prompt": ["What is 1 + 1?", "What is 2 + 5?", "What is 3 + 3?"],
                            "answer": ["2", "7", "6"]})
    mc = _write(tmp_path / "mc.jsonl", [{"problem": f"{i} + 1 = ?", "choices": [str(i), str(i + 1)], "answer": 1} for i in range(3)])
    cfg = EvalConfig(engine="transformers", k=2, max_tokens=6, temperature=0.8,
                     benchmarks=[EvalBenchmark(name="mc", kind="multiple_choice", source="file", path=mc, choices_field="choices")])
    models = {"student_before": (str(tiny_llama), "tiny-llama"), "student_after": (str(tiny_qwen2), "tiny-qwen2")}
    results, deltas, manifest = evaluate_all(
        models, cfg, tmp_path / "eval", heldout=heldout, system_prompt="Be brief.",
        engine_factory=lambda path: partial(make_engine, "transformers", path, seed=0), pairs={"s": ("student_before", "student_after")},
    )
    for key in models:
        r = results[key]
        assert r["benchmark"] == "heldout" and r["n_prompts"] == 3 and r["k"] == 2 and r["n_samples"] == 6
        assert set(r["benchmarks"]) == {"heldout", "mc"} and r["benchmarks"]["mc"]["n_prompts"] == 3
    d = deltas["s"]["heldout"]
    assert d["n_prompts"] == 3 and d["delta"] == pytest.approx(d["after"] - d["before"], abs=1e-4)
    on_disk = json.loads((tmp_path / "eval" / "eval_manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    for key in ("engine", "engine_version", "dtype", "seed", "n", "temperature", "top_p", "max_tokens", "system_prompt"):
        assert key in manifest
    assert manifest["engine"] == "transformers" and manifest["engine_version"][0].startswith("transformers ")
    assert manifest["n"] == 2 and manifest["temperature"] == 0.8 and manifest["max_tokens"] == 6
    assert "Answer: $LETTER" in manifest["benchmarks"]["mc"]["prompt_template"] and manifest["benchmarks"]["mc"]["verifier"] == "multiple_choice"
    assert manifest["models"]["student_before"]["dtype"] == "float32" and manifest["models"]["student_before"]["chat_template_sha256"]
    assert set(manifest["results"]["student_after"]) == {"heldout", "mc"} and "pass@1_ci95" in manifest["results"]["student_after"]["mc"]
    assert manifest["deltas"]["s"]["mc"]["delta"] == deltas["s"]["mc"]["delta"]
