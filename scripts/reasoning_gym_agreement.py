"""Agreement of `distill verify` with reasoning-gym's own scorer on its arithmetic and algebra tasks.

The issue measured 4,800 public DeepSeek-R1 / QwQ-32B answers to reasoning-gym; those answers cannot be
fetched here. What can be run offline is the benchmark itself (the `reasoning-gym` package generates its
questions, gold answers and scorer locally): for each of 16 tasks, N questions and, per question, the answer
spellings a model writes (the gold as is, LaTeX, reordered lists, rounded to the precision asked, spaces
changed) and wrong answers (another question's gold, off by one). reasoning-gym's `score_answer` labels each
(1.0 = right); `distill verify` judges `<think>…</think><answer>CANDIDATE</answer>` against the gold.

reasoning-gym is not a dependency of this project: install it in a separate environment.

    python -m venv /tmp/rg && /tmp/rg/bin/pip install reasoning-gym
    /tmp/rg/bin/python scripts/reasoning_gym_agreement.py generate --out /tmp/rg_cases.jsonl [--n 50]
    .venv/bin/python scripts/reasoning_gym_agreement.py score /tmp/rg_cases.jsonl
    # the verifier of another version: PYTHONPATH=/tmp/old .venv/bin/python scripts/... score ...
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

TASKS = [
    "basic_arithmetic", "chain_sum", "complex_arithmetic", "decimal_arithmetic", "decimal_chain_sum",
    "fraction_simplification", "gcd", "lcm", "power_function", "prime_factorization", "products",
    "time_intervals", "polynomial_equations", "polynomial_multiplication", "simple_equations", "simple_integration",
]


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def spellings(gold: str) -> dict[str, str]:
    """Ways a model writes an answer, some right and some not (the benchmark's scorer decides which)."""
    out = {"gold": gold, "padded": f"  {gold} "}
    latex = gold.replace("×", r"\times").replace("**", "^").replace("*", "")
    if latex != gold:
        out["latex"] = latex
    if "," in gold:
        out["reordered"] = ", ".join(reversed([p.strip() for p in gold.split(",")]))
    if " " in gold.strip():
        out["unspaced"] = gold.replace(" ", "")
    x = _number(gold)
    if x is not None and x != int(x):
        out["3sf"] = f"{x:.2e}"
        out["2dp"] = f"{x:.2f}"
    if x is not None and re.fullmatch(r"-?\d+", gold.strip()):
        out["off_by_one"] = str(int(gold) + 1)
    return out


def generate(out: Path, n: int, seed: int) -> None:
    import reasoning_gym  # not a project dependency: installed in its own environment (see module doc)

    rows = []
    for task in TASKS:
        ds = reasoning_gym.create_dataset(task, size=n, seed=seed)
        entries = list(ds)
        rng = random.Random(f"{seed}:{task}")
        for i, e in enumerate(entries):
            gold = str(e["answer"])
            cands = spellings(gold)
            other = str(entries[rng.randrange(len(entries))]["answer"])
            if other != gold:
                cands["other_gold"] = other
            for variant, cand in cands.items():
                try:
                    got = float(ds.score_answer(cand.strip(), e))  # its extract_answer strips the block
                except (ValueError, TypeError, ArithmeticError):  # its scorer raises on some spellings: 0
                    got = 0.0
                rows.append({"task": task, "i": i, "gold": gold, "variant": variant, "candidate": cand, "rg_score": got})
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} candidates for {len(TASKS)} tasks x {n} questions -> {out}")


def score(path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    if str(repo) not in sys.path:
        sys.path.append(str(repo))  # PYTHONPATH (another version) comes first
    try:
        from distill.verify.math import verify_math
    except ImportError:  # before distill/verify/ was a package
        from distill.verify import verify_math

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    agree, total, identical_wrong = Counter(), Counter(), []
    by_variant = defaultdict(Counter)
    for r in rows:
        verdict = verify_math(f"<think>\nWorking.\n</think>\n<answer>{r['candidate']}</answer>", r["gold"])
        right = r["rg_score"] >= 1.0
        ok = (verdict.correct is True) == right
        agree[r["task"]] += ok
        total[r["task"]] += 1
        by_variant[r["variant"]][ok] += 1
        if r["candidate"].strip() == r["gold"].strip() and verdict.correct is False:
            identical_wrong.append((r["task"], r["gold"]))
    print(f"{'task':28} agreement")
    for task in TASKS:
        if total[task]:
            print(f"{task:28} {agree[task] / total[task]:.3f} ({agree[task]}/{total[task]})")
    n = sum(total.values())
    print(f"{'all':28} {sum(agree.values()) / n:.3f} ({sum(agree.values())}/{n})")
    print("by spelling:", {v: f"{c[True]}/{c[True] + c[False]}" for v, c in sorted(by_variant.items())})
    print(f"identical answer judged incorrect: {len(identical_wrong)} {Counter(t for t, _ in identical_wrong)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--n", type=int, default=50)
    g.add_argument("--seed", type=int, default=16)
    s = sub.add_parser("score")
    s.add_argument("cases", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "generate":
        generate(args.out, args.n, args.seed)
    else:
        score(args.cases)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
