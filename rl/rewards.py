"""GRPO rewards, built from the measures the rest of the pipeline uses, so RL, rejection sampling,
curation and evaluation agree on what "correct", "formatted" and "in the prompt's language" mean.

The recipe lists rewards as objects, `rewards: [{name: accuracy, weight: 1.0, options: {...}}, ...]`, typed
per reward in distill/config/rewards.py (checked when the recipe loads):

| name                 | value                                                         | options                      |
|----------------------|---------------------------------------------------------------|------------------------------|
| accuracy             | 1 / 0 from the verifier registry (distill.verify); None when  | verifier: auto\\|math\\|code   |
|                      | the reference cannot be judged (missing, unparseable)         | (auto: the row's `task`),    |
|                      |                                                               | workers (code: parallel)     |
| format               | 1 / 0: one non-empty think block then an answer, in the       |                              |
|                      | template's answer format (prefilled `<think>` re-added)       |                              |
| language_consistency | share of the chain of thought in the prompt's language, the   | scope: reasoning\\|completion |
|                      | curation measure (filters.curate.language_measures); None     |                              |
|                      | when there is no chain of thought to measure                  |                              |
| length               | DAPO's soft overlong penalty: 0 up to max_tokens - buffer,    | max_tokens, buffer_tokens    |
|                      | then linearly down to -1 at max_tokens                        |                              |
| repetition           | -max_penalty x the curation repetition measure (share of      | max_penalty                  |
|                      | repeated lines / word 10-grams)                               |                              |

Each reward follows TRL's reward-function signature, `reward(prompts=, completions=, completion_ids=,
**dataset_columns) -> list[float | None]`, one value per completion. None means "cannot judge this one"
(TRL leaves it out of the weighted sum), never a silent 0 or 1. Completions may be strings or
conversational (`[{"role": "assistant", "content": ...}]`). Slow rewards (code execution) judge a batch
in parallel on a thread pool (each test runs in its own sandboxed process).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, ClassVar, Iterable

from distill.config.rewards import (
    AccuracyReward,
    FormatReward,
    LanguageConsistencyReward,
    LengthReward,
    RepetitionReward,
    RewardEntry,
    RewardOptions,
)
from distill.core.schema import split_think
from distill.verify.registry import bounded_name, bounded_verdicts, get_verifier
from filters.curate import language_measures
from filters.repetition import repetition_scores
from rl.templates import Template

# Verdict reasons that mean "the reference cannot be judged against": no reward, not zero.
_CANNOT_JUDGE = {"no_reference", "unparseable_reference", "judge_unparseable"}


def completion_text(completion) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):  # conversational: the assistant message(s)
        return "".join(m.get("content") or "" for m in completion if m.get("role", "assistant") == "assistant")
    raise TypeError(f"unsupported completion type {type(completion).__name__}")


def _column(columns: dict[str, Any], name: str, n: int) -> list:
    v = columns.get(name)
    return list(v) if isinstance(v, (list, tuple)) and len(v) == n else [None] * n


class Reward:
    """A reward: `score(texts, columns, completion_ids)` over a batch of produced texts (prefill added).

    `entry` is the recipe's typed entry for it (distill.config.rewards), which names it; the options come
    from the recipe (`options`, already validated) or as keyword arguments, validated the same way.
    `max_completion_length` is GRPO's generation limit, for rewards whose defaults depend on it.
    """

    entry: ClassVar[type[RewardEntry]]
    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = cls.entry.model_fields["name"].default

    def __init__(self, template: Template | None = None, options: RewardOptions | None = None, *,
                 max_completion_length: int | None = None, **given: Any):
        self.template = template or Template("chat", "boxed")
        self.options = options if options is not None else self.entry.model_validate({"options": given}).options
        self.max_completion_length = max_completion_length
        self.__name__ = self.name  # TRL names the logged metric `rewards/<__name__>/mean`

    def __call__(self, completions, prompts=None, completion_ids=None, **columns) -> list[float | None]:
        texts = [self.template.produced(completion_text(c)) for c in completions]
        out = self.score(texts, columns, completion_ids)
        if len(out) != len(texts):
            raise RuntimeError(f"reward {self.name} returned {len(out)} values for {len(texts)} completions")
        return out

    def score(self, texts: list[str], columns: dict[str, Any], completion_ids) -> list[float | None]:
        raise NotImplementedError


class Accuracy(Reward):
    entry = AccuracyReward

    def __init__(self, template: Template | None = None, options: RewardOptions | None = None, **kw: Any):
        super().__init__(template, options, **kw)
        self.verifier, self.workers = self.options.verifier, self.options.workers
        self._pool: ThreadPoolExecutor | None = None

    def _verifier_for(self, task: str | None):
        kind = self.verifier if self.verifier != "auto" else ("code" if task == "code" else "math")
        return get_verifier(kind)

    @staticmethod
    def _value(verdict) -> float | None:
        if verdict.correct is None:
            # no reference or an unparseable one cannot be judged; a completion without an answer is wrong
            return None if verdict.reason in _CANNOT_JUDGE or verdict.reason.startswith("error") else 0.0
        return 1.0 if verdict.correct else 0.0

    def score(self, texts, columns, completion_ids):
        n = len(texts)
        answers, tasks = _column(columns, "answer", n), _column(columns, "task", n)
        jobs = [(self._verifier_for(t), c, a) for c, a, t in zip(texts, answers, tasks)]
        slow = {i for i, (fn, _, _) in enumerate(jobs) if getattr(fn, "verify_batch", None) is not None}  # code
        out: list[float | None] = [None] * n
        if len(slow) > 1 and self.workers > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="code-reward")
            order = sorted(slow)
            for i, v in zip(order, self._pool.map(lambda j: jobs[j][0](jobs[j][1], jobs[j][2]), order)):
                out[i] = self._value(v)
        else:
            slow = set()
        # math (and other plain verifiers): each row in a worker process under a time limit (distill.verify.limits),
        # so one answer that would hang sympy costs its row's limit, not the training step
        bounded: dict[str, list[int]] = {}
        for i, (fn, c, a) in enumerate(jobs):
            name = bounded_name(fn) if i not in slow else None
            if name is not None:
                bounded.setdefault(name, []).append(i)
            elif i not in slow:
                out[i] = self._value(fn(c, a))
        for name, rows in bounded.items():
            verdicts = bounded_verdicts(name, [texts[i] for i in rows], [answers[i] for i in rows], self.workers)
            for i, v in zip(rows, verdicts):
                out[i] = self._value(v)
        return out


class Format(Reward):
    entry = FormatReward

    def score(self, texts, columns, completion_ids):
        # texts already carry the prefill; Template.format_ok adds it itself, so check the bare form
        t = Template(self.template.kind, self.template.answer_format)
        return [1.0 if t.format_ok(x) else 0.0 for x in texts]


class LanguageConsistency(Reward):
    """R1's language-consistency reward: the share of the chain of thought written in the prompt's
    language (the row's `language` column, else detected from the question), measured exactly as the
    curate stage measures `target_lang_share`, so RL optimises what curation later thresholds."""

    entry = LanguageConsistencyReward

    def score(self, texts, columns, completion_ids):
        n = len(texts)
        questions = _column(columns, "question", n)
        langs = _column(columns, "language", n)
        measured, idx = [], []
        for i, text in enumerate(texts):
            if self.options.scope == "completion":
                part = text
            else:
                s = split_think(text)
                part = s.reasoning if s.has_think else None
            if part and part.strip():
                measured.append(part)
                idx.append(i)
        out: list[float | None] = [None] * n
        if measured:
            cols = language_measures(measured, [questions[i] or "" for i in idx], [langs[i] for i in idx])
            for i, share in zip(idx, cols["target_lang_share"].to_list()):
                out[i] = float(share)
        return out


class Length(Reward):
    """DAPO's soft overlong punishment: completions near the generation limit lose reward smoothly."""

    entry = LengthReward

    def __init__(self, template: Template | None = None, options: RewardOptions | None = None, **kw: Any):
        super().__init__(template, options, **kw)
        self.max_tokens = self.options.max_tokens if self.options.max_tokens is not None else self.max_completion_length
        if self.max_tokens is None or self.max_tokens < 2:
            raise ValueError("reward length: options.max_tokens (>= 2) is needed (default: GRPO's max_completion_length)")
        self.buffer = self.options.buffer_tokens or max(1, self.max_tokens // 4)
        if not 0 < self.buffer < self.max_tokens:
            raise ValueError(f"reward length: options.buffer_tokens must be in 1..{self.max_tokens - 1}")

    def score(self, texts, columns, completion_ids):
        out = []
        for i, text in enumerate(texts):
            n = len(completion_ids[i]) if completion_ids is not None else max(1, len(text) // 4)
            free = self.max_tokens - self.buffer
            out.append(0.0 if n <= free else max(-1.0, (free - n) / self.buffer))
        return out


class Repetition(Reward):
    entry = RepetitionReward

    def score(self, texts, columns, completion_ids):
        k = float(self.options.max_penalty)
        out = []
        for text in texts:
            dup_lines, _, dup_ngrams = repetition_scores(text)
            out.append(-k * max(dup_lines, dup_ngrams) or 0.0)  # no -0.0
        return out


REWARDS: dict[str, type[Reward]] = {r.name: r for r in (Accuracy, Format, LanguageConsistency, Length, Repetition)}


def build_rewards(specs: Iterable[RewardEntry], template: Template | None = None,
                  max_completion_length: int | None = None) -> tuple[list[Callable], list[float]]:
    """Reward objects and weights for `GRPOTrainer(reward_funcs=..., args=GRPOConfig(reward_weights=...))`,
    from the recipe's typed entries (`teacher.grpo.rewards`)."""
    funcs, weights = [], []
    for spec in specs:
        funcs.append(REWARDS[spec.name](template, spec.options, max_completion_length=max_completion_length))
        weights.append(spec.weight)
    return funcs, weights


# Kept for callers that build one reward by name (tests, notebooks).
def accuracy_reward(verifier: str = "math", template: Template | None = None) -> Accuracy:
    return Accuracy(template, verifier=verifier)


def format_reward(template: Template | None = None) -> Format:
    return Format(template)
