"""An LLM judge, and the rules-then-judge cascade (`math+judge`).

The judge asks a generation backend (any `distill.engines` Engine: vLLM, an OpenAI-compatible server,
transformers) whether a completion's final answer matches the reference, greedily, and reads the reply
strictly: the reply (after `</think>`, for reasoning judges) must be one word, `yes` or `no` (markdown,
`\\boxed{}` and a trailing full stop allowed), or end in a line `Verdict: yes|no`. Anything else ("Yes, but
...", "yes or no", an unclosed think block, nothing) is no verdict: `judge_unparseable`, never a guess.

The cascade runs the rules first (math-verify) and asks the judge only for rows the rules leave
unverifiable for reasons a reader could resolve (an unparseable reference or answer, a value too large to
evaluate, a verifier error); never for a missing reference or a completion with no answer at all. On a
deterministic sample of the rows the rules did judge (`check_fraction`), it also asks the judge and counts
how often the two disagree: the stats returned to distill.verify.table.verify_table_with_stats and the
verify stage's report. Both register as factories: `get_verifier("judge", engine=...)`, `"math+judge"`.
Rules keep the last word on the rows they judged; where the judge gives no verdict the rules' verdict stays.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Sequence

from distill.core.schema import split_think
from distill.engines.base import Request, SamplingParams
from distill.verify.extract import answer_section, extract_final_answer
from distill.verify.math import verify_math
from distill.verify.registry import Verdict, Verifier, map_verdicts, register_factory

JUDGE_TEMPLATE = """You are checking a student's answer against the reference answer.
{problem}
Reference answer: {reference}
Student's final answer: {answer}

Does the student's answer mean the same as the reference answer? Equivalent forms match (1/2 and 0.5, \
the same set in another order, the same expression rearranged). A different value, an incomplete answer, \
or several candidate answers do not match.
Reply with exactly one word: yes or no."""

JUDGE_REASONS = ("unparseable_reference", "unparseable_answer", "answer_too_large")  # and "error..."

_MARKUP = re.compile(r"^[\s*_`\"'“”]+|[\s*_`\"'“”.!]+$")
_WRAPPER = re.compile(r"^\\(?:boxed|text|textbf|mathrm)\{(.*)\}$")
_VERDICT_LINE = re.compile(r"^(?:final\s+)?(?:verdict|answer|judgement|judgment)[\s*_]*[:：][\s*_]*(.+)$")


def _bare(text: str) -> str:
    """Lower-cased text without surrounding markdown, quotes, a final full stop or a \\boxed{} wrapper."""
    prev = None
    text = text.strip().lower()
    while text != prev:
        prev = text
        text = _MARKUP.sub("", text)
        m = _WRAPPER.match(text)
        if m:
            text = m.group(1)
    return text


def parse_judge_output(text: str | None) -> bool | None:
    """True for yes, False for no, None for anything else (see the module doc)."""
    if not text or not text.strip():
        return None
    s = split_think(text)
    if s.n_open > s.n_close or s.n_close > 1:
        return None  # still thinking, or a malformed reply
    final = s.final
    word = _bare(final)
    if word in ("yes", "no"):
        return word == "yes"
    lines = [line for line in final.splitlines() if line.strip()]
    verdicts = []
    for line in lines:
        m = _VERDICT_LINE.match(_bare(line))
        if m:
            verdicts.append(_bare(m.group(1)))
    if not lines or not verdicts:
        return None
    last = _VERDICT_LINE.match(_bare(lines[-1]))
    if last is None or _bare(last.group(1)) not in ("yes", "no") or len(set(verdicts)) > 1:
        return None  # the verdict must close the reply, and never change its mind
    return verdicts[-1] == "yes"


class LLMJudge:
    """`engine`: a distill.engines Engine. `max_chars` caps each of problem, reference and answer shown to
    the judge (the answer and reference keep their ends, the problem its start)."""

    def __init__(
        self,
        engine: Any,
        *,
        max_tokens: int = 512,
        template: str = JUDGE_TEMPLATE,
        max_chars: int = 2000,
        show_problem: bool = True,
        system_prompt: str | None = None,
        batch_size: int = 1024,
    ):
        self.engine = engine
        self.max_tokens = max_tokens
        self.template = template
        self.max_chars = max_chars
        self.show_problem = show_problem
        self.system_prompt = system_prompt
        self.batch_size = batch_size

    def answer_of(self, completion: str) -> str | None:
        """What the judge is shown as the answer: the extracted final answer, else the final text's tail."""
        answer = extract_final_answer(completion)
        if answer is None:
            answer = answer_section(completion)[-self.max_chars :].strip() or None  # "" for unfinished reasoning
        return answer[-self.max_chars :] if answer else None

    def messages(self, answer: str, reference: str, problem: str | None = None) -> list[dict]:
        shown = f"\nProblem: {problem[: self.max_chars].strip()}\n" if problem and self.show_problem else ""
        content = self.template.format(problem=shown, reference=reference.strip()[-self.max_chars :], answer=answer)
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, {"role": "user", "content": content}]

    def judge_many(
        self, completions: Sequence[str], references: Sequence[str | None], problems: Sequence[str | None] | None = None
    ) -> list[Verdict]:
        problems = problems if problems is not None else [None] * len(completions)
        out: list[Verdict | None] = [None] * len(completions)
        asks: list[tuple[int, Request]] = []
        for i, (c, ref, prob) in enumerate(zip(completions, references, problems)):
            if ref is None or not str(ref).strip():
                out[i] = Verdict(None, "no_reference")
                continue
            answer = self.answer_of(c or "")
            if answer is None:
                out[i] = Verdict(None, "no_final_answer")
                continue
            asks.append((i, Request(f"judge-{i}", self.messages(answer, str(ref), prob))))
        params = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_tokens=self.max_tokens, seed=0)
        for start in range(0, len(asks), self.batch_size):
            chunk = asks[start : start + self.batch_size]
            try:
                results = {r.request_id: r for r in self.engine.generate([req for _, req in chunk], params)}
            except Exception as e:  # noqa: BLE001 - a failed judge call leaves these rows without a verdict
                for i, _ in chunk:
                    out[i] = Verdict(None, f"error: judge: {type(e).__name__}: {e}"[:200])
                continue
            for i, req in chunk:
                r = results.get(req.request_id)
                text = r.completions[0].text if r and r.completions else None
                verdict = parse_judge_output(text)
                out[i] = Verdict(None, "judge_unparseable") if verdict is None else Verdict(verdict, "judge_correct" if verdict else "judge_incorrect")
        return out  # type: ignore[return-value]

    def __call__(self, completion: str, reference: str | None) -> Verdict:
        return self.judge_many([completion], [reference])[0]

    def verify_batch(self, completions, references, prompts=None, workers: int = 1) -> tuple[list[Verdict], dict]:
        verdicts = self.judge_many(completions, references, prompts)
        reasons = [v.reason for v in verdicts]
        asked = sum(r.startswith("judge_") or r.startswith("error") for r in reasons)
        return verdicts, {"judge": {"asked": asked, "unparseable": reasons.count("judge_unparseable")}}


def sampled(fraction: float, seed: int, completion: str, reference: str | None) -> bool:
    """A stable draw: the same row is (or is not) cross-checked on every rerun and in any row order."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"{seed}\0{reference}\0{completion}".encode("utf-8", "replace")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


class Cascade:
    """Rules first, the judge for what they leave unverifiable, and a cross-check on a sample (module doc)."""

    def __init__(self, rules: Verifier, judge: LLMJudge, *, check_fraction: float = 0.05, seed: int = 0, judge_reasons: Sequence[str] = JUDGE_REASONS):
        if not 0 <= check_fraction <= 1:
            raise ValueError(f"check_fraction must be in [0, 1], got {check_fraction}")
        self.rules = rules
        self.judge = judge
        self.check_fraction = check_fraction
        self.seed = seed
        self.judge_reasons = tuple(judge_reasons)

    def needs_judge(self, verdict: Verdict) -> bool:
        return verdict.correct is None and (verdict.reason in self.judge_reasons or verdict.reason.startswith("error"))

    def __call__(self, completion: str, reference: str | None) -> Verdict:
        return self.verify_batch([completion], [reference])[0][0]

    def verify_batch(self, completions, references, prompts=None, workers: int = 1) -> tuple[list[Verdict], dict]:
        rules = map_verdicts(self.rules, completions, references, workers)
        ask = [i for i, v in enumerate(rules) if self.needs_judge(v)]
        check = [
            i for i, v in enumerate(rules)
            if v.correct is not None and sampled(self.check_fraction, self.seed, completions[i], references[i])
        ]  # fmt: skip
        rows = ask + check
        judged = self.judge.judge_many(
            [completions[i] for i in rows], [references[i] for i in rows], [prompts[i] for i in rows] if prompts is not None else None
        )
        out = list(rules)
        s = dict.fromkeys(
            ("asked", "decided", "decided_correct", "unparseable", "errors", "cross_checked", "compared",
             "agreements", "disagreements", "rules_correct_judge_incorrect", "rules_incorrect_judge_correct"), 0
        )  # fmt: skip
        s["asked"], s["cross_checked"] = len(ask), len(check)
        disagreement_rows = []
        for k, (i, j) in enumerate(zip(rows, judged)):
            if j.correct is None:
                s["errors" if j.reason.startswith("error") else "unparseable"] += 1
                continue
            if k < len(ask):  # the rules could not judge this row: the judge's verdict stands
                out[i] = j
                s["decided"] += 1
                s["decided_correct"] += bool(j.correct)
                continue
            s["compared"] += 1
            if j.correct == rules[i].correct:
                s["agreements"] += 1
                continue
            s["disagreements"] += 1
            s["rules_correct_judge_incorrect" if rules[i].correct else "rules_incorrect_judge_correct"] += 1
            disagreement_rows.append(i)
        stats = {
            "rows": len(rules),
            "rules_judged": sum(v.correct is not None for v in rules),
            **s,
            "check_fraction": self.check_fraction,
            "disagreement_rate": round(s["disagreements"] / s["compared"], 4) if s["compared"] else None,
            "disagreement_rows": disagreement_rows[:50],  # row positions in the table, for a look by hand
        }
        return out, {"judge": stats}


@register_factory("judge")
def make_judge(**options: Any) -> LLMJudge:
    return LLMJudge(**options)


@register_factory("math+judge")
def make_math_judge_cascade(**options: Any) -> Cascade:
    cascade_keys = {"check_fraction", "seed", "judge_reasons"}
    judge = LLMJudge(**{k: v for k, v in options.items() if k not in cascade_keys})
    return Cascade(verify_math, judge, **{k: v for k, v in options.items() if k in cascade_keys})
