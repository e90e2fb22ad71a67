"""Verification of real teacher output (issue 16 points 4-6): unfinished reasoning, answer formats seen in
R1-family traces, cons@k by equivalence. The cases are written here in our own words, modelled on what real
DeepSeek-R1 / QwQ / R1-Distill / s1.1 outputs look like; the measurement on the shared real traces is at the
end and skips when `../shared/real-traces` is absent. Fast: no models."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

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


# --- point 6: answer formats of real teacher output ---------------------------------------------------------


def _closed(final: str) -> str:
    return "<think>\nWorking through it.\n</think>\n\n" + final


@pytest.mark.parametrize(
    "final,gold,expected",
    [
        # R1-Zero style `<answer>` blocks: the whole block is the answer, not its last number
        ("<answer>2 × 181</answer>", "2 × 181", True),
        ("<answer>2 × 181</answer>", "2 \\times 181", True),
        ("<answer>2·181</answer>", "2 × 181", True),
        ("<answer>2 × 180</answer>", "2 × 181", False),
        # complex numbers
        ("<answer>-3.0 - 3.0i</answer>", "-3.0 - 3.0i", True),
        ("<answer>-3 - 3i</answer>", "-3.0 - 3.0i", True),
        ("<answer>-3 + 3i</answer>", "-3.0 - 3.0i", False),
        # unordered lists of roots
        ("<answer>-0.2339, 0.2339</answer>", "-0.2339, 0.2339", True),
        ("<answer>0.2339, -0.2339</answer>", "-0.2339, 0.2339", True),
        ("<answer>0.2339</answer>", "-0.2339, 0.2339", False),
        # a value rounded as the prompt asked (3 significant figures), against a gold printed at full float
        # precision (reasoning-gym's power_function)
        ("<answer>-2.43e-19</answer>", "-2.4311837658723497e-19", True),
        ("<answer>-2.44e-19</answer>", "-2.4311837658723497e-19", False),
        ("<answer>-2.43e-18</answer>", "-2.4311837658723497e-19", False),
        ("The answer is $-2.43 \\times 10^{-19}$.", "-2.4311837658723497e-19", True),
        ("<answer>-1.37e-3</answer>", "-0.0013674811612376526", True),
        ("\\boxed{3.14}", "3.141592653589793", True),
        ("\\boxed{3.15}", "3.141592653589793", False),
        ("\\boxed{3.14159}", "3.14", True),  # a gold given rounded
        # a gold that states its precision is not met by a coarser answer (reasoning-gym's decimal_chain_sum)
        ("<answer>-2.20</answer>", "-2.2017", False),
        ("<answer>-2.2017</answer>", "-2.2017", True),
        ("<answer>15.88</answer>", "15.8839006989", False),
        # Python powers (reasoning-gym's polynomial and integration answers), spaced or not
        ("<answer>-184*y**9+3956*y**8</answer>", "-184*y**9 + 3956*y**8", True),
        ("<answer>17*X**5/2-7*X**4/6+C</answer>", "17*X**5/2 - 7*X**4/6 + C", True),
        ("<answer>-X**10/2 + 7*X**9/4 + C</answer>", "x**9/2 - 7*x**6/9 + C", False),
        ("\\boxed{106.12}", "106", False),  # an integer gold is exact (MGSM: simple interest, not compound)
        ("\\boxed{106}", "106.12", False),
        # times of day / durations
        ("<answer>05:23:10</answer>", "05:23:10", True),
        ("<answer>5:23:10</answer>", "05:23:10", True),
        ("<answer>05:23:11</answer>", "05:23:10", False),
        ("The meeting ends at \\boxed{14:05}.", "14:05", True),
        ("<answer>46 days, 02:21</answer>", "46 days, 02:21", True),
        ("<answer>02:01</answer>", "46 days, 02:21", False),
        ("<answer>46 days, 2:21</answer>", "46 days, 02:21", True),
        # degrees
        ("\\boxed{90}", "90^\\circ", True),
        ("\\boxed{90^\\circ}", "90", True),
        ("So the angle is 90°.", "90^\\circ", True),
        ("\\boxed{66}", "90^\\circ", False),
        # a text answer stated unboxed, against a \text{} gold
        ("The answer is Evelyn.", "\\text{Evelyn}", True),
        ("**Answer:** Evelyn", "\\text{Evelyn}", True),
        ("The answer is Briana.", "\\text{Evelyn}", False),
        ("\\boxed{\\text{evelyn}}", "\\text{Evelyn}", True),
        # an interval against an inequality, either way round
        ("\\boxed{(-\\infty, 2]}", "x \\le 2", True),
        ("\\boxed{x \\le 2}", "(-\\infty, 2]", True),
        ("\\boxed{x < 2}", "(-\\infty, 2]", False),
        # answers stated in the prompt's language
        ("La réponse est 18.", "18", True),
        ("Die Antwort ist 18 Dollar.", "18", True),
        ("最终答案：45,000美元。", "45000", True),
        ("所以答案是 18 美元。", "18", True),
        ("**Ответ:** 52 500 долларов", "52500", True),
        ("Jibu: 18", "18", True),
        ("La respuesta es 17.", "18", False),
    ],
)
def test_real_answer_formats(final, gold, expected):
    v = math(_closed(final), gold)
    assert v.correct is expected, (final, gold, v)


@pytest.mark.parametrize(
    "answer",
    ["2 × 181", "-3.0 - 3.0i", "-0.2339, 0.2339", "05:23:10", "-2.43e-19", "x = 3", "[1, 2, 3]", "\\text{Evelyn}",
     "90^\\circ", "  12  ", "abc def", "see the solution", "\\frac{", "yes"],
)
@pytest.mark.parametrize("wrap", ["<answer>{}</answer>", "\\boxed{{{}}}", "The answer is {}", "{}"])
def test_an_answer_identical_to_its_gold_is_never_incorrect(answer, wrap):
    """(after trimming whitespace). Bare prose and unparseable references stay unverifiable (None), which is
    never incorrect: no rule judges free text, the judge of `math+judge` does."""
    v = math(_closed(wrap.format(answer)), answer)
    assert v.correct is not False, (wrap, answer, v)
    if answer not in ("abc def", "see the solution", "\\frac{", "yes"):
        assert v.correct is True, (wrap, answer, v)


def test_a_text_gold_is_not_matched_by_the_last_number_of_a_sentence():
    """A real DeepSeek-reasoner answer names the winner in prose after listing the others' speeds: the last
    number (another student's speed) is no answer to "who?"; without a stated answer it is unverifiable."""
    final = "- Debra: 2.8 / 5.6 = 0.5\n- Angela: 1.4 / 6.8 ≈ 0.21\n\nThus, Evelyn's average speed is the largest."
    assert math(_closed(final), "\\text{Evelyn}") == math(_closed(final.replace("Evelyn", "Carla")), "\\text{Evelyn}")
    assert math(_closed(final), "\\text{Evelyn}").correct is None


@pytest.mark.parametrize(
    "final,letter",
    [
        # how R1 / QwQ / s1.1 state a choice when the prompt did not ask for an `Answer: X` line
        ("The correct answer is **B: IMF**.\n\n**Explanation:** the two Bretton Woods bodies are ...", "B"),
        ("...so the iris coating contracts.\n\n**C. The iris coating stays contracted**", "C"),
        ("সুতরাং, সঠিক উত্তরটি হলো **C. \\( 10^{12} \\, \\text{Hz} \\)**।", "C"),
        ("**উত্তর:** B", "B"),
        ("সঠিক উত্তর **A**।", "A"),
        ("正解: B. 社内コミュニケーション", "B"),
        ("**Answer:** C. 有限理性 (Limited Rationality)", "C"),
        ("**Answer:** D (Ellipse)", "D"),
        ("**Answer:** **C. Henry Ford**\n\nFord stands out for ...", "C"),
        ("**Correct Option: B (30 N)**", "B"),
        ("...large-scale works point to organised societies, making **B** the correct answer.", "B"),
        ("Thus the solution is -2 < x < 1, which corresponds to option **D**.", "D"),
        ("The correct answer is option C: Juu zaidi angani (higher in the sky).", "C"),
        ("Thus, the correct answer is **D. Handyside v UK (1976)**.\n\n\\boxed{D}", "D"),
        # an early `Final Answer: B` line revised later to a boxed A: the last statement wins
        ("Final Answer: B. Standard deviation\n\nOn reflection the mean is the odd one out.\n\nThe correct answer is \\boxed{A}.", "A"),
        # musing about another letter before the final statement
        ("If the question had a typo the answer is B, but A fits.\n\nThe correct answer is **A: the poem**.", "A"),
        ("**সঠিক উত্তর:** [B]", "B"),
        ("...so the proton keeps its path without acceleration. Answer: **C**.", "C"),
        ("The answer is I think B, or maybe not.", None),  # "I" is a pronoun here
        ("Answer: A bit more work is needed.", None),
    ],
)
def test_multiple_choice_in_real_phrasings(final, letter):
    from distill.verify.answers import extract_choice

    assert extract_choice(_closed(final)) == letter


# --- measured on the shared real traces (skips without them) ------------------------------------------------

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real-traces" / "traces.jsonl"
LABELS = Path(__file__).parent / "data" / "real_trace_verdicts.jsonl"


@pytest.mark.skipif(not REAL.is_file(), reason="../shared/real-traces/traces.jsonl is absent")
def test_verdicts_agree_with_labels_read_by_eye_on_real_traces():
    """106 real R1-family rows with a gold answer, labelled by reading whether the stated final answer is
    right (100 drawn at random, 6 whose verdict this change moved). At 5639c99: 0.670 on the random draw
    (multiple-choice answers not written `Answer: X` were all unverifiable) and 3 of 6."""
    labels = {lab["id"]: lab for lab in map(json.loads, LABELS.read_text().splitlines())}
    traces = {r["id"]: r for r in map(json.loads, REAL.read_text().splitlines()) if r["id"] in labels}
    agree = Counter()
    for i, lab in labels.items():
        gold = str(traces[i]["gold"]).strip()
        verifier = choice if len(gold) == 1 and gold.isalpha() else math
        verdict = verifier(traces[i]["completion"], gold)
        agree[lab["sample"], (verdict.correct is True) == lab["model_correct"]] += 1
        if not lab["model_correct"]:
            assert verdict.correct is not True, (i, verdict)  # never a wrong or missing answer passed as right
    assert agree["random", True] >= 97, agree
    assert agree["changed", True] >= 4, agree


# --- point 5: cons@k votes over equal answers ---------------------------------------------------------------


def _eval_rows(pid: str, finals: list[str], gold: str, **extra) -> list[dict]:
    return [{"prompt_id": pid, "completion": _closed(f), "answer": gold, **extra} for f in finals]


def test_cons_at_k_groups_answers_the_verifier_finds_equal():
    """Three ways of writing one half out-vote two sevens: the majority answer is 1/2, which is right. At
    5639c99 the raw strings voted, so `7` (2 votes) beat each spelling of one half (1 vote each)."""
    from distill.evaluate.evaluate import score_samples

    finals = ["\\boxed{\\frac12}", "\\boxed{7}", "The answer is 1/2.", "\\boxed{7}", "<answer>0.5</answer>"]
    df = verify_table(pl.DataFrame(_eval_rows("p", finals, "\\frac{1}{2}") + _eval_rows("q", ["\\boxed{3}"] * 2 + ["\\boxed{2}"] * 3, "3")))
    assert df["correct"].to_list() == [True, False, True, False, True, True, True, False, False, False]
    r = score_samples(df, k=5)
    assert r["cons@5"] == 0.5  # p: the half wins (right); q: 2 wins (wrong)


def test_cons_at_k_with_the_real_formats_and_a_prefill():
    from distill.evaluate.consensus import clusters, equivalence, final_answer, majority

    same = equivalence("math")
    answers = ["2 × 181", "362", "2 \\times 181", "181 \\cdot 2", "-3 - 3i", "-3.0 - 3.0i", "x \\le 2", "(-\\infty, 2]", None]
    assert clusters(answers, same) == [[0, 1, 2, 3], [4, 5], [6, 7]]
    assert majority(["\\dfrac{1}{2}", "$\\frac{1}{2}$", "0.5", "1", "1"], same) == [0, 1, 2]
    assert majority([None, None], same) == []
    # unfinished reasoning behind a prefilled `<think>` votes for nothing, whatever its last number
    assert final_answer("5*8 = 40, and", "math", prefill="<think>\n") is None
    assert final_answer("5*8 = 40\n</think>\n\\boxed{40}", "math", prefill="<think>\n") == "40"
    assert final_answer(_closed("**Answer:** C. 有限理性"), "multiple_choice") == "C"


def test_cons_at_k_cost_is_bounded():
    """k = 64 answers that are all different: the equivalence checks stop at the cap, and every answer
    still lands in exactly one cluster."""
    from distill.evaluate.consensus import MAX_CHECKS, clusters

    calls = []

    def same(a, b):
        calls.append((a, b))
        return False

    found = clusters([str(i) for i in range(64)], same)
    assert len(calls) == MAX_CHECKS
    assert sorted(i for c in found for i in c) == list(range(64))
    assert clusters(["1/2"] * 64, same) == [list(range(64))] and len(calls) == MAX_CHECKS  # one string: no check


def test_unfinished_reasoning_with_an_answer_heading_reads_the_next_line():
    assert choice("<think>\nB fits best.\nAnswer:\nB", "B").correct is True
    assert math("<think>\n9 * 2 = 18.\n\n**Final Answer**\nThe answer is 18", "18").correct is True
    assert math("<think>\n9 * 2 = 18.\n\n**Final Answer**\n", "18").reason == "unfinished_reasoning"
    assert math("<think>\n9 * 2 = 18.\nAnswer:\nso the total is 18, and", "18").reason == "unfinished_reasoning"


@pytest.mark.skipif(not REAL.is_file(), reason="../shared/real-traces is absent")
def test_unfinished_reasoning_matches_the_shared_labels():
    """The shared labels (read by people, with their own rules: "thinking never closes and no final answer")
    on every labelled row whose think block never closed: no answer exactly where they say unfinished."""
    labels = [json.loads(line) for line in (REAL.parent / "labels.jsonl").read_text().splitlines() if line.strip()]
    traces = {r["id"]: r["completion"] for r in map(json.loads, REAL.read_text().splitlines())}
    open_rows = [(lab, traces[lab["id"]]) for lab in labels if reasoning_unfinished(traces[lab["id"]])]
    assert len(open_rows) >= 10
    for lab, completion in open_rows:
        if "unfinished" in lab["categories"]:
            assert answer_section(completion) == "", lab["note"]
    # One row the labels do not call unfinished ends on a sentence about the method after an unboxed
    # "= 37,500" in its reasoning: no explicit final answer for the verifier (and it is wrong either way).
    found = [answer_section(c) != "" for lab, c in open_rows if "unfinished" not in lab["categories"]]
    assert sum(found) >= len(found) - 1, found
