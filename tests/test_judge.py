"""distill.verify.judge: the strict judge-reply parser, prompt construction, the rules-then-judge cascade and its
disagreement counts (with a scripted engine), and the same plumbing on a real engine over a tiny random
model (whose replies are noise: they must come back as no verdict, never as a guess)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from distill.engines.base import Completion, Result, SamplingParams
from distill.verify.judge import Cascade, LLMJudge, parse_judge_output, sampled
from distill.config.verify import VerifyConfig
from distill.verify.registry import Verdict, get_verifier
from distill.verify.math import verify_math
from distill.verify.table import verify_table_with_stats, verify_with_config


class ScriptedEngine:
    """An Engine whose reply to each request is decided by `reply(user_message) -> text`."""

    name = "scripted"

    def __init__(self, reply, fail: bool = False):
        self.reply = reply
        self.fail = fail
        self.calls: list[tuple[list, SamplingParams]] = []

    def generate(self, requests, params):
        self.calls.append((list(requests), params))
        if self.fail:
            raise RuntimeError("server down")
        return [Result(r.request_id, 10, [Completion(self.reply(r.messages[-1]["content"]), "stop", 1)]) for r in requests]

    def close(self):
        pass


# --- parsing the judge's reply -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("yes", True),
        ("No", False),
        ("Yes.", True),
        ("  **NO**  \n", False),
        ("`yes`", True),
        ('"No."', False),
        ("\\boxed{yes}", True),
        ("<think>\nThe reference is 1/2, the student wrote 0.5: the same.\n</think>\nyes", True),
        ("<think>\nclose, but 0.333 is not 1/3\n</think>\n\nNo.", False),
        ("The answers differ in sign.\nVerdict: no", False),
        ("Both are 4.\n**Verdict:** Yes", True),
        ("Final verdict: yes", True),
        # no verdict: never guessed
        ("", None),
        (None, None),
        ("Yes, they are equivalent.", None),  # more than one word and no verdict line
        ("yes or no", None),
        ("Maybe", None),
        ("I think yes", None),
        ("Verdict: yes\nActually, on reflection, verdict: no", None),  # changed its mind
        ("Verdict: yes\nbecause 2 = 2", None),  # the verdict must close the reply
        ("Verdict: perhaps", None),
        ("<think>\nhmm, the reference says", None),  # still thinking (max_tokens ran out)
        ("<think>a</think>yes</think>no", None),
        ("<think>\nyes\n</think>\n", None),  # the verdict inside the think block does not count
    ],
)
def test_parse_judge_output(text, expected):
    assert parse_judge_output(text) is expected


# --- the judge ---------------------------------------------------------------------------------------------


def test_prompt_shows_reference_extracted_answer_and_problem():
    judge = LLMJudge(ScriptedEngine(lambda m: "yes"), max_chars=50, system_prompt="You grade answers.")
    completion = "<think>\nlong reasoning with \\boxed{7}\n</think>\nSo the answer is \\boxed{\\text{Paris}}."
    assert judge.answer_of(completion) == "\\text{Paris}"  # the final answer, not the think block's
    msgs = judge.messages(judge.answer_of(completion), "Paris", problem="What is the capital of France? " * 5)
    assert msgs[0] == {"role": "system", "content": "You grade answers."}
    user = msgs[1]["content"]
    assert "Reference answer: Paris" in user and "Student's final answer: \\text{Paris}" in user
    assert "Problem: What is the capital of France?" in user and len(user.split("Problem: ")[1].split("\n")[0]) <= 50
    assert user.rstrip().endswith("yes or no.")
    # no extractable answer: the final text's tail is shown instead
    assert judge.answer_of("</think>\nI believe it is the city of light") == "I believe it is the city of light"
    assert judge.answer_of("</think>") is None


def test_judge_verdicts_and_one_greedy_batched_call():
    engine = ScriptedEngine(lambda m: "yes" if "Paris" in m.split("Student")[1] else "Berlin? Hmm.")
    judge = get_verifier("judge", engine=engine, max_tokens=7)
    completions = ["</think>\\boxed{\\text{Paris}}", "</think>\\boxed{\\text{Lyon}}", "</think>\\boxed{Paris}", "</think>", "</think>x"]
    refs = ["Paris", "Paris", None, "Paris", "Paris"]
    verdicts, stats = judge.verify_batch(completions, refs, prompts=["Capital of France?"] * 5)
    assert verdicts == [
        Verdict(True, "judge_correct"),
        Verdict(None, "judge_unparseable"),
        Verdict(None, "no_reference"),
        Verdict(None, "no_final_answer"),
        Verdict(None, "judge_unparseable"),
    ]
    assert stats == {"judge": {"asked": 3, "unparseable": 2}}
    assert len(engine.calls) == 1 and len(engine.calls[0][0]) == 3  # one call, only rows that need it
    params = engine.calls[0][1]
    assert params.temperature == 0 and params.n == 1 and params.max_tokens == 7
    assert judge("</think>\\boxed{\\text{Paris}}", "Paris") == Verdict(True, "judge_correct")


def test_engine_failure_leaves_rows_without_a_verdict():
    judge = LLMJudge(ScriptedEngine(lambda m: "yes", fail=True))
    [verdict] = judge.judge_many(["</think>\\boxed{1}"], ["1"])
    assert verdict.correct is None and verdict.reason.startswith("error: judge: RuntimeError")


# --- the cascade -------------------------------------------------------------------------------------------

# rows: (completion, reference) with what the rules say about them
ROWS = [
    ("</think>\\boxed{4}", "4"),  # rules: correct
    ("</think>\\boxed{5}", "4"),  # rules: incorrect
    ("</think>\\boxed{\\frac{1}{2}}", "0.5"),  # rules: correct
    ("</think>\\boxed{\\text{Paris}}", "Paris"),  # rules: unparseable_reference -> judge
    ("</think>\\boxed{\\text{Rome}}", "Paris"),  # rules: unparseable_reference -> judge
    ("</think>\\boxed{3}", None),  # no_reference: never asked
    ("</think>I give up.", "4"),  # no_final_answer: never asked
    ("</think>\\boxed{9}", "lorem ipsum"),  # unparseable_reference -> judge, which gives no verdict
]


def _oracle(message: str) -> str:
    """A judge that says yes when the student's answer contains the reference text, except it disagrees
    with the rules about 1/2 vs 0.5, and rambles about lorem ipsum."""
    ref = message.split("Reference answer: ")[1].split("\n")[0]
    answer = message.split("Student's final answer: ")[1].split("\n")[0]
    if ref == "lorem ipsum":
        return "It depends on what lorem ipsum means."
    if ref == "0.5":
        return "no"
    return "yes" if ref in answer else "no"


def test_cascade_asks_the_judge_only_where_rules_cannot_and_counts_disagreements():
    engine = ScriptedEngine(_oracle)
    cascade = get_verifier("math+judge", engine=engine, check_fraction=1.0)
    assert isinstance(cascade, Cascade) and cascade.rules is verify_math
    verdicts, stats = cascade.verify_batch([c for c, _ in ROWS], [r for _, r in ROWS])
    assert verdicts == [
        Verdict(True, "correct"),
        Verdict(False, "incorrect"),
        Verdict(True, "correct"),  # the rules keep the last word where they judged
        Verdict(True, "judge_correct"),
        Verdict(False, "judge_incorrect"),
        Verdict(None, "no_reference"),
        Verdict(None, "no_final_answer"),
        Verdict(None, "unparseable_reference"),  # the judge rambled: the rules' verdict stays
    ]
    j = stats["judge"]
    assert (j["rows"], j["rules_judged"], j["asked"], j["decided"], j["decided_correct"], j["unparseable"]) == (8, 3, 3, 2, 1, 1)
    assert (j["cross_checked"], j["compared"], j["agreements"], j["disagreements"]) == (3, 3, 2, 1)
    assert j["rules_correct_judge_incorrect"] == 1 and j["rules_incorrect_judge_correct"] == 0
    assert j["disagreement_rate"] == round(1 / 3, 4) and j["disagreement_rows"] == [2]
    asked = [r.messages[-1]["content"] for r in engine.calls[0][0]]
    assert len(engine.calls) == 1 and len(asked) == 6 and not any("Reference answer: 4\nStudent's final answer: I give up" in a for a in asked)


def test_cascade_without_cross_checks_and_a_failing_judge():
    cascade = get_verifier("math+judge", engine=ScriptedEngine(_oracle), check_fraction=0.0)
    _, stats = cascade.verify_batch([c for c, _ in ROWS], [r for _, r in ROWS])
    assert stats["judge"]["cross_checked"] == 0 and stats["judge"]["disagreement_rate"] is None
    down = get_verifier("math+judge", engine=ScriptedEngine(_oracle, fail=True), check_fraction=1.0)
    verdicts, stats = down.verify_batch([c for c, _ in ROWS], [r for _, r in ROWS])
    assert verdicts == [verify_math(c, r) for c, r in ROWS]  # the rules' verdicts, untouched
    assert stats["judge"]["errors"] == 6 and stats["judge"]["decided"] == 0
    assert down(*ROWS[3]) == Verdict(None, "unparseable_reference")
    with pytest.raises(ValueError, match="check_fraction"):
        Cascade(verify_math, LLMJudge(None), check_fraction=1.5)


def test_cross_check_sample_is_stable_and_near_its_fraction():
    rows = [(f"</think>\\boxed{{{i}}}", str(i % 7)) for i in range(2000)]
    picked = [sampled(0.1, 0, c, r) for c, r in rows]
    assert 150 < sum(picked) < 250
    assert picked == [sampled(0.1, 0, c, r) for c, r in rows]  # same rows every run
    assert picked != [sampled(0.1, 1, c, r) for c, r in rows]  # the seed redraws
    assert not any(sampled(0.0, 0, c, r) for c, r in rows) and all(sampled(1.0, 0, c, r) for c, r in rows)


def test_verify_table_with_a_cascade_records_the_counts():
    df = pl.DataFrame({"prompt": ["q"] * len(ROWS), "completion": [c for c, _ in ROWS], "answer": [r for _, r in ROWS]})
    out, stats = verify_table_with_stats(df, "math+judge", engine=ScriptedEngine(_oracle), check_fraction=1.0, workers=1)
    assert out["correct"].to_list() == [True, False, True, True, False, None, None, None]
    assert stats["judge"]["disagreements"] == 1
    with pytest.raises(ValueError, match="judge.model"):
        VerifyConfig(verifier="math+judge")


# --- a real engine on a tiny random model ------------------------------------------------------------------


def test_cascade_with_a_real_engine(tiny_llama):
    """The tiny model's replies are noise; what must hold is the plumbing: one request per row that needs
    the judge, every reply either parsed strictly or counted as unparseable, the counts consistent."""
    cfg = VerifyConfig(verifier="math+judge", judge={"model": str(tiny_llama), "engine": "transformers", "max_tokens": 8, "check_fraction": 1.0})
    df = pl.DataFrame({"prompt": ["q"] * len(ROWS), "completion": [c for c, _ in ROWS], "answer": [r for _, r in ROWS]})
    out, stats = verify_with_config(df, cfg)
    j = stats["judge"]
    assert j["asked"] == 3 and j["cross_checked"] == 3
    assert j["decided"] + j["unparseable"] + j["errors"] == j["asked"] + j["cross_checked"]
    assert j["compared"] == j["agreements"] + j["disagreements"] <= j["cross_checked"]
    rules = [verify_math(c, r) for c, r in ROWS]
    for (c, r), rule, correct, reason in zip(ROWS, rules, out["correct"], out["verify_reason"]):
        if rule.correct is not None or rule.reason in ("no_reference", "no_final_answer"):
            assert (correct, reason) == (rule.correct, rule.reason)  # rows the judge may not change
        else:
            assert reason in ("judge_correct", "judge_incorrect", rule.reason)


def test_cli_verify_with_a_judge(tiny_llama, tmp_path, capsys):
    from distill.cli import main

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"prompt": "q", "completion": c, "answer": r}) + "\n" for c, r in ROWS))
    argv = ["verify", "--input", str(src), "--output", str(tmp_path / "out.parquet"), "--verifier", "math+judge"]
    assert main(argv) == 2 and "judge.model" in capsys.readouterr().err
    assert main(argv + ["--judge-model", str(tiny_llama), "--judge-engine", "transformers"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["rows"] == len(ROWS) and counts["judge"]["asked"] == 3
    assert pl.read_parquet(tmp_path / "out.parquet").height == len(ROWS)
