"""Per-row bounds on verification (issue 15 item 6): answers that hung Math-Verify for good are unverifiable
with a reason within a time limit, in threads, in the RL reward and through `distill verify`, and the verify
workers never outlive a killed parent."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from distill.verify import limits
from distill.verify.limits import BoundedPool, Overrun
from distill.verify.screen import absurd_value, nesting_depth, screen_math
from distill.verify.math import verify_math
from distill.verify.registry import bounded_name, get_verifier, map_verdicts
from rl.rewards import Accuracy

REPO = Path(__file__).resolve().parents[1]
DISTILL = Path(sys.executable).with_name("distill")

# Each of these ran for minutes (or for good) in sympy on 5639c99; the last two were screened already.
PATHOLOGICAL = [
    r"\boxed{\Gamma(10^{12})}",
    r"\boxed{\exp(\exp(\exp(20)))}",
    r"\boxed{" + "(" * 600 + "1" + ")" * 600 + "}",
    r"\boxed{\sum_{k=1}^{n}k^{10^6}}",
    r"\boxed{10^{10^{10^{10}}}}",
    r"\boxed{(10^{100})!}",
]
# Not recognised by the text screen (not a literal argument), so only the time limit stops it.
HANG = r"\boxed{\Gamma(10^{12}+1)}"


def _in_thread(fn):
    """fn() run in a non-main thread (where SIGALRM timeouts cannot work), its result or exception."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            box["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join(120)
    assert not t.is_alive(), "still running after 120 s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_a_hanging_answer_is_unverifiable_in_a_thread_and_the_other_rows_go_on(monkeypatch):
    monkeypatch.setattr(limits, "ROW_TIME_S", 2.0)
    completions = [HANG, r"\boxed{5}", r"\boxed{\frac{10}{2}}", r"\boxed{6}"]
    verdicts = _in_thread(lambda: map_verdicts(verify_math, completions, ["5"] * 4, workers=2))
    assert verdicts[0].correct is None and verdicts[0].reason == "time_limit: over 2 s"
    assert [v.correct for v in verdicts[1:]] == [True, True, False]


def test_the_accuracy_reward_is_bounded_too(monkeypatch):
    monkeypatch.setattr(limits, "ROW_TIME_S", 2.0)
    reward = Accuracy(verifier="math", workers=2)
    values = _in_thread(lambda: reward([HANG, r"\boxed{5}"], answer=["5", "5"]))
    assert values == [0.0, 1.0]  # over the limit: no reward, and the batch goes on


def test_absurd_values_are_refused_before_any_parser_sees_them():
    for answer in PATHOLOGICAL[:2] + PATHOLOGICAL[3:]:
        assert absurd_value(answer[len("\\boxed{") : -1]).startswith("too_large"), answer
    for fine in [r"\frac{1}{2}", r"2^{2024}", r"e^{x^2}", r"1000!", r"\Gamma(5)", r"\exp(\exp(x))", r"3^{4^{5}}", "n!"]:
        assert absurd_value(fine) is None, fine
    # a reference that is a worked solution is judged by its boxed answer, not by what it says on the way
    assert screen_math(r"\boxed{5}", r"so 2^{100001} is even, and the answer is \boxed{5}") is None
    assert screen_math(r"we get \boxed{\Gamma(10^{12})}", "5") == "too_large: Gamma of more than 10000"
    assert screen_math(r"\boxed{5}", r"(10^{100})!") == "unparseable_reference"  # as math.py says of such a value
    reward = Accuracy(verifier="math")  # an absurd reference cannot judge anything: no reward, not a zero
    assert reward([r"\boxed{5}", r"\boxed{(10^{100})!}"], answer=[r"(10^{100})!", "5"]) == [None, 0.0]


def test_deep_nesting_is_refused_before_any_parser_sees_it():
    assert nesting_depth("((a)[b]{c})") == 2 and nesting_depth(")))(") == 1
    assert screen_math(PATHOLOGICAL[2], "5").startswith("too_complex")
    assert screen_math(r"\boxed{(1, 2)}", "5") is None
    assert screen_math(r"\boxed{5}", PATHOLOGICAL[2]) == "unparseable_reference"
    start = time.monotonic()
    (verdict,) = map_verdicts(verify_math, [PATHOLOGICAL[2]], ["5"])
    assert verdict.correct is None and verdict.reason.startswith("too_complex") and time.monotonic() - start < 5


def test_the_pool_bounds_time_and_memory_and_survives_a_dying_worker():
    pool = BoundedPool(memory_mb=256)
    try:
        out = pool.map(time.sleep, [(30,), (0,)], workers=1, time_s=1.0)
        assert out == [Overrun("time_limit: over 1 s"), None]
        (out,) = pool.map(bytearray, [(4 << 30,)], time_s=30.0)  # 4 GiB against a 256 MiB allowance
        assert out == Overrun("memory_limit")
        out = pool.map(os._exit, [(3,)], time_s=30.0) + pool.map(abs, [(-2,)])
        assert out == [Overrun("worker_died"), 2]
    finally:
        pool.close()


def test_verify_workers_print_no_math_verify_timeout_notice(capfd, monkeypatch):
    """A worker is a fresh interpreter: Math-Verify's "Timeout is disabled" notice (its timeouts are off on purpose)
    printed once per worker start on the run's console; it shows only with --verbose."""
    monkeypatch.setenv("R1_DISTILL_VERBOSITY", "normal")
    pool = BoundedPool()
    try:
        (verdict,) = pool.map(verify_math, [(r"\boxed{7}", "7")], time_s=60.0)
    finally:
        pool.close()
    assert verdict.correct
    assert "Timeout is disabled" not in capfd.readouterr().err


def test_the_shared_pool_serves_several_threads_at_once():
    rows = [(rf"\boxed{{{i}}}", str(i if i % 3 else i + 1)) for i in range(12)]
    results: dict[int, list] = {}

    def run(k: int) -> None:
        results[k] = map_verdicts(verify_math, [c for c, _ in rows], [r for _, r in rows], workers=2)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    expected = [bool(i % 3) for i in range(12)]
    assert all([v.correct for v in results[k]] == expected for k in range(3))


def test_only_plain_registered_verifiers_run_bounded():
    assert bounded_name(verify_math) == "math" and bounded_name(get_verifier("multiple_choice")) == "multiple_choice"
    assert bounded_name(get_verifier("code")) is None  # the sandbox bounds code, with its own limits
    assert bounded_name(lambda c, r: None) is None


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    found, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in found:
                found.add(c)
                todo.append(c)
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _write_rows(path: Path, answers: list[str]) -> None:
    path.write_text("".join(json.dumps({"prompt": "p", "completion": f"So {a}", "answer": "5"}) + "\n" for a in answers))


@pytest.mark.slow
def test_distill_verify_finishes_the_pathological_answers_and_accepts_none(tmp_path):
    src, out = tmp_path / "hostile.jsonl", tmp_path / "verified.parquet"
    _write_rows(src, PATHOLOGICAL + [HANG, r"\boxed{5}"])
    start = time.monotonic()
    p = subprocess.run([str(DISTILL), "verify", "--input", str(src), "--output", str(out), "--verifier", "math"],
                       capture_output=True, text=True, timeout=240, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    elapsed = time.monotonic() - start
    assert p.returncode == 0, p.stderr[-3000:]
    df = pl.read_parquet(out)
    assert df["correct"].to_list() == [None] * 7 + [True]
    reasons = df["verify_reason"].to_list()
    assert reasons[2].startswith("too_complex") and reasons[-2].startswith("time_limit"), reasons
    print(f"pathological set through the CLI: {elapsed:.1f} s")  # the note's number (issue: under 60 s)


@pytest.mark.slow
def test_verify_workers_die_with_a_sigkilled_parent(tmp_path):
    src = tmp_path / "hang.jsonl"
    _write_rows(src, [HANG] * 6)
    p = subprocess.Popen([str(DISTILL), "verify", "--input", str(src), "--output", str(tmp_path / "o.parquet"),
                          "--verifier", "math", "--workers", "2"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, seen = time.monotonic() + 90, set()
        while time.monotonic() < deadline and len(seen) < 3:  # the fork server and two workers
            seen |= _descendants(p.pid)
            time.sleep(0.2)
        assert len(seen) >= 3, f"the verify workers never started: {seen}"
        time.sleep(1.0)
        seen |= _descendants(p.pid)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(q) for q in seen):
            time.sleep(0.2)
        left = sorted(q for q in seen if _alive(q))
        assert not left, f"processes outlived the killed parent: {left}"
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
