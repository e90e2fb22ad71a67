"""distill/core/workers.py: a pool's workers die with their parent, SIGKILL included (issue 15, item 4: a
killed `distill curate` left its workers running; 5639c99 had no such mechanism, see test_curate_crash.py
for the curate pool itself)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
POOL = """
import sys, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from distill.core.workers import tied_initializer
if __name__ == "__main__":
    init, args = tied_initializer(None)
    with ProcessPoolExecutor(2, mp_context=get_context(sys.argv[1]), initializer=init, initargs=args) as pool:
        assert pool.submit(sum, [1, 2]).result() == 3  # the initializer let the worker live
        futures = [pool.submit(time.sleep, 120) for _ in range(2)]
        print("ready", flush=True)
        time.sleep(120)
"""


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                out.append(int(d.name))
        except OSError:  # gone meanwhile
            pass
    return out


def _running(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_pool_workers_die_with_a_sigkilled_parent(method):
    p = subprocess.Popen([sys.executable, "-c", POOL, method], stdout=subprocess.PIPE, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    kids: list[int] = []
    try:
        assert p.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # both workers started (and ran their initializer: they are sleeping)
            kids = _children(p.pid)
            if len([k for k in kids if "spawn_main" in Path(f"/proc/{k}/cmdline").read_text(errors="replace")]) >= 2 or \
                    method == "forkserver" and kids:
                break
            time.sleep(0.05)
        time.sleep(1.0)
        kids = sorted(set(kids) | set(_children(p.pid)) | {g for k in kids for g in _children(k)})
        assert kids
        p.kill()
        p.wait()
        t0 = time.monotonic()
        while any(_running(k) for k in kids) and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        assert not any(_running(k) for k in kids), f"still running 10 s after the parent was killed: {[k for k in kids if _running(k)]}"
    finally:
        p.kill()
        for k in kids:
            if _running(k):
                os.kill(k, signal.SIGKILL)
