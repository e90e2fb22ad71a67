"""Evaluation: pass@1 averaged over k samples, cons@k (majority vote over equal answers), per benchmark, with a manifest.

Scores the final answer with the same verifier registry as rejection sampling and the RL rewards, but
never the format: a right answer without a think block is still right, so before/after comparisons
measure reasoning, not tags. Format compliance is reported beside it.

Benchmarks come from the Hub through `datasets` in production and from local files in tests; each has a
kind that picks its parser (distill.verify.answers: boxed math, a last line `Answer: $LETTER`, a JSON answer
field) and a prompt template. Confidence intervals are over prompts (the k samples of one prompt are
correlated): a t-interval on the per-prompt pass rates, and for a before/after difference a paired one on
the per-prompt differences (the same prompts, so most prompt-to-prompt variance cancels).
Everything that decides a number goes into `eval_manifest.json`: engine and version, dtype, seed, k,
temperature, top_p, max tokens, prompt and chat templates, benchmark sources, and the results with CIs.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from pathlib import Path
from statistics import NormalDist
from typing import Callable

import polars as pl

from distill.engines.base import Engine, SamplingParams, has_cuda
from distill.engines.factory import data_parallel_workers, devices_per_engine
from distill.config.eval import EvalBenchmark, EvalConfig
from distill.generation.parallel import generate_traces_parallel
from distill.evaluate.consensus import equivalence, final_answer, majority
from distill.generation.sample import SharedEngine, generate_traces
from distill.core.schema import PREFILL, content_id, format_ok
from distill.core.storage import read_table, write_json, write_parquet
from distill.verify.answers import LETTERS, PROMPT_TEMPLATES, gold_letter, render_prompt
from distill.verify.table import verify_table

KIND_VERIFIER = {"math": "math", "multiple_choice": "multiple_choice", "json": "json"}
_T_SMALL = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # exact 97.5% points


# --- statistics ----------------------------------------------------------------------------------------------


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile: a table for df <= 5 at 97.5 %, else a Cornish-Fisher expansion (error < 1e-3)."""
    if df in _T_SMALL and abs(p - 0.975) < 1e-12:
        return _T_SMALL[df]
    z = NormalDist().inv_cdf(p)
    g = [
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    ]
    return z + sum(gi / df ** (i + 1) for i, gi in enumerate(g))


def mean_ci(values: list[float], lo: float = -math.inf, hi: float = math.inf) -> tuple[float, list[float] | None]:
    """The mean and its 95% t-interval (clipped to [lo, hi]); no interval for fewer than 2 values."""
    n = len(values)
    if n == 0:
        return 0.0, None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1))
    half = t_quantile(0.975, n - 1) * sd / math.sqrt(n)
    return mean, [round(max(lo, mean - half), 4), round(min(hi, mean + half), 4)]


# --- scoring -------------------------------------------------------------------------------------------------


def per_prompt(df: pl.DataFrame, kind: str = "math") -> pl.DataFrame:
    """prompt_id, pass_rate (share of correct samples; unverifiable counts as wrong), cons (the majority
    answer is right: answers vote as one when the benchmark's verifier finds them equal, `1/2` with `0.5`;
    distill.evaluate.consensus), samples. `kind`: the benchmark's verifier."""
    ok = df.get_column("correct").fill_null(False).to_list()
    prefills = df.get_column(PREFILL).to_list() if PREFILL in df.columns else [None] * df.height
    finals = [final_answer(c or "", kind, p) for c, p in zip(df.get_column("completion").to_list(), prefills)]
    same = equivalence(kind)
    prompts: dict[str, list[int]] = {}
    for i, pid in enumerate(df.get_column("prompt_id").to_list()):
        prompts.setdefault(pid, []).append(i)
    rows = []
    for pid, idx in prompts.items():
        top = majority([finals[i] for i in idx], same)
        cons = bool(ok[idx[top[0]]]) if top else False  # the verdict of the winning answer's first sample
        rows.append({"prompt_id": pid, "pass_rate": sum(ok[i] for i in idx) / len(idx), "cons": cons, "samples": len(idx)})
    return pl.DataFrame(rows, schema={"prompt_id": pl.Utf8, "pass_rate": pl.Float64, "cons": pl.Boolean, "samples": pl.Int64})


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_at_k_curve(counts: list[tuple[int, int]], k_max: int) -> dict[str, float]:
    """Mean pass@k over prompts for k = 1..k_max (up to the fewest samples any prompt has)."""
    if not counts:
        return {}
    top = min(k_max, min(n for n, _ in counts))
    return {str(k): round(sum(pass_at_k(n, c, k) for n, c in counts) / len(counts), 4) for k in range(1, top + 1)}


def score_samples(df: pl.DataFrame, k: int, kind: str = "math") -> dict:
    """pass@1 (mean over prompts of the share of correct samples) with its 95% CI, cons@k (majority vote over
    equal answers under the `kind` verifier), format rate."""
    pp = per_prompt(df, kind)
    n = pp.height
    mean, ci = mean_ci(pp["pass_rate"].to_list(), 0.0, 1.0)
    return {
        "pass@1": round(mean, 4),
        "pass@1_ci95": ci,
        f"cons@{k}": round(float(pp["cons"].mean()), 4) if n else 0.0,
        "format_rate": round(float(df["completion"].map_elements(format_ok, return_dtype=pl.Boolean).mean()), 4) if df.height else 0.0,
        "unverifiable_rate": round(float(df["correct"].is_null().mean()), 4) if df.height else 0.0,
        "mean_completion_tokens": round(float(df["completion_tokens"].mean()), 1) if df.height and "completion_tokens" in df.columns else 0.0,
        "truncated_rate": round(float((df["finish_reason"] == "length").mean()), 4) if df.height and "finish_reason" in df.columns else None,
        "pass@k": pass_at_k_curve([(m, round(r * m)) for m, r in zip(pp["samples"].to_list(), pp["pass_rate"].to_list())], k),
        "n_prompts": n,
        "k": k,
        "n_samples": df.height,
    }


def paired_delta(before: pl.DataFrame, after: pl.DataFrame) -> dict:
    """after - before in pass@1 over the prompts both were scored on, with a paired 95% t-interval."""
    j = before.select("prompt_id", pl.col("pass_rate").alias("b")).join(
        after.select("prompt_id", pl.col("pass_rate").alias("a")), on="prompt_id", how="inner"
    )
    diffs = [a - b for a, b in zip(j["a"].to_list(), j["b"].to_list())]
    mean, ci = mean_ci(diffs, -1.0, 1.0)
    return {
        "delta": round(mean, 4),
        "ci95": ci,
        "n_prompts": j.height,
        "before": round(float(j["b"].mean()), 4) if j.height else None,
        "after": round(float(j["a"].mean()), 4) if j.height else None,
        "prompts_improved": int(sum(d > 0 for d in diffs)),
        "prompts_worse": int(sum(d < 0 for d in diffs)),
        "method": "paired t-interval over prompts of the per-prompt pass-rate difference",
    }


# --- benchmarks ----------------------------------------------------------------------------------------------


def prompt_template(b: EvalBenchmark) -> str:
    return b.prompt_template if b.prompt_template is not None else PROMPT_TEMPLATES[b.kind]


def _gold(b: EvalBenchmark, value, choices: list[str] | None, where: str) -> str | None:
    if value is None:
        return None
    if b.kind == "multiple_choice":
        # an int is an index; a string is a letter, else one of the choices' texts, else an index
        texts, v = [str(c).strip() for c in choices or []], str(value).strip()
        if isinstance(value, int) and not isinstance(value, bool):
            letter = LETTERS[value] if 0 <= value < len(LETTERS) else None
        elif v in texts:
            letter = LETTERS[texts.index(v)]
        else:
            letter = gold_letter(v)
        if letter is None:
            raise ValueError(f"{where}: answer {value!r} is not a letter, an index or one of the choices")
        return letter
    if b.kind == "json" and not isinstance(value, str):
        return json.dumps(value)
    return str(value)


def load_benchmark(b: EvalBenchmark) -> pl.DataFrame:
    """Prompt rows (prompt_id, prompt, answer, task, source) for one benchmark, deterministic for its spec."""
    if b.source == "hf":
        import datasets  # heavy: only for Hub benchmarks

        ds = datasets.load_dataset(b.path, b.hf_config, split=b.split, revision=b.revision)
        df, origin = pl.from_arrow(ds.data.table), f"hf:{b.path}"
    else:
        df, origin = read_table(b.path), b.path
        if "split" in df.columns:
            df = df.filter(pl.col("split") == b.split)
    fields = [b.question_field, b.answer_field] + ([b.choices_field] if b.choices_field else []) + ([b.id_field] if b.id_field else [])
    for col in fields:
        if col not in df.columns:
            raise ValueError(f"benchmark {b.name} ({origin}): column {col!r} is missing (columns: {', '.join(df.columns)})")
    template = prompt_template(b)
    rows = []
    for i, r in enumerate(df.iter_rows(named=True)):
        q = r[b.question_field]
        if q is None or not str(q).strip():
            raise ValueError(f"benchmark {b.name} ({origin}): row {i} has an empty {b.question_field!r}")
        choices = list(r[b.choices_field]) if b.choices_field else None
        rows.append({
            "prompt_id": str(r[b.id_field]) if b.id_field else content_id(b.name, origin, str(q), choices),
            "prompt": render_prompt(template, str(q), [str(c) for c in choices] if choices else None),
            "answer": _gold(b, r[b.answer_field], choices, f"benchmark {b.name} ({origin}) row {i}"),
            "task": b.kind,
            "source": f"{b.name}:{origin}",
        })
    if b.n is not None and len(rows) > b.n:
        rows = random.Random(f"{b.seed}:{b.name}").sample(rows, b.n)
    out = pl.DataFrame(rows, schema={"prompt_id": pl.Utf8, "prompt": pl.Utf8, "answer": pl.Utf8, "task": pl.Utf8, "source": pl.Utf8})
    dup = out.filter(pl.col("prompt_id").is_duplicated())
    if dup.height:
        raise ValueError(f"benchmark {b.name}: duplicate prompt id {dup['prompt_id'][0]!r} ({b.id_field or 'content'})")
    return out


# --- running ---------------------------------------------------------------------------------------------------


def evaluate_model(
    prompts: pl.DataFrame,
    out_dir: Path,
    *,
    model_label: str,
    params: SamplingParams,
    engine_factory: Callable[[], Engine],
    verifier: str = "math",
    system_prompt: str | None = None,
    shard_size: int = 64,
    scores_path: Path | None = None,
    workers: int = 1,
    devices_per_worker: int = 1,
) -> dict:
    """Generate k samples per prompt (resumable shards in `out_dir`), verify, score; the per-prompt
    scores go to `scores_path` (for paired before/after differences). `workers` > 1: data parallel, that
    many engines on this machine, each on its own GPUs (distill.generation.parallel; a picklable factory)."""
    common = dict(model_label=model_label, params=params, engine_factory=engine_factory, shard_size=shard_size,
                  system_prompt=system_prompt, desc=f"eval {out_dir.parent.name}/{out_dir.name}")
    if workers > 1:
        stats = generate_traces_parallel(prompts, out_dir, workers=workers, devices_per_worker=devices_per_worker, **common)
    else:
        stats = generate_traces(prompts, out_dir, **common)
    df = verify_table(read_table(out_dir), verifier=verifier)
    result = score_samples(df, params.n, verifier)
    if scores_path is not None:
        write_parquet(per_prompt(df, verifier), scores_path)
    result["generation"] = {k: stats[k] for k in ("engine", "completion_tokens", "engine_seconds", "tokens_per_second", "workers") if k in stats}
    return result


def _sha(text: str | None) -> str | None:
    return hashlib.sha256(text.encode()).hexdigest()[:16] if text else None


def _model_facts(path: str, engine: str, dtype: str) -> dict:
    """The chat template's hash and the dtype the engine will use (read from files; no weights load)."""
    facts: dict = {"path": path}
    try:
        from transformers import AutoTokenizer  # heavy: only when a manifest is written

        tok = AutoTokenizer.from_pretrained(path)
        facts["chat_template_sha256"] = _sha(tok.chat_template if isinstance(tok.chat_template, str) else json.dumps(tok.chat_template))
    except (OSError, ValueError) as e:
        facts["chat_template_sha256"] = None
        facts["tokenizer_error"] = str(e)[:200]
    cfg = Path(path) / "config.json"
    stored = None
    if cfg.is_file():
        c = json.loads(cfg.read_text())
        stored = c.get("dtype") or c.get("torch_dtype")
    if engine == "transformers":
        facts["dtype"] = "float32" if not has_cuda() else f"auto ({stored})"
    else:
        facts["dtype"] = dtype if dtype != "auto" else f"auto ({stored or 'model default'})"
    return facts


def evaluate_all(
    models: dict[str, tuple[str, str]],
    cfg: EvalConfig,
    out_dir: Path,
    *,
    heldout: pl.DataFrame | None,
    heldout_verifier: str = "math",
    system_prompt: str | None = None,
    engine_factory: Callable[[str], Callable[[], Engine]],
    pairs: dict[str, tuple[str, str]] | None = None,
) -> tuple[dict, dict, dict]:
    """Every model on the held-out prompts and every benchmark; (results, deltas, manifest).

    `models`: key -> (path, label); `engine_factory(path)` gives a factory for that model's engine (one
    engine serves all benchmarks of a model). `pairs`: name -> (before key, after key) for the deltas.
    results[key] holds the held-out scores at the top (report.json's contract), and `benchmarks`.
    """
    out_dir = Path(out_dir)
    params = SamplingParams.from_section(cfg, n=cfg.k)
    benches: dict[str, tuple[pl.DataFrame, str, dict]] = {}
    if heldout is not None and cfg.heldout:
        benches["heldout"] = (heldout, heldout_verifier, {"kind": "heldout", "source": "prompts/eval.parquet", "prompt_template": None})
    for b in cfg.benchmarks:
        benches[b.name] = (load_benchmark(b), KIND_VERIFIER[b.kind], {
            "kind": b.kind, "source": b.source, "path": b.path, "hf_config": b.hf_config, "split": b.split,
            "revision": b.revision, "n": b.n, "seed": b.seed, "prompt_template": prompt_template(b),
        })
    if not benches:
        raise ValueError("eval: nothing to evaluate (eval.heldout is false and no eval.benchmarks are listed)")
    results: dict[str, dict] = {}
    engines: set[str] = set()
    # eval.vllm.data_parallel_size > 1: that many engines at once, each on its own GPUs (each benchmark
    # starts them anew); else one engine serves all benchmarks of a model
    workers = data_parallel_workers(cfg)
    parallel = {"workers": workers, "devices_per_worker": devices_per_engine(cfg.vllm)} if workers > 1 else {}
    for key, (path, label) in models.items():
        shared = SharedEngine(engine_factory(path)) if workers == 1 else None
        per_bench = {}
        try:
            for name, (prompts, verifier, _) in benches.items():
                d = out_dir / key.replace(":", "_")
                per_bench[name] = evaluate_model(
                    prompts, d / name, model_label=label, params=params, engine_factory=shared or engine_factory(path), verifier=verifier,
                    system_prompt=system_prompt, scores_path=d / f"{name}.scores.parquet", **parallel,
                )
                if per_bench[name]["generation"].get("engine"):
                    engines.add(per_bench[name]["generation"]["engine"])
        finally:
            if shared is not None:
                shared.shutdown()
        first = "heldout" if "heldout" in per_bench else next(iter(per_bench))
        results[key] = {**per_bench[first], "model": label, "benchmark": first}
        if len(per_bench) > 1 or first != "heldout":
            results[key]["benchmarks"] = per_bench
    deltas: dict[str, dict] = {}
    for name, (before, after) in (pairs or {}).items():
        deltas[name] = {}
        for bench in benches:
            b = pl.read_parquet(out_dir / before.replace(":", "_") / f"{bench}.scores.parquet")
            a = pl.read_parquet(out_dir / after.replace(":", "_") / f"{bench}.scores.parquet")
            deltas[name][bench] = {**paired_delta(b, a), "before_model": before, "after_model": after}
    manifest = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "engine": cfg.engine,
        "engine_version": sorted(engines),  # empty when every shard was reused from an earlier run
        "dtype": cfg.vllm.dtype if cfg.engine == "vllm" else "auto",
        "data_parallel_workers": workers,
        "seed": cfg.seed,
        "n": cfg.k,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "max_tokens": cfg.max_tokens,
        "system_prompt": system_prompt,
        "benchmarks": {name: {**spec, "verifier": verifier, "n_prompts": prompts.height} for name, (prompts, verifier, spec) in benches.items()},
        "models": {key: {"label": label, **_model_facts(path, cfg.engine, cfg.vllm.dtype)} for key, (path, label) in models.items()},
        "confidence_intervals": "95%: t-interval over prompts of per-prompt pass rates; deltas: paired over the same prompts",
        "results": {
            key: {name: {"pass@1": r["pass@1"], "pass@1_ci95": r["pass@1_ci95"], f"cons@{cfg.k}": r[f"cons@{cfg.k}"], "n_prompts": r["n_prompts"]}
                  for name, r in (res.get("benchmarks") or {res["benchmark"]: res}).items()}
            for key, res in results.items()
        },
        "deltas": {name: {bench: {"delta": d["delta"], "ci95": d["ci95"]} for bench, d in per.items()} for name, per in deltas.items()},
    }
    write_json(out_dir / "eval_manifest.json", manifest)
    return results, deltas, manifest
