"""cons@k: the majority answer of a prompt's k samples, voting over answers the verifier finds equal.

`\\frac12`, `1/2` and `0.5` are one vote for one answer, not three. Cost is bounded for k up to 64 and more:
answers are first grouped by a cheap normalised string (whitespace, `$...$`, `\\boxed{}`/`\\text{}`, `\\left`,
`\\dfrac`, case); each group's representative is then compared with the representatives of the clusters found
so far (not with every answer), equal both ways by the benchmark's verifier, and the comparisons per prompt
are capped (MAX_CHECKS; past it, groups only merge by string). Multiple-choice letters vote as letters, JSON
values by distill.verify.answers.values_match, math answers by the `math` verifier (Math-Verify).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

from distill.core.schema import full_completion
from distill.verify.answers import extract_choice, extract_json_answer, values_match
from distill.verify.extract import extract_final_answer
from distill.verify.formats import unwrap
from distill.verify.math import verify_math

# Equivalence checks per prompt: k = 64 answers all different would need up to 64 * 63 / 2 pairs.
MAX_CHECKS = 256

_NOISE = re.compile(r"\\(?:left|right|displaystyle|!|,|;|\s)|\s+")


def normalise(answer: str) -> str:
    """The cheap key answers are first grouped by: `$\\boxed{\\dfrac{1}{2}}$.` and `\\frac{1}{2}` share one."""
    text = _NOISE.sub("", unwrap(answer)).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return text.rstrip(".").casefold()


def final_answer(completion: str, kind: str = "math", prefill: str | None = None) -> str | None:
    """What a sample votes for under a benchmark's verifier: a letter, a JSON value (as JSON text) or a math
    answer; None for no answer (reasoning that never closed has none: distill.verify.extract)."""
    text = full_completion(completion, prefill)
    if kind == "multiple_choice":
        return extract_choice(text)
    if kind == "json":
        value = extract_json_answer(text)
        return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)
    answer = extract_final_answer(text)
    return answer.strip() if answer and answer.strip() else None


def _math_equal(a: str, b: str) -> bool:
    return verify_math("\\boxed{" + a + "}", b).correct is True and verify_math("\\boxed{" + b + "}", a).correct is True


def equivalence(kind: str = "math") -> Callable[[str, str], bool] | None:
    """Whether two answers (final_answer's strings) are the same answer; None: only the normalised strings
    decide (letters; verifiers with no cheap equivalence, such as code or a judge)."""
    if kind == "json":
        return lambda a, b: values_match(json.loads(a), json.loads(b))
    if kind in ("math", "math+judge", "judge"):
        return _math_equal
    return None


def clusters(answers: Sequence[str | None], same: Callable[[str, str], bool] | None = None,
             max_checks: int = MAX_CHECKS) -> list[list[int]]:
    """Indices of the non-empty answers grouped into equal answers, clusters in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, a in enumerate(answers):
        if a:
            groups.setdefault(normalise(a), []).append(i)
    found: list[list[int]] = []  # each cluster's first index is its representative
    checks = 0
    for members in groups.values():
        home = None
        if same is not None:
            for cluster in found:
                if checks >= max_checks:
                    break
                checks += 1
                if same(answers[cluster[0]], answers[members[0]]):  # type: ignore[arg-type]
                    home = cluster
                    break
        if home is None:
            found.append(list(members))
        else:
            home.extend(members)
    return [sorted(c) for c in found]


def majority(answers: Sequence[str | None], same: Callable[[str, str], bool] | None = None) -> list[int]:
    """Indices of the largest cluster (ties: the one whose answer appeared first); [] when nobody answered."""
    found = clusters(answers, same)
    return max(found, key=lambda c: (len(c), -c[0])) if found else []
