"""The demo task: small arithmetic problems with gold answers, generated deterministically.

SmolLM2-135M-Instruct solves two-digit additions sometimes (~22 % of samples at T=0.6), so every stage
has real signal: rejection sampling keeps some, GRPO has rewards that vary, SFT can move the student.
Train, eval and cold-start problems come from one shuffled pool and never overlap.
"""

from __future__ import annotations

import random

from distill.core.schema import THINK_CLOSE, THINK_OPEN, content_id

INSTRUCTION = (
    "Think step by step inside <think> </think> tags, then give the final answer in \\boxed{}."
)

_TEMPLATES = [
    "What is {a} + {b}?",
    "Compute {a} + {b}.",
    "Add {a} and {b}.",
    "Tom has {a} apples and buys {b} more. How many apples does Tom have now?",
    "A shelf holds {a} books and {b} more are added. How many books are on the shelf?",
]


def _pool(seed: int) -> list[tuple[int, int, int]]:
    """All (template, a, b) triples with two-digit operands, shuffled by `seed`."""
    triples = [(t, a, b) for t in range(len(_TEMPLATES)) for a in range(10, 100) for b in range(10, 100)]
    random.Random(seed).shuffle(triples)
    return triples


def _question(t: int, a: int, b: int) -> str:
    return _TEMPLATES[t].format(a=a, b=b)


def make_prompts(n_train: int, n_eval: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Disjoint train and eval prompts: rows with prompt_id, prompt, answer, task, language, source."""
    pool = _pool(seed)
    if n_train + n_eval > len(pool) // 2:
        raise ValueError(f"demo task: at most {len(pool) // 2} prompts (asked {n_train + n_eval})")

    def row(t: int, a: int, b: int, split: str) -> dict:
        prompt = f"{_question(t, a, b)} {INSTRUCTION}"
        return {
            "prompt_id": content_id("demo_arithmetic", t, a, b),
            "prompt": prompt,
            "answer": str(a + b),
            "task": "math",
            "language": "en",
            "source": f"demo_arithmetic/{split}",
        }

    eval_rows = [row(*x, "eval") for x in pool[:n_eval]]
    train_rows = [row(*x, "train") for x in pool[n_eval : n_eval + n_train]]
    return train_rows, eval_rows


def reasoning_trace(a: int, b: int) -> str:
    """A short, readable cold-start trace: restate the task, state the sum, box it.

    Measured on SmolLM2-135M after 24 LoRA steps (T=0.6, 32 held-out prompts x 4): this form reached
    68 % correct; a tens-then-ones decomposition reached 4-24 %, since the model miscopies digits.
    """
    return (
        f"{THINK_OPEN}\nI need to add {a} and {b}.\n{a} + {b} = {a + b}.\n{THINK_CLOSE}\n"
        f"The answer is \\boxed{{{a + b}}}."
    )


def cold_start_rows(n: int, seed: int = 0, exclude: set[str] | None = None) -> list[dict]:
    """Prompt/completion rows of readable think traces for the cold-start SFT (R1's first stage).

    Drawn from the far end of the pool so they never meet train or eval prompts of the same seed;
    `exclude` (prompt ids) guards against any overlap left.
    """
    exclude = exclude or set()
    rows = []
    for t, a, b in reversed(_pool(seed)):
        pid = content_id("demo_arithmetic", t, a, b)
        if pid in exclude:
            continue
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"{_question(t, a, b)} {INSTRUCTION}"}],
                "completion": [{"role": "assistant", "content": reasoning_trace(a, b)}],
            }
        )
        if len(rows) == n:
            break
    return rows
