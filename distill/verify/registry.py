"""The one verifier registry shared by RL rewards, rejection sampling and evaluation, and the batch mapping.

A verifier maps (completion, reference) to a Verdict. `correct` is True, False, or None for "could not be
judged" (no reference, an unparseable reference, no answer); None is never counted as correct.

Of distill.verify this module imports only `limits` and `screen` (the per-row bounds, below), none of the
verifiers: they register themselves from their own modules (`math`, `code`, `judge`, `answers`); importing the
package (`distill.verify`, which any `distill.verify.<module>` import runs first) imports them all, so the
registry is full whatever was imported.

Verifiers that need resources are built by factories: `get_verifier("judge", engine=...)` (an LLM judge) and
`get_verifier("math+judge", engine=...)` (rules first, the judge for what they leave unverifiable). A verifier
object may offer `verify_batch(completions, references, prompts=, workers=)` returning (verdicts, stats);
`distill.verify.table` uses it. Registered per-row verifiers (math, multiple_choice, json) always run in
worker processes with a time and memory limit per row (distill.verify.limits: Math-Verify can hang on one
answer, and its own SIGALRM timeouts fail in threads); a row over the limit is unverifiable, with the reason.
Other per-row verifiers (a CodeVerifier, bounded by its sandbox) run in a process pool when `workers > 1`.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from distill.core.workers import tied_initializer
from distill.verify.limits import Overrun, shared_pool
from distill.verify.screen import SCREENS


@dataclass(frozen=True)
class Verdict:
    correct: bool | None  # None: unverifiable, which callers must never treat as correct
    reason: str


Verifier = Callable[[str, str | None], Verdict]
VERIFIERS: dict[str, Verifier] = {}
# Verifiers built with options or resources (an engine, sandbox limits): get_verifier(name, **options).
FACTORIES: dict[str, Callable[..., Verifier]] = {}


def register(name: str) -> Callable[[Verifier], Verifier]:
    def deco(fn: Verifier) -> Verifier:
        if name in VERIFIERS:
            raise ValueError(f"verifier {name!r} is already registered")
        VERIFIERS[name] = fn
        return fn

    return deco


def register_factory(name: str) -> Callable[[Callable[..., Verifier]], Callable[..., Verifier]]:
    def deco(factory: Callable[..., Verifier]) -> Callable[..., Verifier]:
        if name in FACTORIES:
            raise ValueError(f"verifier factory {name!r} is already registered")
        FACTORIES[name] = factory
        return factory

    return deco


def names() -> list[str]:
    """Every verifier name `get_verifier` knows, plain and factory-built, sorted."""
    return sorted(set(VERIFIERS) | set(FACTORIES))


def get_verifier(name: str, **options: Any) -> Verifier:
    """The registered verifier `name`; with options (or for factory-only verifiers), a new one built by its
    factory, e.g. `get_verifier("math+judge", engine=engine, check_fraction=0.1)`."""
    if not options and name in VERIFIERS:
        return VERIFIERS[name]
    if name in FACTORIES:
        try:
            return FACTORIES[name](**options)
        except TypeError as e:
            raise ValueError(f"verifier {name!r}: {e}") from None
    if name in VERIFIERS:
        raise ValueError(f"verifier {name!r} takes no options (got {', '.join(sorted(options))})")
    raise ValueError(f"unknown verifier {name!r}; known verifiers: {', '.join(names())}")


get = get_verifier


# --- routing rows by their task ----------------------------------------------------------------------------

# Verifiers that judge a math answer: a `math` row keeps one of these when it is the default.
MATH_VERIFIERS = ("math", "judge", "math+judge")
# Why a `general` row gets no verdict when there is no judge: no rule can check free-form text.
NO_GENERAL_VERIFIER = "no_verifier: general rows need a judge (verify.judge.model)"


def verifier_for_task(task: str | None, default: str = "math", judge: bool = False) -> str | None:
    """The verifier for a row of `task` (distill.core.schema.TASKS): `math` rows get the default when it
    judges math (math, judge, math+judge), else `math`; `code` rows `code`; `general` rows the LLM judge when
    one is configured (`judge`), else none; a row with no task the default. None: no verifier applies (the
    row is unverifiable; see unrouted_reason)."""
    if task is None:
        return default
    if task == "math":
        return default if default in MATH_VERIFIERS else "math"
    if task == "code":
        return "code"
    if task == "general":
        return "judge" if judge else None
    return None


def unrouted_reason(task: str | None) -> str:
    """The verdict reason for a row verifier_for_task gave no verifier."""
    return NO_GENERAL_VERIFIER if task == "general" else f"unknown_task: {task}"


# --- running many rows -------------------------------------------------------------------------------------


def verify_chunk(fn: Verifier, rows: list[tuple[str, str | None]]) -> list[Verdict]:
    return [fn(c, r) for c, r in rows]


def call_verifier(name: str, completion: str, reference: str | None) -> Verdict:
    return VERIFIERS[name](completion, reference)  # in a worker: the name pickles where a closure would not


# Run once where the workers are forked from, so they start with Math-Verify's lazily built parsers loaded.
WARM_UP = (call_verifier, ("math", "\\boxed{1}", "1"))


def bounded_verdicts(name: str, completions: Sequence[str], references: Sequence[str | None], workers: int = 1,
                     time_s: float | None = None) -> list[Verdict]:
    """Registered verifier `name` over the rows, in order, each row in a worker process under the limits of
    distill.verify.limits (up to `workers` rows at once; `time_s` per row, default limits.ROW_TIME_S). A row
    its screen refuses, over the time or memory limit, or whose worker died is unverifiable with the reason
    why, never correct. Safe in any thread."""
    screen = SCREENS.get(name)
    out: list[Verdict | None] = [None] * len(completions)
    sent: list[int] = []
    for i, (c, r) in enumerate(zip(completions, references)):
        why = screen(c, r) if screen is not None else None
        if why is None:
            sent.append(i)
        else:
            out[i] = Verdict(None, why)
    args = [(name, completions[i], references[i]) for i in sent]
    results = shared_pool(WARM_UP).map(call_verifier, args, workers, time_s)
    for i, res in zip(sent, results):
        out[i] = Verdict(None, res.reason) if isinstance(res, Overrun) else res
    return out  # type: ignore[return-value]


def bounded_name(fn: Verifier) -> str | None:
    """The name `fn` is registered under when it runs bounded: a plain verifier with no batch method of its own
    (None: factory-built, unregistered, or a verifier object that bounds itself, such as the code sandbox)."""
    if getattr(fn, "verify_batch", None) is not None:
        return None
    return next((name for name, f in VERIFIERS.items() if f is fn), None)


def map_verdicts(fn: Verifier, completions: Sequence[str], references: Sequence[str | None], workers: int = 1) -> list[Verdict]:
    """fn over the rows, in order. A registered plain verifier runs bounded (bounded_verdicts); another
    (a verifier object such as CodeVerifier, which must pickle) in a process pool when workers > 1, its
    workers spawned, not forked (the caller may hold threads: Prefect, torch; forking those can deadlock),
    and killed by the kernel when this process dies."""
    name = bounded_name(fn)
    if name is not None:
        return bounded_verdicts(name, completions, references, workers)
    rows = list(zip(completions, references))
    if workers <= 1 or len(rows) < 2:
        return verify_chunk(fn, rows)
    n_chunks = min(len(rows), workers * 4)
    chunks = [rows[i::n_chunks] for i in range(n_chunks)]  # strided: slow rows spread over the workers
    ctx = multiprocessing.get_context("spawn")
    init, initargs = tied_initializer()  # workers die with this process, SIGKILL included
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=init, initargs=initargs) as pool:
        done = list(pool.map(verify_chunk, [fn] * n_chunks, chunks))
    out: list[Verdict] = [None] * len(rows)  # type: ignore[list-item]
    for i, verdicts in enumerate(done):
        out[i::n_chunks] = verdicts
    return out
