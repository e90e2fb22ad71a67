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

# Words that introduce an answer, in the languages real traces answer in.
_ANSWER_WORD = (r"(?:final\s+|correct\s+)?(?:answer|option|réponse|respuesta|resposta|antwort|jibu|ответ)"
                r"|(?:সঠিক\s+)?উত্তর(?:টি)?|正解|答案|答え|సమాధానం|คำตอบ")
# A line `Answer: X` (simple-evals), in any of those languages, bold or not, the letter alone or followed by its
# option text ("Answer: B. 同理心", "**উত্তর:** C", "**Answer:** D (Ellipse)"); "Answer: A bit more..." is not.
_ANSWER_LINE = re.compile(
    rf"^[\s*#>]*(?:{_ANSWER_WORD})\s*\**\s*[:：][\s*]*(?:(?:option|বিকল্প|অপশন)\s+)?\$?[(\[]?([A-Z])[)\]]?\$?"
    r"(?=$|[\s*]*$|[.):,*\]]|\s+\()",
    re.IGNORECASE | re.MULTILINE,
)
_BOXED_LETTER = re.compile(r"\\boxed\s*\{\s*(?:\\text(?:bf)?\s*\{)?\s*\(?((?-i:[A-Z]))\)?\s*\}?\s*\}")
# Looser statements, uppercase letters only: "the answer is (B)", "the correct answer is **D. ...**",
# "making **B** the correct answer", "which corresponds to option **C**", "সঠিক উত্তরটি হলো **C. ...".
_LOOSE = [
    re.compile(rf"(?:{_ANSWER_WORD})\s*\**\s*(?:is|est|es|ist|হলো|হল|是|は)\s*[:：]?\s*[*\"'(\[$]*\s*(?:option\s+|choice\s+)?"
               r"[*(\[$]*\\?(?:boxed\{|text\{)?((?-i:[A-Z]))(?![^\W\d_])(?!(?<=I)\s+(?-i:[a-z]))", re.IGNORECASE),  # not "I think"
    re.compile(r"[*(]*((?-i:[A-Z]))[*)]*\s+(?:is\s+)?the\s+(?:correct|right|best)\s+(?:answer|option|choice)\b", re.IGNORECASE),
    re.compile(r"\banswer\s*[:：]\s*\**\s*\(?((?-i:[A-Z]))\)?\**(?=[\s.,;)]|$)(?!\s+(?-i:[a-z]))", re.IGNORECASE),  # "... Answer: **C**."
    re.compile(r"সঠিক\s+উত্তর(?:টি)?\s*[:：]?[\s*]*((?-i:[A-Z]))(?![^\W\d_])"),
    re.compile(r"\bcorresponds?\s+to\s+(?:option\s+|choice\s+)?[*(]*((?-i:[A-Z]))(?![^\W\d_])", re.IGNORECASE),
]
# A last line that is an option on its own: "**C. আইরিশ আবরণ সংকুচিত থাকে**", "(B)", "**D**".
_OPTION_LINE = re.compile(r"^[\s*#>]*\(?((?-i:[A-Z]))\)?(?:[.):]\s+\S.*|[\s*.]*)$")


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
    """The letter of the last `Answer: X` line or `\\boxed{X}`, whichever comes last; else of the last looser
    statement ("the answer is (X)", "X is the correct answer", "corresponds to option X"); else of a last line
    that is an option on its own; None when absent."""
    text = _final(completion)
    stated = [(m.start(), m.group(1)) for pattern in (_ANSWER_LINE, _BOXED_LETTER) for m in pattern.finditer(text)]
    if stated:
        return max(stated)[1].upper()
    loose = [(m.start(), m.group(1)) for pattern in _LOOSE for m in pattern.finditer(text)]
    if loose:
        return max(loose)[1].upper()
    lines = [line for line in text.splitlines() if line.strip()]
    last = _OPTION_LINE.match(lines[-1]) if lines else None
    return last.group(1) if last else None


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
