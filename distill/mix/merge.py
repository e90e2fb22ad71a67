"""Merge curated reasoning traces with non-reasoning samples into one SFT set, mixed by token budget.

R1 trained its students on ~600k reasoning and ~200k non-reasoning samples (writing, factual QA,
self-cognition, translation), the latter without a chain of thought. Rows are not equal: a reasoning
trace runs to thousands of tokens and "hello" to ten, so the mix is set in tokens (what the loss sees):
`non_reasoning_fraction` of the tokens are non-reasoning (default 0.25, i.e. 3:1), split across
categories and sources by their weights (or as available), each bucket up- or downsampled with a fixed
seed to its token target. Every source row is either in the set (perhaps several times) or in the
dropped table with its reason.

Rows come out in TRL's conversational prompt/completion form; reasoning completions keep their
`<think>` block, non-reasoning ones carry none or an empty one (distill.mix.nonreasoning).
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import polars as pl

from distill.config.merge import KindWeights, MergeConfig, MixWeights
from distill.core.schema import PREFILL, content_id, full_completion
from distill.core.storage import atomic_dir
from distill.mix.nonreasoning import build_non_reasoning, resolve_think_style
from distill.training.student import resolve_chat_template

MSGS = pl.List(pl.Struct({"role": pl.Utf8, "content": pl.Utf8}))
SFT_SCHEMA = {
    "id": pl.Utf8,
    "kind": pl.Utf8,  # "reasoning" | "non_reasoning"
    "category": pl.Utf8,
    "source": pl.Utf8,
    "prompt": MSGS,
    "completion": MSGS,
    "tokens": pl.Int64,  # tokens the mix counted (merge.count)
    "copy": pl.Int64,  # 0 for a row's first copy; upsampled rows repeat with 1, 2, ...
}
DROPPED_SCHEMA = {k: v for k, v in SFT_SCHEMA.items() if k != "copy"} | {"drop_reason": pl.Utf8}
KINDS = ("reasoning", "non_reasoning")

TokenCounter = Callable[[list[dict]], list[int]]


@dataclass
class MergeResult:
    df: pl.DataFrame  # the SFT set, shuffled
    mix: dict  # the mix table and summary (report.json's `mix`)
    dropped: pl.DataFrame  # every source row left out, with drop_reason


def _conv(prompt: str, completion: str, system_prompt: str | None = None) -> tuple[list[dict], list[dict]]:
    msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": prompt}]
    return msgs, [{"role": "assistant", "content": completion}]


def reasoning_rows(kept: pl.DataFrame, system_prompt: str | None = None) -> list[dict]:
    """Curated traces (prompt, completion, id; optional task, source, prefill) as SFT rows. The assistant
    turn is the model's whole turn: a prefilled `<think>` (R1's template puts it in the prompt; the trace
    keeps it in its `prefill` column) is put back in front of the completion, so the block is complete
    whatever the student's template does."""
    rows = []
    for r in kept.iter_rows(named=True):
        prompt, completion = _conv(r["prompt"], full_completion(r["completion"], r.get(PREFILL)).strip(), system_prompt)
        rows.append({"id": r["id"], "kind": "reasoning", "category": r.get("task") or "math", "source": r.get("source") or "traces",
                     "prompt": prompt, "completion": completion})
    return rows


# --- counting tokens ---------------------------------------------------------------------------------------


def token_counter(tokenizer=None, count: str = "completion", chat_template: str | None = None) -> tuple[TokenCounter, str]:
    """(counter, description). `completion`: the assistant turns' tokens plus one EOS each (what the loss
    covers); `sequence`: the whole rendered row. Without a tokenizer: UTF-8 bytes / 4, an estimate."""
    if tokenizer is None:
        def estimate(rows: list[dict]) -> list[int]:
            if count == "sequence":
                return [sum(math.ceil(len(m["content"].encode()) / 4) + 4 for m in r["prompt"] + r["completion"]) for r in rows]
            return [sum(math.ceil(len(m["content"].encode()) / 4) + 1 for m in r["completion"]) for r in rows]

        return estimate, f"estimate (UTF-8 bytes / 4), {count}"
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__

    def counted(rows: list[dict]) -> list[int]:
        if count == "sequence":
            return [
                len(tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=True, chat_template=chat_template)["input_ids"])
                for r in rows
            ]
        texts = [m["content"] for r in rows for m in r["completion"]]
        lengths = iter(len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else iter(())
        return [sum(next(lengths) + 1 for _ in r["completion"]) for r in rows]

    return counted, f"{name} tokenizer, {count}"


def _count_in_batches(counter: TokenCounter, rows: list[dict], batch: int = 4096) -> list[int]:
    out: list[int] = []
    for i in range(0, len(rows), batch):
        out.extend(counter(rows[i : i + batch]))
    return out


# --- the token-budget mixer ----------------------------------------------------------------------------------


def _shares(avail: dict[str, int], weights: dict[str, float], where: str, warnings: list[str]) -> dict[str, float]:
    """Each name's share of a budget: by weight when weights are given, else by available tokens."""
    present = {k: v for k, v in avail.items() if v > 0}
    if not weights:
        total = sum(present.values())
        return {k: v / total for k, v in present.items()} if total else {}
    missing = sorted(set(present) - set(weights))
    if missing:
        raise ValueError(f"{where} has no weight for {', '.join(missing)} (list every one that has rows, or none)")
    for k in sorted(set(weights) - set(present)):
        if weights[k] > 0:
            warnings.append(f"{where}: {k!r} has weight {weights[k]} but no rows; its share goes to the others")
    total = sum(weights[k] for k in present)
    if total <= 0:
        raise ValueError(f"{where}: the weights of {', '.join(sorted(present))} sum to 0")
    return {k: weights[k] / total for k in present}


def _fill(rows: list[dict], target: float, rng: random.Random) -> list[int]:
    """How many copies of each row: whole copies while the target allows, then a seeded draw of single
    rows, each taken when it brings the total closer to the target (so |tokens - target| <= max row / 2)."""
    avail = sum(r["tokens"] for r in rows)
    if target <= 0 or avail <= 0:
        return [0] * len(rows)
    whole = int(target // avail)
    mult = [whole] * len(rows)
    rest, got = target - whole * avail, 0
    order = list(range(len(rows)))
    rng.shuffle(order)
    for i in order:
        t = rows[i]["tokens"]
        if got + t / 2 < rest:
            mult[i] += 1
            got += t
    return mult


def mix_by_tokens(
    rows: list[dict],
    *,
    non_reasoning_fraction: float,
    total_tokens: int | None = None,
    weights: KindWeights | None = None,
    seed: int = 0,
    max_repeat: int | None = None,
) -> tuple[list[dict], list[dict], dict]:
    """(chosen rows with `copy`, dropped rows with `drop_reason`, mix table). Rows need kind, category,
    source and tokens. Without total_tokens, reasoning keeps its tokens (reweighted when weights are
    given) and non-reasoning is sized to the fraction; with it, both sides are resampled to it.
    `max_repeat` caps a bucket's upsampling at that many times its tokens (merge.max_repeat): the copies
    beyond it are not made, and the shortfall is in the table (`shortfall_tokens`) and the warnings."""
    weights = weights or KindWeights()
    f = non_reasoning_fraction
    buckets: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if r["kind"] not in KINDS:
            raise ValueError(f"row {r['id']}: kind {r['kind']!r} is not one of {KINDS}")
        buckets[(r["kind"], r["category"], r["source"])].append(r)
    avail = {b: sum(r["tokens"] for r in rs) for b, rs in buckets.items()}
    kind_avail = {k: sum(v for b, v in avail.items() if b[0] == k) for k in KINDS}
    if total_tokens is not None:
        targets = {"reasoning": total_tokens * (1 - f), "non_reasoning": total_tokens * f}
    elif kind_avail["reasoning"] > 0:
        targets = {"reasoning": float(kind_avail["reasoning"]), "non_reasoning": kind_avail["reasoning"] * f / (1 - f)}
    else:  # no reasoning rows at all: the non-reasoning rows as they are
        targets = {"reasoning": 0.0, "non_reasoning": float(kind_avail["non_reasoning"])}
    for k in KINDS:
        if targets[k] > 0 and kind_avail[k] == 0:
            raise ValueError(f"merge: the mix wants {targets[k]:.0f} {k} tokens but no {k} rows are left")

    warnings: list[str] = []
    bucket_target: dict[tuple[str, str, str], float] = {}
    for kind in KINDS:
        w: MixWeights = getattr(weights, kind)
        cats = defaultdict(int)
        for (k, c, _), v in avail.items():
            if k == kind:
                cats[c] += v
        for cat, cshare in _shares(dict(cats), w.categories, f"merge.weights.{kind}.categories", warnings).items():
            srcs = {s: v for (k, c, s), v in avail.items() if k == kind and c == cat}
            for src, sshare in _shares(srcs, w.sources, f"merge.weights.{kind}.sources (category {cat})", warnings).items():
                bucket_target[(kind, cat, src)] = targets[kind] * cshare * sshare

    chosen, dropped, table = [], [], []
    for b in sorted(buckets):
        rs, target = buckets[b], bucket_target.get(b, 0.0)
        made = min(target, float(max_repeat * avail[b])) if max_repeat is not None else target
        if made < target:
            warnings.append(f"{'/'.join(b)}: upsampling capped at {max_repeat}x its {avail[b]:,} tokens (merge.max_repeat): "
                            f"{target - made:,.0f} of {target:,.0f} target tokens not made; add rows or raise the cap")
        mult = _fill(rs, made, random.Random(content_id(seed, *b)))
        for r, m in zip(rs, mult):
            if m == 0:
                dropped.append({**r, "drop_reason": "downsampled" if target > 0 else "zero_weight"})
            chosen.extend({**r, "copy": i} for i in range(m))
        table.append({
            "kind": b[0], "category": b[1], "source": b[2],
            "rows_available": len(rs), "tokens_available": avail[b],
            "rows": sum(mult), "unique_rows": sum(1 for m in mult if m), "tokens": sum(r["tokens"] * m for r, m in zip(rs, mult)),
            "target_tokens": target, "shortfall_tokens": round(target - made, 1),
        })
    random.Random(seed).shuffle(chosen)

    total = sum(t["tokens"] for t in table)
    target_total = sum(targets.values())
    for t in table:
        t["token_share"] = round(t["tokens"] / total, 5) if total else 0.0
        t["target_share"] = round(t["target_tokens"] / target_total, 5) if target_total else 0.0
        t["factor"] = round(t["tokens"] / t["tokens_available"], 4) if t["tokens_available"] else 0.0

    def group(keyf) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for t in table:
            g = out.setdefault(keyf(t), {"rows": 0, "tokens": 0, "rows_available": 0, "tokens_available": 0, "target_tokens": 0.0,
                                         "shortfall_tokens": 0.0})
            for key in g:
                g[key] += t[key]
        for g in out.values():
            g["token_share"] = round(g["tokens"] / total, 5) if total else 0.0
            g["target_share"] = round(g["target_tokens"] / target_total, 5) if target_total else 0.0
            g["target_tokens"] = round(g["target_tokens"], 1)
        return out

    by_kind = group(lambda t: t["kind"])
    by_category, by_source = group(lambda t: f"{t['kind']}/{t['category']}"), group(lambda t: f"{t['kind']}/{t['source']}")
    for t in table:
        t["target_tokens"] = round(t["target_tokens"], 1)
    mix = {
        "rows": len(chosen),
        "tokens": total,
        "non_reasoning_fraction": {"target": f, "actual": round(by_kind.get("non_reasoning", {}).get("tokens", 0) / total, 5) if total else 0.0},
        "total_tokens_target": total_tokens,
        "max_repeat": max_repeat,
        "shortfall_tokens": round(sum(t["shortfall_tokens"] for t in table), 1),  # target tokens the cap left unmade
        "reasoning_rows": by_kind.get("reasoning", {}).get("rows", 0),
        "non_reasoning_rows": by_kind.get("non_reasoning", {}).get("rows", 0),
        "by_kind": by_kind,
        "by_category": by_category,
        "by_source": by_source,
        "table": table,
        "warnings": warnings,
    }
    return chosen, dropped, mix


# --- the merge stage ------------------------------------------------------------------------------------------


def build_sft_set(
    kept: pl.DataFrame,
    cfg: MergeConfig,
    system_prompt: str | None = None,
    *,
    tokenizer=None,
    chat_template: str | None = None,
    student_name: str = "the assistant",
    generator_model: str | None = None,
    work_dir: Path | None = None,
    answers=None,
) -> MergeResult:
    """The SFT set from curated traces and the recipe's non-reasoning sources (see the module doc).

    `tokenizer` (the student's) counts tokens and decides the `auto` think style; `generator_model` and
    `work_dir` serve `generate: true` sources (`answers` replaces generation in tests). `chat_template` is
    the student's setting (Jinja, a file, a folder or a model: distill.training.student)."""
    chat_template = resolve_chat_template(chat_template)
    style = resolve_think_style(cfg.think, tokenizer, chat_template)
    reasoning = reasoning_rows(kept, system_prompt)
    non_reasoning, dropped, nr_summary = [], [], {"think_style": style}
    if cfg.non_reasoning_fraction > 0 or not reasoning:
        non_reasoning, dropped, nr_summary = build_non_reasoning(
            cfg.non_reasoning, identity=cfg.identity, student_name=cfg.identity.name or student_name, think_style=style,
            seed=cfg.seed, generator=cfg.generator, generator_model=generator_model, work_dir=work_dir, answers=answers,
        )
    rows = reasoning + non_reasoning
    counter, counted_with = token_counter(tokenizer, cfg.count, chat_template)
    for r, t in zip(rows, _count_in_batches(counter, rows)):
        r["tokens"] = t
    for r in dropped:
        r["tokens"] = None
    if cfg.max_tokens is not None:
        lengths = [r["tokens"] for r in rows] if cfg.count == "sequence" else _count_in_batches(token_counter(tokenizer, "sequence", chat_template)[0], rows)
        over = [n > cfg.max_tokens for n in lengths]
        dropped += [{**r, "drop_reason": "over_max_tokens"} for r, o in zip(rows, over) if o]
        rows = [r for r, o in zip(rows, over) if not o]
    try:
        chosen, mixed_out, mix = mix_by_tokens(
            rows, non_reasoning_fraction=cfg.non_reasoning_fraction, total_tokens=cfg.total_tokens, weights=cfg.weights, seed=cfg.seed,
            max_repeat=cfg.max_repeat,
        )
    except ValueError as e:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(Counter(d["drop_reason"] for d in dropped).items()))
        raise ValueError(f"{e}" + (f" (dropped: {reasons})" if reasons else "")) from None
    dropped += mixed_out
    mix["token_counter"] = counted_with
    mix["think_style"] = style
    mix["non_reasoning_sources"] = nr_summary.get("sources", {})
    mix["generated_answers"] = nr_summary.get("generated", 0)
    mix["rows_in"] = len(reasoning) + sum(nr_summary.get("sources", {}).values())
    mix["dropped"] = dict(sorted(Counter(d["drop_reason"] for d in dropped).items()))
    df = pl.DataFrame([{k: r[k] for k in SFT_SCHEMA} for r in chosen], schema=SFT_SCHEMA)
    dropped_df = pl.DataFrame([{k: r.get(k) for k in DROPPED_SCHEMA} for r in dropped], schema=DROPPED_SCHEMA)
    return MergeResult(df, mix, dropped_df)


def merge(kept: pl.DataFrame, cfg: MergeConfig, system_prompt: str | None = None, **kwargs) -> tuple[pl.DataFrame, dict]:
    """The SFT set and its mix table (build_sft_set without the dropped rows)."""
    res = build_sft_set(kept, cfg, system_prompt, **kwargs)
    return res.df, res.mix


def to_training_rows(df: pl.DataFrame) -> list[dict]:
    return df.select("prompt", "completion").to_dicts()


def write_hf_dataset(df: pl.DataFrame, out: Path) -> None:
    """Also save in `datasets`' own format, so `load_from_disk` works as well as parquet loading."""
    import datasets  # heavy: only when the Hub format is written

    with atomic_dir(out) as tmp:
        datasets.Dataset.from_list(df.to_dicts()).save_to_disk(str(tmp))
