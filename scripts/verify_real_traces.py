"""Verdicts of `distill verify` on real teacher traces with a gold answer, against labels read by eye.

    .venv/bin/python scripts/verify_real_traces.py [--traces ../shared/real-traces/traces.jsonl]
        [--labels tests/data/real_trace_verdicts.jsonl] [--dump verdicts.jsonl]

Every row with a `gold` is verified: a single letter A-J with the `multiple_choice` verifier, anything else
with `math`. Printed: verdict counts per verifier; "identical judged incorrect" (rows whose stated answer --
the last `\\boxed{}` or `<answer>` block, read here the same way for any version of the verifier -- equals the
gold after trimming whitespace, yet are judged incorrect); and the agreement of the verdicts with the labels
(`model_correct`: whether the model's stated final answer is right, read by eye), where a verdict of None
counts as "not correct" (what rejection sampling and pass@1 do with it) and, strictly, as a disagreement.

The verifier is whichever `distill` is first on sys.path, so the same command measures an older version:
`git archive <commit> | tar -x -C /tmp/old && PYTHONPATH=/tmp/old python scripts/verify_real_traces.py`
(the layout before distill/verify/ was a package is handled).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from itertools import accumulate
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # PYTHONPATH (another version) comes first

try:
    import distill.verify  # noqa: F401 - registers every verifier
    from distill.verify.registry import get_verifier
except ImportError:  # before distill/verify/ was a package: one module, multiple choice in distill.answers
    import distill.answers  # noqa: F401
    from distill.verify import get_verifier

_LETTER = re.compile(r"[A-J]")
_BOX = re.compile(r"\\boxed\s*\{")
_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def stated_answer(completion: str) -> str | None:
    """The last `<answer>` block or `\\boxed{}` after `</think>` (the whole text without think tags; None for
    reasoning that never closed: a box inside it is a step, not the answer)."""
    if "<think>" in completion and "</think>" not in completion:
        return None
    text = completion.rsplit("</think>", 1)[-1]
    tags = [t.strip() for t in _TAG.findall(text) if t.strip()]
    if tags:
        return tags[-1]
    for m in reversed(list(_BOX.finditer(text))):  # the last box whose braces close
        levels = accumulate({"{": 1, "}": -1}.get(ch, 0) for ch in text[m.end() - 1 :])
        close = next((k for k, level in enumerate(levels) if level == 0), None)
        if close is not None:
            return text[m.end() : m.end() - 1 + close].strip()
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", default=str(REPO.parent / "shared" / "real-traces" / "traces.jsonl"))
    ap.add_argument("--labels", default=str(REPO / "tests" / "data" / "real_trace_verdicts.jsonl"))
    ap.add_argument("--dump", help="write one verdict per row (JSONL) here")
    args = ap.parse_args(argv)
    if not Path(args.traces).is_file():
        print(f"no traces at {args.traces}", file=sys.stderr)
        return 2
    rows = [json.loads(line) for line in Path(args.traces).read_text().splitlines() if line.strip()]
    verdicts, counts, identical_wrong = {}, Counter(), []
    for r in rows:
        if r.get("gold") is None:
            continue
        gold = str(r["gold"]).strip()
        kind = "multiple_choice" if _LETTER.fullmatch(gold) else "math"
        v = get_verifier(kind)(r["completion"], gold)
        verdicts[r["id"]] = (kind, v.correct, v.reason)
        counts[(kind, v.correct, v.reason)] += 1
        if v.correct is False and (stated_answer(r["completion"]) or "").strip() == gold:
            identical_wrong.append(r["id"])
    print(f"rows with gold: {len(verdicts)} of {len(rows)}")
    for (kind, correct, reason), n in sorted(counts.items(), key=str):
        print(f"  {kind:16} {str(correct):6} {reason:24} {n}")
    print(f"identical answer judged incorrect: {len(identical_wrong)} {identical_wrong[:5]}")
    if Path(args.labels).is_file():
        labels = [json.loads(line) for line in Path(args.labels).read_text().splitlines() if line.strip()]
        for sample in sorted({lab["sample"] for lab in labels}) + ["all"]:
            labs = [lab for lab in labels if (sample == "all" or lab["sample"] == sample) and lab["id"] in verdicts]
            agree = sum((verdicts[lab["id"]][1] is True) == lab["model_correct"] for lab in labs)
            strict = sum(verdicts[lab["id"]][1] is lab["model_correct"] for lab in labs)
            print(f"agreement with labels ({sample}, {len(labs)} rows): {agree}/{len(labs)} = {agree / max(1, len(labs)):.3f}"
                  f" (None as a disagreement: {strict / max(1, len(labs)):.3f})")
    if args.dump:
        Path(args.dump).write_text("".join(json.dumps({"id": i, "verifier": k, "correct": c, "reason": why}) + "\n"
                                           for i, (k, c, why) in verdicts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
