"""What the per-row bounds cost: the math verifier on the test data in this process (unbounded) against the
same rows through the bounded worker pool (distill.verify.limits), and the pathological answers of issue 15.

    .venv/bin/python scripts/bench_verify_limits.py [--repeat 3] [--workers 1] [--no-hostile]

Prints seconds per pass and the ratio bounded / unbounded: pass 1 with cold caches on both sides, later
passes warm (the same rows again). Timings, not a test: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from distill.verify.limits import BoundedPool
from distill.verify.math import verify_math
from distill.verify.registry import WARM_UP, bounded_verdicts, call_verifier

REPO = Path(__file__).resolve().parents[1]
DATA = [REPO / "tests/data/math_verify_cases.jsonl", REPO / "tests/data/equivalence_cases.jsonl"]
HOSTILE = [
    r"\boxed{\Gamma(10^{12})}", r"\boxed{\exp(\exp(\exp(20)))}", r"\boxed{" + "(" * 600 + "1" + ")" * 600 + "}",
    r"\boxed{\sum_{k=1}^{n}k^{10^6}}", r"\boxed{10^{10^{10^{10}}}}", r"\boxed{(10^{100})!}",
    r"\boxed{\Gamma(10^{12}+1)}",  # not a literal argument: the screen lets it through, the time limit stops it
]


def rows() -> list[tuple[str, str]]:
    out = []
    for path in DATA:
        for line in path.read_text().splitlines():
            r = json.loads(line)
            out.append((r["completion"], str(r["answer"])))
    return out


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--no-hostile", action="store_true")
    args = ap.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    data = rows()
    verify_math(r"\boxed{1}", "1")  # imports sympy and Math-Verify here, as the zygote does there
    args_named = [("math", c, a) for c, a in data]
    print(f"{len(data)} rows from {', '.join(p.name for p in DATA)}; bounded on {args.workers} worker(s)")
    pool = BoundedPool(warm=WARM_UP)
    try:
        pool.map(call_verifier, [("math", r"\boxed{2}", "2")])  # start the zygote and a worker: not a row's cost
        for rep in range(args.repeat):  # pass 1: caches cold on both sides (references parse once); then warm
            t_in, ref = timed(lambda: [verify_math(c, a) for c, a in data])
            t_b, got = timed(lambda: pool.map(call_verifier, args_named, args.workers))
            same = sum(r == g for r, g in zip(ref, got))
            print(f"pass {rep + 1} ({'cold' if rep == 0 else 'warm'}): unbounded {t_in:.3f} s, bounded {t_b:.3f} s, "
                  f"ratio {t_b / t_in:.2f}, {(t_b - t_in) / len(data) * 1e3:+.2f} ms/row; same verdicts {same}/{len(data)}")
        t_rt, _ = timed(lambda: pool.map(max, args_named, args.workers))  # the same rows, no work: the round trip
        print(f"round trip alone (rows sent, a trivial call, the answer back): {t_rt / len(data) * 1e3:.3f} ms/row")
    finally:
        pool.close()
    if not args.no_hostile:
        t, verdicts = timed(lambda: bounded_verdicts("math", HOSTILE, ["5"] * len(HOSTILE), args.workers))
        print(f"pathological answers: {t:.1f} s on {args.workers} worker(s); "
              f"accepted {sum(v.correct is True for v in verdicts)}; {[v.reason for v in verdicts]}")


if __name__ == "__main__":
    main()
