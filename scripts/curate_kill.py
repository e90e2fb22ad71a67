"""SIGKILL `distill curate` (file mode) at random moments, rerun it after each kill, and check that nothing was
lost or mixed (issue 15, item 4): the outputs equal an uninterrupted run's, no temporary directory is left
after the rerun, and no process of the killed run outlives it (its descendants are counted by PID).

    .venv/bin/python scripts/curate_kill.py --rows 200000 --kills 10 [--seed 0] [--workdir DIR]

Prints one JSON object (the numbers); exits 1 when a check fails. tests/test_curate_crash.py runs it small.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
GOOD = "<think>\nWe add {a} and {b} to get {c}. Checking: {c} minus {b} is {a}, so the sum is right.\n</think>\n\nThe answer is $\\boxed{{{c}}}$."
TIMING = ("timing", "seconds")  # funnel keys that differ between runs of the same input


def traces(n: int) -> pl.DataFrame:
    """Math traces with every kind of reject: bad format, truncated, language mixing, wrong, duplicate prompts."""
    i = pl.int_range(0, n, eager=True)
    rows = []
    for k in i.to_list():
        a, b = k, 2 * k + 1
        c = GOOD.format(a=a, b=b, c=a + b)
        kind = k % 7
        if kind == 1:
            c = c.replace("<think>\n", "").replace("</think>", "")
        elif kind == 2:
            c = c[:40]
        elif kind == 3:
            c = c.replace("We add", "我们再检查一遍。We add")
        rows.append((f"r{k}", f"p{k // 2}", f"What is {a // 2 * 2} + {b}? (problem {k // 2})", c, str(a + b), k % 5 != 0,
                     "length" if kind == 2 else "stop", ["alpha", "beta"][k % 2]))
    cols = ["id", "prompt_id", "prompt", "completion", "answer", "correct", "finish_reason", "source"]
    return pl.DataFrame(rows, schema=cols, orient="row").with_columns(language=pl.lit("en"))


def _cmd(src: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "distill.cli", "curate", "--input", str(src), "--output-dir", str(out)]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "R1_DISTILL_PROGRESS": "0"}


def _proc_stat(pid: int) -> tuple[int, str, str] | None:
    """(ppid, state, start time) of a live process, None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone
        return None
    state, ppid, *rest = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(ppid), state, rest[17]  # field 22: start time, in clock ticks since boot


def descendants(pid: int) -> dict[int, str]:
    """PID -> start time of every live descendant of `pid`."""
    children: dict[int, list[int]] = {}
    starts = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _proc_stat(int(d))
            if st:
                children.setdefault(st[0], []).append(int(d))
                starts[int(d)] = st[2]
    found, todo = {}, [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found[c] = starts[c]
            todo.append(c)
    return found


def alive(procs: dict[int, str]) -> list[int]:
    """Those of `procs` still running (same PID and start time; zombies count as gone)."""
    out = []
    for pid, start in procs.items():
        st = _proc_stat(pid)
        if st and st[2] == start and st[1] != "Z":
            out.append(pid)
    return out


def outputs(out: Path) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    funnel = json.loads((out / "funnel.json").read_text())
    return pl.read_parquet(out / "kept.parquet"), pl.read_parquet(out / "rejected.parquet"), {k: v for k, v in funnel.items() if k not in TIMING}


def leftovers(out: Path) -> list[str]:
    """Temporary or unreferenced run directories and temporary links (after a finished run: none)."""
    current = os.readlink(out / ".curate-current")
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".curate-") and p.name not in (".curate-current", ".curate-lock", current))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="curate-kill-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "in" / "traces.parquet"
    src.parent.mkdir(exist_ok=True)
    traces(args.rows).write_parquet(src)
    rng = random.Random(args.seed)

    t0 = time.perf_counter()
    subprocess.run(_cmd(src, work / "expected"), env=_env(), check=True, capture_output=True)
    full = time.perf_counter() - t0
    expected = outputs(work / "expected")

    out = work / "out"
    kills, failures = [], []
    for k in range(args.kills):
        at = rng.uniform(0.0, full * 1.05)
        p = subprocess.Popen(_cmd(src, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen: dict[int, str] = {}
        deadline = time.perf_counter() + at
        while time.perf_counter() < deadline and p.poll() is None:
            seen |= descendants(p.pid)  # every process the run started, up to the kill
            time.sleep(0.05)
        seen |= descendants(p.pid)
        finished = p.poll() is not None
        p.send_signal(signal.SIGKILL)
        p.wait()
        t_kill = time.perf_counter()
        while alive(seen) and time.perf_counter() - t_kill < 10:
            time.sleep(0.1)
        orphans = alive(seen)
        if orphans:
            failures.append(f"kill {k}: processes {orphans} outlived the killed run")
            for pid in orphans:  # do not leave them to the machine
                os.kill(pid, signal.SIGKILL)
        t1 = time.perf_counter()
        rerun = subprocess.run(_cmd(src, out), env=_env(), capture_output=True, text=True)
        rerun_s = time.perf_counter() - t1
        if rerun.returncode:
            failures.append(f"kill {k}: the rerun failed: {rerun.stderr[-2000:]}")
            break
        got = outputs(out)
        same = got[0].equals(expected[0]) and got[1].equals(expected[1]) and got[2] == expected[2]
        if not same:
            failures.append(f"kill {k}: outputs differ from the uninterrupted run")
        left = leftovers(out)
        if left:
            failures.append(f"kill {k}: left behind after the rerun: {left}")
        kills.append({"at_s": round(at, 2), "finished_before_kill": finished, "processes_seen": len(seen),
                      "orphans": len(orphans), "rerun_s": round(rerun_s, 1), "same": same, "leftovers": len(left)})
    print(json.dumps({"rows": args.rows, "uninterrupted_s": round(full, 1), "kills": kills, "failures": failures,
                      "rows_in": expected[2]["rows_in"], "kept": expected[2]["kept"]}, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
