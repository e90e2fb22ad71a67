"""distill.verify: the shared verifier registry, the math and code verifiers, tables (fast; no models)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest

from distill.verify.sandbox import Limits, SandboxError
from distill.verify.registry import FACTORIES, VERIFIERS, Verdict, get_verifier, register
from distill.verify.code import CodeVerifier, extract_code, make_code_verifier, outputs_match, parse_code_tests
from distill.verify.extract import extract_final_answer
from distill.verify.table import verify_file, verify_table, verify_table_with_stats
from distill.verify.math import verify_math

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


# Our own hand-written equivalence cases with traps (E001-E063 written first; E064-E093, "held-out", written
# after the verifier was tuned on the first batch). `expected` null: unverifiable (never correct).
EQUIVALENCE = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "equivalence_cases.jsonl").read_text().splitlines()
    if line.strip()
]
# Where the verifier and the expectation still disagree (kept in the file, not bent to match):
KNOWN_WRONG = {
    "E065": "math-verify compares at 6 decimal places: 0.3333333 counts as 1/3",
    "E071": "a compound inequality is not read as the interval it describes",
}


def test_equivalence_case_file():
    assert len(EQUIVALENCE) >= 50 and len({c["id"] for c in EQUIVALENCE}) == len(EQUIVALENCE)
    assert {c["expected"] for c in EQUIVALENCE} == {True, False, None}


@pytest.mark.parametrize("case", EQUIVALENCE, ids=[c["id"] for c in EQUIVALENCE])
def test_equivalence_cases(case):
    if case["id"] in KNOWN_WRONG:
        pytest.xfail(KNOWN_WRONG[case["id"]])
    verdict = verify_math(case["completion"], case["answer"])
    assert verdict.correct == case["expected"], (case["trap"], verdict)


def test_equivalence_accuracy(capsys):
    got = [(c, verify_math(c["completion"], c["answer"]).correct) for c in EQUIVALENCE]
    wrong = sorted(c["id"] for c, v in got if v != c["expected"])
    held = [(c, v) for c, v in got if c.get("batch") == "held-out"]
    with capsys.disabled():
        print(
            f"\nmath verifier on {len(got)} hand-written equivalence cases: {len(got) - len(wrong)}/{len(got)} "
            f"({(len(got) - len(wrong)) / len(got):.1%}); held-out batch {sum(v == c['expected'] for c, v in held)}/{len(held)}; "
            f"wrong: {', '.join(wrong) or 'none'}"
        )
    assert wrong == sorted(KNOWN_WRONG)


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
    with pytest.raises(ValueError, match=r"unknown verifier 'nope'.*code.*judge.*math"):
        get_verifier("nope")
    with pytest.raises(ValueError, match="already registered"):
        register("math")(lambda completion, reference: Verdict(None, "x"))
    with pytest.raises(ValueError, match="takes no options"):
        get_verifier("math", engine=None)
    # factories: options build a new verifier; resources they need are required
    assert {"code", "judge", "math+judge"} <= set(FACTORIES)
    assert isinstance(get_verifier("code"), CodeVerifier)
    custom = get_verifier("code", limits=Limits(wall_s=1.0), max_tests=2)
    assert custom is not get_verifier("code") and custom.sandbox.limits.wall_s == 1.0 and custom.max_tests == 2
    with pytest.raises(ValueError, match="'judge'.*engine"):
        get_verifier("judge")


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


def test_verify_table_in_a_process_pool_matches_serial():
    df = pl.DataFrame({"completion": [c["completion"] for c in CASES], "answer": [c["answer"] for c in CASES]})
    serial, stats = verify_table_with_stats(df)
    assert stats == {}
    assert verify_table(df, workers=2).equals(serial)


# --- the code verifier -------------------------------------------------------------------------------------

ADD = "<think>\nRead two ints, print the sum.\n</think>\nHere is my solution:\n```python\na, b = map(int, input().split())\nprint(a + b)\n```\n"
TESTS = json.dumps([{"input": "1 2\n", "output": "3\n"}, {"input": "-5 5", "output": "0"}])


def _code(body: str, lang: str = "python") -> str:
    return f"<think>\nplan\n</think>\n```{lang}\n{body}\n```"


@pytest.mark.parametrize(
    "completion, expected",
    [
        (ADD, "a, b = map(int, input().split())\nprint(a + b)\n"),
        ("</think>\n```py\nprint(1)\n```\nthen\n```python3 title=x\nprint(2)\n```", "print(2)\n"),  # the last block
        ("</think>\n```\nprint(3)\n```", "print(3)\n"),  # no language: taken as Python
        ("</think>\n```python\nprint(1)\n```\n```text\n1\n```", "print(1)\n"),  # other languages skipped
        ("<think>\n```python\nprint(1)\n```\n</think>\nNo code.", None),  # a block inside think does not count
        ("</think>\n```cpp\nint main(){}\n```", None),
        ("</think>\n```python\nprint(1)\n", None),  # unclosed fence (truncated)
        ("</think>\n```python\n\n```", None),
        ("", None),
    ],
)
def test_extract_code(completion, expected):
    assert extract_code(completion) == expected


@pytest.mark.parametrize(
    "reference, expected",
    [
        (TESTS, [("1 2\n", "3\n"), ("-5 5", "0")]),
        ('{"tests": [{"input": "x", "output": "y"}]}', [("x", "y")]),
        ('[{"output": "hi"}]', [("", "hi")]),  # no input: empty stdin
        ('{"inputs": ["1\\n", "2\\n"], "outputs": ["2\\n", "4\\n"]}', [("1\n", "2\n"), ("2\n", "4\n")]),  # APPS/TACO
        ('{"inputs": ["1"], "outputs": []}', None),
        ('{"fn_name": "solve", "inputs": [[1]], "outputs": [2]}', None),  # call-based tests: not supported
        ('[{"input": 1, "output": 2}]', None),
        ("[]", None),
        ("42", None),
        ("not json", None),
    ],
)
def test_parse_code_tests(reference, expected):
    assert parse_code_tests(reference) == expected


def test_outputs_match():
    assert outputs_match("3\n", "3")
    assert outputs_match("1 2  \n3\n\n\n", "\n1 2\n3")
    assert outputs_match("a\r\nb\r\n", "a\nb\n")
    assert not outputs_match("1  2", "1 2")  # spacing inside a line matters
    assert not outputs_match("3\n4", "3")
    assert not outputs_match("", "0")


FAST = Limits(wall_s=2.0, cpu_s=1, memory_mb=256, nproc=16)


@pytest.mark.parametrize(
    "completion, reference, correct, reason",
    [
        (ADD, TESTS, True, "correct"),
        (_code("print(sum(map(int, input().split())) + 1)"), TESTS, False, "incorrect"),
        (_code("a, b = map(int, input().split())\nprint(a + b)\nprint('debug')"), TESTS, False, "incorrect"),
        (_code("raise SystemExit(1)"), TESTS, False, "runtime_error"),
        (_code("print(1/0)"), TESTS, False, "runtime_error"),
        (_code("while True:\n    pass"), TESTS, False, "timeout"),
        (_code("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"), TESTS, False, "output_limit"),
        ("</think>The sum is a + b.", TESTS, None, "no_code"),
        (ADD, None, None, "no_reference"),
        (ADD, " ", None, "no_reference"),
        (ADD, "print the sum", None, "unparseable_reference"),
        (ADD, '{"fn_name": "f", "inputs": [], "outputs": []}', None, "unparseable_reference"),
    ],
)
def test_verify_code(completion, reference, correct, reason):
    assert make_code_verifier(limits=FAST)(completion, reference) == Verdict(correct, reason)


def test_verify_code_stops_at_the_first_failing_test_and_caps_tests():
    tests = json.dumps([{"input": "1 1", "output": "3"}] + [{"input": "1 1", "output": "2"}] * 3)
    assert make_code_verifier(limits=FAST)(ADD, tests) == Verdict(False, "incorrect")
    assert make_code_verifier(limits=FAST, max_tests=1)(ADD, json.dumps([{"input": "1 1", "output": "2"}, {"input": "1 1", "output": "9"}])) == Verdict(True, "correct")


def test_verify_code_without_a_usable_sandbox_refuses():
    broken = make_code_verifier(isolation="weak-none", python="/nonexistent/python3")
    with pytest.raises(SandboxError, match="no usable sandbox"):  # nothing judged, not a column of unverifiable rows
        broken(ADD, TESTS)


def test_verify_table_code_in_a_pool_records_the_sandbox(tmp_path):
    rows = [
        {"id": "ok", "completion": ADD, "answer": TESTS},
        {"id": "wrong", "completion": _code("print(0)"), "answer": TESTS},
        {"id": "none", "completion": "no code here", "answer": TESTS},
        {"id": "crash", "completion": _code("import os\nos.kill(os.getpid(), 9)"), "answer": TESTS},
    ]
    src = tmp_path / "code.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = verify_file(src, tmp_path / "out.parquet", verifier="code", workers=2)
    out = pl.read_parquet(tmp_path / "out.parquet")
    assert out["verify_reason"].to_list() == ["correct", "incorrect", "no_code", "runtime_error"]
    assert counts["correct"] == 1 and counts["incorrect"] == 2 and counts["unverifiable"] == 1
    sandbox = counts["sandbox"]
    assert sandbox["isolation"] in ("bwrap", "unshare", "none") and isinstance(sandbox["missing"], list)
