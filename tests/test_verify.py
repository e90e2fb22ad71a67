"""distill.verify: the shared verifier registry and the math verifier (fast; no models)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest

from distill.verify import (
    VERIFIERS,
    Verdict,
    extract_final_answer,
    get_verifier,
    register,
    verify_file,
    verify_math,
    verify_table,
)

CASES = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "math_verify_cases.jsonl").read_text().splitlines()
    if line.strip()
]


def test_case_file_is_complete():
    assert len(CASES) == 59
    assert len({c["id"] for c in CASES}) == 59


# Math-Verify's own regression cases, wrapped as completions with a closed think block.
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_math_verify_regression_cases(case):
    verdict = verify_math(case["completion"], case["answer"])
    assert verdict.correct == case["expected"], verdict


# --- final answer extraction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>try 3</think>So the answer is \\boxed{42}.", "42"),
        ("reasoning with a prefilled <think>\n</think>\n\\boxed{4}", "4"),
        ("<think>it is \\boxed{7}</think>The final answer is \\boxed{8}.", "8"),
        ("<think>unclosed, \\boxed{3}", "3"),  # no closed block: the whole completion is read
        ("</think>\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),  # balanced braces
        ("</think>\\fbox{12}", "12"),
        ("</think>First \\boxed{200}, then more. The final answer is $10,455$. I hope it is correct.", "10,455"),
        ("</think>Answer: 7", "7"),
        ("</think>We get $x = 2$ and so $y = 5$", "y = 5"),
        ("</think>So it is 1,000 in total", "1,000"),
        ("</think>\\boxed{}", None),
        ("</think>I do not know.", None),
        ("", None),
    ],
)
def test_extract_final_answer(completion, expected):
    assert extract_final_answer(completion) == expected


# --- the math verifier -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, reference, correct, reason",
    [
        ("<think>2+2 is 4</think>\n\nThe answer is $\\boxed{4}$.", "4", True, "correct"),
        ("<think>2+2 is 4</think>\n\nThe answer is $\\boxed{5}$.", "4", False, "incorrect"),
        # prefilled think: only `</think>` appears in the completion
        ("2+2 is 4, so\n</think>\n\\boxed{4}", "4", True, "correct"),
        # the think block says one thing, the final answer another: the final answer counts
        ("<think>maybe \\boxed{7}</think>The answer is \\boxed{8}.", "8", True, "correct"),
        ("<think>maybe \\boxed{7}</think>The answer is \\boxed{8}.", "7", False, "incorrect"),
        ("<think>it is \\boxed{7}</think>I am not sure.", "7", None, "no_final_answer"),
        # no closed think block: the answer is still scored (curation checks the format)
        ("<think>long reasoning that ends with \\boxed{12}", "12", True, "correct"),
        ("Straight to it: \\boxed{12}", "12", True, "correct"),
        ("", "3", None, "no_final_answer"),
        ("</think>", "3", None, "no_final_answer"),
        ("</think>The answer is ???", "3", None, "unparseable_answer"),
        ("</think>\\boxed{3}", None, None, "no_reference"),
        ("</think>\\boxed{3}", "  ", None, "no_reference"),
        # an unparseable reference never makes anything correct, even the same text (open-r1#293)
        ("</think>\\boxed{\\frac{}", "\\frac{", None, "unparseable_reference"),
        ("</think>\\boxed{lorem ipsum}", "lorem ipsum", None, "unparseable_reference"),
        ("</think>lorem ipsum", "lorem ipsum", None, "unparseable_reference"),
        # equivalence, not string equality
        ("</think>\\boxed{0.5}", "1/2", True, "correct"),
        ("</think>\\boxed{\\frac{1}{2}}", "0.5", True, "correct"),
        ("</think>\\boxed{\\dfrac{10}{9}}", "10/9", True, "correct"),
        ("</think>\\boxed{1000}", "1,000", True, "correct"),
        ("</think>\\boxed{50\\%}", "50%", True, "correct"),
        ("</think>\\boxed{(x+1)^2}", "x^2+2x+1", True, "correct"),
        ("</think>\\boxed{[0, 1)}", "$[0,1)$", True, "correct"),
        ("</think>\\boxed{(0, 1]}", "$[0,1)$", False, "incorrect"),
        ("</think>\\boxed{\\{3, 1, 2\\}}", "\\{1,2,3\\}", True, "correct"),
        ("</think>\\boxed{(1, 2, 3)}", "(1,2,3)", True, "correct"),
        ("</think>\\boxed{(3, 2, 1)}", "(1,2,3)", False, "incorrect"),
        # values whose exact evaluation would never finish are refused, not hung on
        ("</think>\\boxed{9^{9^{9}}}", "5", None, "answer_too_large"),
        ("</think>\\boxed{(10^{10})!}", "5", None, "answer_too_large"),
        ("</think>\\boxed{2^{2023}-1}", "2^{2023}-1", True, "correct"),
    ],
)
def test_verify_math(completion, reference, correct, reason):
    assert verify_math(completion, reference) == Verdict(correct, reason)


def test_verify_math_long_epilogue_after_the_boxed_answer():
    # The boxed answer lies further back than the parser's window; it is still the one scored.
    completion = "</think>So $x = \\boxed{20}$.\n" + "Note: this assumes a fair coin. " * 150 + "Step 3 of 4."
    assert verify_math(completion, "20") == Verdict(True, "correct")


def test_verify_math_from_worker_threads():
    # math_verify's default timeouts use signal.alarm, which raises outside the main thread; Prefect runs
    # tasks in worker threads.
    jobs = [("</think>\\boxed{\\frac{1}{2}}", "0.5"), ("</think>\\boxed{3}", "4"), ("</think>\\boxed{[0,1)}", "[0,1)")]
    threads = set()

    def run(job):
        threads.add(threading.current_thread().name)
        return verify_math(*job)

    with ThreadPoolExecutor(max_workers=2) as pool:
        verdicts = list(pool.map(run, jobs * 4))
    assert threading.main_thread().name not in threads
    assert [v.correct for v in verdicts] == [True, False, True] * 4
    assert all(v.reason in ("correct", "incorrect") for v in verdicts)


# --- registry ----------------------------------------------------------------------------------------------


def test_registry():
    assert get_verifier("math") is verify_math
    assert VERIFIERS["math"] is verify_math
    with pytest.raises(ValueError, match=r"unknown verifier 'nope'.*math"):
        get_verifier("nope")
    with pytest.raises(ValueError, match="already registered"):
        register("math")(lambda completion, reference: Verdict(None, "x"))


# --- tables and files --------------------------------------------------------------------------------------


def _rows():
    return pl.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "sample_index": [0, 1, 2, 3],
            "completion": ["</think>\\boxed{4}", "</think>\\boxed{5}", "</think>no idea", None],
            "answer": ["4", "4", "4", "4"],
            "extra": [1.5, None, 2.5, 3.5],
        }
    )


def test_verify_table_keeps_rows_columns_and_types():
    df = _rows()
    out = verify_table(df)
    assert out.columns == df.columns + ["correct", "verify_reason"]
    assert out.drop("correct", "verify_reason").equals(df)
    assert out.schema["correct"] == pl.Boolean
    assert out.schema["verify_reason"] == pl.Utf8
    assert out["correct"].to_list() == [True, False, None, None]
    assert out["verify_reason"].to_list() == ["correct", "incorrect", "no_final_answer", "no_final_answer"]
    # a rerun replaces the verdict columns instead of duplicating them
    assert verify_table(out).columns == out.columns


def test_verify_table_answer_column_cases():
    df = pl.DataFrame({"completion": ["</think>\\boxed{42}", "</think>\\boxed{7}"], "answer": [42, None]})
    assert verify_table(df)["verify_reason"].to_list() == ["correct", "no_reference"]  # typed answers work
    out = verify_table(df.drop("answer"))
    assert out["verify_reason"].to_list() == ["no_reference", "no_reference"]
    assert out["correct"].null_count() == 2 and out.schema["correct"] == pl.Boolean
    custom = df.rename({"completion": "response", "answer": "gold"})
    assert verify_table(custom, completion_col="response", answer_col="gold")["correct"].to_list() == [True, None]
    with pytest.raises(ValueError, match="'completion'"):
        verify_table(df.drop("completion"))
    with pytest.raises(ValueError, match="unknown verifier"):
        verify_table(df, verifier="nope")


def test_verify_file_roundtrip(tmp_path):
    rows = _rows().to_dicts()
    src = tmp_path / "traces.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dst = tmp_path / "out" / "verified.parquet"

    counts = verify_file(src, dst)
    assert counts == {
        "rows": 4,
        "correct": 1,
        "incorrect": 1,
        "unverifiable": 2,
        "reasons": {"correct": 1, "incorrect": 1, "no_final_answer": 2},
    }
    out = pl.read_parquet(dst)
    assert out["id"].to_list() == ["a", "b", "c", "d"]
    assert out["correct"].to_list() == [True, False, None, None]
    assert out.schema["correct"] == pl.Boolean
    assert not [p for p in dst.parent.iterdir() if p.name.endswith(".tmp")]  # written atomically

    # parquet in, parquet out
    again = tmp_path / "again.parquet"
    assert verify_file(dst, again) == counts
    assert pl.read_parquet(again).equals(out)
