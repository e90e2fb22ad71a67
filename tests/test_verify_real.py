"""Verification of real teacher output (issue 16 points 4-6): unfinished reasoning, answer formats seen in
R1-family traces, cons@k by equivalence. The cases are written here in our own words, modelled on what real
DeepSeek-R1 / QwQ / R1-Distill / s1.1 outputs look like; the measurement on the shared real traces is at the
end and skips when `../shared/real-traces` is absent. Fast: no models."""

from __future__ import annotations

import polars as pl
import pytest

from distill.verify.extract import answer_section, extract_final_answer, reasoning_unfinished
from distill.verify.judge import LLMJudge
from distill.verify.registry import get_verifier
from distill.verify.table import verify_table
from rl.rewards import Accuracy
from rl.templates import Template

math = get_verifier("math")
choice = get_verifier("multiple_choice")
as_json = get_verifier("json")

# --- point 4: reasoning that never closed -------------------------------------------------------------------

CUT = "Each box holds 8 pens and there are 5 boxes.\nSo the total is 5*8 = 40, and"


@pytest.mark.parametrize(
    "completion",
    [
        "<think>\n" + CUT,  # the case: the last number equals the gold
        "<think>\nSo the answer is \\boxed{40}. Wait, that assumed full boxes; let me redo it with the other "
        "reading of the question, where the fifth box is only half full, so",  # a box, then more reasoning
        "<think>\nthe final answer is probably 40, but wait, 5*8 = 40, and",  # an answer line cut mid-sentence
        "<think>\nLet me check: is 40 the answer? 5*8 = 40. Hmm, 40.",  # no explicit answer at all
        "<think>\n$5 \\cdot 8 = 40$",
        "<think>\nso <answer>40",  # an <answer> block that never closed
    ],
)
def test_unfinished_reasoning_without_a_final_answer_is_never_correct(completion):
    v = math(completion, "40")
    assert v.correct is False and v.reason == "unfinished_reasoning", v
    assert extract_final_answer(completion) is None and answer_section(completion) == ""


@pytest.mark.parametrize(
    "completion",
    [
        # s1.1 that never left its thinking phase but ended on a boxed answer (seen in real traces)
        "<think>\n9 eggs at $2 each make $18.\n\n**Final Answer**\n\\boxed{18}\nFinal Answer: She earns \\boxed{18} dollars.",
        "<think>\n16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n\n\\[\n\\boxed{18}\n\\]",
        "<think>\nSo 9 * 2 = 18.\nFinal Answer: 18",
        "<think>\n9 * 2 = 18 <answer>18</answer>",  # the R1-Zero template, answer tag without `</think>`
    ],
)
def test_unfinished_reasoning_that_ends_on_an_explicit_answer_is_judged(completion):
    assert reasoning_unfinished(completion)
    assert math(completion, "18").correct is True
    assert math(completion, "17").correct is False


def test_a_completion_without_think_tags_is_all_answer():
    """Non-thinking tasks and models (the demo's non-reasoning rows): no tags, the whole text is the answer."""
    assert math(CUT, "40").correct is True
    assert math("<think>\nshort\n</think>\n" + CUT, "40").correct is True  # closed: the final text is judged


def test_multiple_choice_and_json_apply_the_same_rule():
    cut = "<think>\nOption B matches the definition, so the answer is B, but"
    assert choice(cut, "B") == choice(cut + " let me check", "B")
    assert choice(cut, "B").correct is False and choice(cut, "B").reason == "unfinished_reasoning"
    assert choice("<think>\nB fits.\nAnswer: B", "B").correct is True
    assert as_json('<think>\nso {"answer": 40} fits, and', "40").correct is False
    assert as_json('<think>\nsure\n</think>\n{"answer": 40}', "40").correct is True


def test_prefilled_think_that_never_closed_in_a_table():
    """R1's template prefills `<think>\\n`: the completion then holds no opening tag, and the trace keeps the
    prefill in its column; a row without that column (a non-thinking task) reads the same text as an answer."""
    df = pl.DataFrame({"completion": [CUT, "5*8 = 40\n</think>\n\\boxed{40}"], "answer": ["40", "40"]})
    plain = verify_table(df)
    assert plain["correct"].to_list() == [True, True]
    prefilled = verify_table(df.with_columns(pl.lit("<think>\n").alias("prefill")))
    assert prefilled["correct"].to_list() == [False, True]
    assert prefilled["verify_reason"].to_list()[0] == "unfinished_reasoning"


def test_rl_accuracy_reward_gives_no_credit_to_unfinished_reasoning():
    prefilled = Template("chat", "boxed", prefill="<think>\n")
    assert Accuracy(prefilled)([CUT], answer=["40"]) == [0.0]
    assert Accuracy(prefilled)(["5*8 = 40\n</think>\n\\boxed{40}"], answer=["40"]) == [1.0]
    assert Accuracy(Template("chat", "boxed"))([CUT], answer=["40"]) == [1.0]  # no prefill, no think: an answer


def test_the_judge_is_not_shown_unfinished_reasoning_as_an_answer():
    judge = LLMJudge(engine=None)
    assert judge.answer_of("<think>\n" + CUT) is None
    assert judge.answer_of("<think>\nx\n</think>\nIt is forty.") == "It is forty."
