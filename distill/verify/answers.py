"""Answer parsers per benchmark kind, registered as verifiers (distill.verify.registry).

- `math`: the final `\\boxed{}` answer, compared by math-verify (distill.verify.math.verify_math);
- `multiple_choice`: the last line of the form `Answer: $LETTER` (simple-evals' GPQA/MMLU convention),
  compared with the gold letter; a looser "the answer is (B)" is accepted only when no such line exists;
- `json`: the last JSON object in the answer that has the key (a fenced ```json block or a bare
  object), its value compared with the reference (numbers numerically, strings case- and space-folded).

All read the final answer section the math verifier reads (distill.verify.extract.final_text: the text after
`</think>`, the last `<answer>` block's content; for reasoning that never closed, only an explicit final answer,
else the row is `unfinished_reasoning`, never correct).
Prompt templates for each kind live here too, so the eval manifest can record the one that was used.
"""

from __future__ import annotations

import json
import re

from distill.verify.extract import UNFINISHED, final_text, unfinished_without_answer
from distill.verify.registry import Verdict, register, register_factory

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

PROMPT_TEMPLATES = {
    # R1's evaluation prompt for math
    "math": "{question}\nPlease reason step by step, and put your final answer within \\boxed{}.",
    # simple-evals' multiple-choice template
    "multiple_choice": (
        "Answer the following multiple choice question. The last line of your response should be of the "
        "following format: 'Answer: $LETTER' (without quotes) where LETTER is one of {letters}. Think step by "
        "step before answering.\n\n{question}\n\n{choices}"
    ),
    "json": "{question}\n\nEnd your response with a JSON object on its own line: {\"answer\": <your answer>}",
}

_ANSWER_LINE = re.compile(r"^\s*\**\s*answer\s*\**\s*[:：]\s*\**\s*\$?\(?([A-Z])\)?\$?\s*\**\s*\.?\s*$", re.IGNORECASE | re.MULTILINE)
_LOOSE = re.compile(r"\banswer\s+is\s*:?\s*\(?\$?\\?(?:boxed\{|text\{)?([A-Z])\b", re.IGNORECASE)


def render_prompt(template: str, question: str, choices: list[str] | None = None) -> str:
    """Fill `{question}`, `{choices}` (lettered lines) and `{letters}`; other braces stay as they are."""
    choices = choices or []
    lettered = "\n".join(f"{LETTERS[i]}) {c}" for i, c in enumerate(choices))
    return (
        template.replace("{question}", question)
        .replace("{choices}", lettered)
        .replace("{letters}", LETTERS[: len(choices)] if choices else "A, B, C, D")
    )


def _final(completion: str) -> str:
    return final_text(completion or "")


def extract_choice(completion: str) -> str | None:
    """The letter of the last `Answer: X` line, else of a last "the answer is (X)"; None when absent."""
    text = _final(completion)
    lines = _ANSWER_LINE.findall(text)
    if lines:
        return lines[-1].upper()
    loose = _LOOSE.findall(text)
    return loose[-1].upper() if loose else None


def _json_objects(text: str) -> list[dict]:
    """Every JSON object in `text`, in order (fenced blocks and bare `{...}` spans)."""
    found = []
    decoder = json.JSONDecoder()
    i = text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        i = text.find("{", end)
    return found


def extract_json_answer(completion: str, key: str = "answer"):
    """The value of `key` in the last JSON object that has it; None when there is none."""
    for obj in reversed(_json_objects(_final(completion))):
        if key in obj:
            return obj[key]
    return None


def _number(x) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    try:
        return float(str(x).replace(",", "").strip())
    except ValueError:
        return None


def _fold(x) -> str:
    return " ".join(str(x).split()).casefold()


def values_match(got, gold) -> bool:
    a, b = _number(got), _number(gold)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-9 * max(1.0, abs(b))
    if isinstance(got, (list, dict)) or isinstance(gold, (list, dict)):
        return json.dumps(got, sort_keys=True) == json.dumps(gold, sort_keys=True)
    return _fold(got) == _fold(gold)


def gold_letter(reference: str | None) -> str | None:
    """A gold letter from "B", "(B)", "b" or an index "1" (0-based: B)."""
    if reference is None:
        return None
    ref = str(reference).strip().strip("()").strip()
    if len(ref) == 1 and ref.upper() in LETTERS:
        return ref.upper()
    if ref.isdigit() and int(ref) < len(LETTERS):
        return LETTERS[int(ref)]
    return None


@register("multiple_choice")
def verify_choice(completion: str, reference: str | None) -> Verdict:
    gold = gold_letter(reference)
    if gold is None:
        return Verdict(None, "no_reference" if reference in (None, "") else "unparseable_reference")
    if unfinished_without_answer(completion):
        return Verdict(False, UNFINISHED)
    got = extract_choice(completion)
    if got is None:
        return Verdict(None, "no_answer")
    return Verdict(got == gold, "match" if got == gold else "mismatch")


def _json_verifier(key: str = "answer"):
    def verify_json(completion: str, reference: str | None) -> Verdict:
        """Reference: the expected value, as JSON text ("42", "\"Paris\"", "[1, 2]") or a bare string."""
        if reference is None or str(reference).strip() == "":
            return Verdict(None, "no_reference")
        try:
            gold = json.loads(reference)
        except (json.JSONDecodeError, TypeError):
            gold = reference
        if unfinished_without_answer(completion):
            return Verdict(False, UNFINISHED)
        got = extract_json_answer(completion, key)
        if got is None:
            return Verdict(None, "no_answer")
        ok = values_match(got, gold)
        return Verdict(ok, "match" if ok else "mismatch")

    return verify_json


verify_json = register("json")(_json_verifier())
register_factory("json")(_json_verifier)  # get_verifier("json", key="final") reads another field
