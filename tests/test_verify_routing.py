"""`distill verify` on a file mixing tasks: each row goes to the verifier of its `task` column (math, code,
general) unless `--verifier` forces one; the routing table itself; the judge for `general` rows when one is
configured (a scripted engine, no model)."""

from __future__ import annotations

import json
import subprocess
import sys

import polars as pl
import pytest

from distill.cli import main
from distill.config.verify import VerifyConfig
from distill.engines.base import Completion, Result
from distill.verify.registry import NO_GENERAL_VERIFIER, unrouted_reason, verifier_for_task
from distill.verify.table import verify_with_config

ADD = "<think>\nRead two ints, print the sum.\n</think>\n```python\na, b = map(int, input().split())\nprint(a + b)\n```\n"
WRONG = "<think>\nplan\n</think>\n```python\nprint(0)\n```"
TESTS = json.dumps([{"input": "1 2\n", "output": "3\n"}, {"input": "-5 5", "output": "0"}])

ROWS = [
    {"id": "m-ok", "task": "math", "completion": "<think>\n2 + 3 = 5\n</think>\n\\boxed{5}", "answer": "5"},
    {"id": "c-ok", "task": "code", "completion": ADD, "answer": TESTS},
    {"id": "m-bad", "task": "math", "completion": "<think>\n2 + 3 = 6\n</think>\n\\boxed{6}", "answer": "5"},
    {"id": "c-bad", "task": "code", "completion": WRONG, "answer": TESTS},
    {"id": "g", "task": "general", "completion": "Paris", "answer": "Paris"},
    {"id": "none", "completion": "</think>\\boxed{7}", "answer": "7"},  # no task: the default verifier (math)
    {"id": "odd", "task": "poetry", "completion": "</think>\\boxed{7}", "answer": "7"},
]


def _run(tmp_path, capsys, *flags):
    src = tmp_path / "mixed.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "out.parquet"
    assert main(["verify", "--input", str(src), "--output", str(out), *flags]) == 0
    return pl.read_parquet(out), json.loads(capsys.readouterr().out)


def test_cli_routes_mixed_math_and_code_rows_by_task_without_flags(tmp_path, capsys):
    df, counts = _run(tmp_path, capsys)
    assert df["id"].to_list() == [r["id"] for r in ROWS]  # row order kept
    assert df["correct"].to_list() == [True, True, False, False, None, True, None]
    assert df["verify_reason"].to_list() == [
        "correct", "correct", "incorrect", "incorrect", NO_GENERAL_VERIFIER, "correct", "unknown_task: poetry"
    ]  # fmt: skip
    assert df["verifier"].to_list() == ["math", "code", "math", "code", None, "math", None]
    assert counts["correct"] == 3 and counts["incorrect"] == 2 and counts["unverifiable"] == 2
    assert counts["verifiers"] == {"math": 3, "code": 2}
    assert counts["sandbox"]["isolation"] in ("bwrap", "unshare", "none")  # the code verifier's stats


def test_cli_verifier_flag_forces_one_verifier_for_every_row(tmp_path, capsys):
    df, counts = _run(tmp_path, capsys, "--verifier", "math")
    assert "verifier" not in df.columns and "verifiers" not in counts and "sandbox" not in counts
    by_id = dict(zip(df["id"], zip(df["correct"], df["verify_reason"])))
    assert by_id["m-ok"] == (True, "correct") and by_id["m-bad"] == (False, "incorrect")
    assert by_id["none"] == (True, "correct") and by_id["odd"] == (True, "correct")  # the task is ignored
    # math cannot read the code rows' JSON tests: never correct (the code verifier would pass c-ok)
    assert by_id["c-ok"][0] is not True and by_id["c-ok"][1] != "correct"


def test_cli_verifier_code_forces_code_on_math_rows(tmp_path, capsys):
    df, _ = _run(tmp_path, capsys, "--verifier", "code")
    by_id = dict(zip(df["id"], zip(df["correct"], df["verify_reason"])))
    assert by_id["c-ok"] == (True, "correct") and by_id["c-bad"] == (False, "incorrect")
    assert by_id["m-ok"] == (None, "unparseable_reference")  # "5" is not a test list


@pytest.mark.parametrize(
    "task, default, judge, expected",
    [
        ("math", "math", False, "math"),
        ("math", "math+judge", True, "math+judge"),  # the recipe's math verifier is kept for math rows
        ("math", "code", False, "math"),
        ("code", "math", False, "code"),
        ("code", "math+judge", True, "code"),
        ("general", "math", False, None),  # unverifiable is never correct
        ("general", "math", True, "judge"),
        (None, "math", False, "math"),
        (None, "code", False, "code"),
        ("poetry", "math", True, None),
    ],
)
def test_verifier_for_task(task, default, judge, expected):
    assert verifier_for_task(task, default, judge=judge) == expected
    if expected is None:
        assert unrouted_reason(task)


class YesEngine:
    name = "scripted"

    def __init__(self):
        self.asked = 0

    def generate(self, requests, params):
        self.asked += len(requests)
        return [Result(r.request_id, 1, [Completion("yes", "stop", 1)]) for r in requests]

    def close(self):
        pass


def test_general_rows_go_to_the_judge_when_one_is_configured():
    df = pl.DataFrame([{k: r.get(k) for k in ("id", "task", "completion", "answer")} for r in ROWS[:5]])
    engine = YesEngine()
    out, stats = verify_with_config(df, VerifyConfig(judge={"model": "judge-model"}), engine, by_task=True)
    assert out["verifier"].to_list() == ["math", "code", "math", "code", "judge"]
    assert out["correct"].to_list() == [True, True, False, False, True]
    assert out["verify_reason"][4] == "judge_correct" and engine.asked == 1
    assert stats["verifiers"] == {"math": 2, "code": 2, "judge": 1} and stats["judge"]["asked"] == 1


def test_without_by_task_the_section_verifier_runs_on_every_row():
    """The pipeline's verify stage (no by_task): the recipe's one verifier, as before."""
    df = pl.DataFrame([{k: r.get(k) for k in ("id", "task", "completion", "answer")} for r in ROWS[:2]])
    out, stats = verify_with_config(df, VerifyConfig())
    assert out["correct"][0] is True and out["correct"][1] is not True and "verifier" not in out.columns
    assert stats == {}


def test_importing_the_registry_alone_fills_it():
    """The registry is a leaf; the package runs first and imports every verifier module into it."""
    code = "from distill.verify.registry import get, get_verifier, names; assert get is get_verifier; print(names())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(["code", "json", "judge", "math", "math+judge", "multiple_choice"])
