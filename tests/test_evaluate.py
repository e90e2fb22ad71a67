import polars as pl

from distill.evaluate import score_samples


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
