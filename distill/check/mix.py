"""The non-reasoning upsampling factor: how often the merge would repeat each non-reasoning row.

The merge sizes the non-reasoning side in tokens, `non_reasoning_fraction` of the set. The reasoning
tokens are estimated as `distill plan` does (n_train x n samples, half kept, keep_k applied, each
min(max_tokens, 6000) tokens); the non-reasoning tokens available are counted from the local sources
(UTF-8 bytes / 4, the merge's own estimate). The 48 bundled rows against a 200k-prompt recipe come out
repeated ~10^5 times. A cap (the first of NONREASONING_CAP_FIELDS the merge section has) bounds it; in a
version without one, more than UNCAPPED_LIMIT copies per row is an error.
"""

from __future__ import annotations

import math
from pathlib import Path

from distill.check.findings import MISSING, Checker, setting
from distill.mix.nonreasoning import source_rows
from distill.planning.plan import R1_MEAN_COMPLETION, Assumptions

NONREASONING_CAP_FIELDS = ("max_repeat", "max_upsample", "max_repeats", "max_copies")
UNCAPPED_LIMIT = 10  # copies per row tolerated where the schema has no cap


def reasoning_tokens(r) -> float:
    s = r.sampling
    kept = r.prompts.n_train * s.n * Assumptions(completion_tokens=0).keep_rate
    if s.rejection.keep_k:
        kept = min(kept, r.prompts.n_train * s.rejection.keep_k)
    return kept * min(s.max_tokens, R1_MEAN_COMPLETION)


def available_tokens(c: Checker) -> tuple[float, int, list[str]]:
    """(tokens, rows, sources not counted) of the non-reasoning sources that can be read here."""
    tokens, rows, unknown = 0.0, 0, []
    for i, src in enumerate(c.recipe.merge.non_reasoning):
        if src.generate or src.kind == "hf" or (src.kind == "file" and not Path(src.path).is_file()):
            unknown.append(f"merge.non_reasoning[{i}] ({src.label()})")
            continue
        got = source_rows(src)[: src.max_rows or None]
        rows += len(got)
        tokens += sum(math.ceil(len((x["response"] or "").encode()) / 4) + 1 for x in got)
    return tokens, rows, unknown


def check_upsampling(c: Checker) -> None:
    m = c.recipe.merge
    f = m.non_reasoning_fraction
    if f <= 0 or not m.non_reasoning:
        return
    target = m.total_tokens * f if m.total_tokens else reasoning_tokens(c.recipe) * f / (1 - f)
    avail, rows, unknown = available_tokens(c)
    if unknown:
        c.note(f"non-reasoning sources not counted (Hub, generated or absent here): {', '.join(unknown)}")
    if avail <= 0:
        return
    factor = target / avail
    name = next((n for n in NONREASONING_CAP_FIELDS if setting(m, n) is not MISSING), None)
    what = (f"{rows} non-reasoning rows (~{avail:,.0f} tokens) against a target of ~{target:,.0f} tokens "
            f"({f:.0%} of ~{target / f:,.3g}): each row repeated ~{factor:,.3g} times")
    if name is None:
        if factor > UNCAPPED_LIMIT:
            c.error("merge.non_reasoning_fraction", f"{what}, and this version has no cap (over {UNCAPPED_LIMIT} is refused here): "
                    "add non-reasoning data or lower the fraction")
        else:
            c.ok(f"merge: {what} (no cap in this version; over {UNCAPPED_LIMIT} is refused)")
        return
    cap = setting(m, name)
    default = type(m).model_fields[name].get_default(call_default_factory=True)
    if cap is not None and factor > cap:
        c.warn(f"merge.{name}", f"{what}; capped at {cap} (default {default}): the non-reasoning share will be "
               f"~{avail * cap / (avail * cap + target * (1 - f) / f):.1%} instead of {f:.0%}")
    elif cap is None and factor > UNCAPPED_LIMIT:
        c.error(f"merge.{name}", f"{what}, uncapped (null; default {default})")
    else:
        c.ok(f"merge: {what} (cap merge.{name}: {cap}, default {default})")
