"""Does the demo teacher's GRPO raise its reward, or is the curve noise? GRPO against a no-update control.

    R1_DISTILL_CACHE=.cache HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_teacher_rl.py --seeds 0 1

The demo's per-step reward moves a lot with which prompts a step happens to draw (some sums the 135M
model never gets right, some it always does), so "the last 20% of steps beat the first 20%" alone can be
luck. For each seed this runs the recipe's GRPO twice from the same cold-start checkpoint, on the same
prompts in the same order with the same sampling settings: once as the recipe says, and once with
`learning_rate: 0` (the control: same rollouts machinery, weights never move). The cold start runs once
(or is reused from --out) with the recipe's own settings.

`--eval` also scores the cold-start model and every GRPO model on the recipe's held-out prompts with
the recipe's eval settings (pass@1 over k samples, format rate), as the demo's eval stage does: the
reward curve says what GRPO optimised, this says whether the teacher the pipeline samples from got
better. `--arg KEY=VALUE` overrides one of the recipe's GRPO training_args (a YAML value), e.g.
`--arg max_steps=10 --arg learning_rate=5e-5`, to compare settings on the same cold start.

Printed per run: the mean of the total reward and of each reward over the first and last 20% of steps
(the numbers `report.md` gives), the mean over the steps after the first 20%, and GRPO minus control on
those. The rise counts as real where GRPO's last-20% reward is above both its own first 20% and the
control's last 20%. Wall time per GRPO step is shown for both (the control does the same work).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def windows(curve: list) -> dict:
    """First 20%, last 20% and after-the-first-20% means, as report.md computes them."""
    from distill.report.summary import curve_windows

    w = curve_windows(curve) or {}
    return {p: w.get(p) for p in ("first", "last", "after")}


def summarise(g: dict) -> dict:
    """The benchmark's summary of one GRPO run's metrics (rl.teacher.run_grpo's return value)."""
    curves = {"reward": g["reward_curve"], **g["reward_curves"]}
    times = [h.get("step_time") for h in g["history"] if h.get("step_time") is not None]
    return {
        "steps": g["steps"],
        "train_seconds": g["train_seconds"],
        "median_step_seconds": sorted(times)[len(times) // 2] if times else None,
        "windows": {n: windows(c) for n, c in curves.items()},
        "curves": curves,
    }


def evaluate(recipe, start_model: str, models: dict[str, str], prompts, out: Path) -> dict:
    """pass@1 and format rate of the cold-start model and `models` on the held-out prompts, with the
    recipe's eval section (the eval stage's own function)."""
    from functools import partial

    from distill.engines.factory import engine_factory
    from distill.evaluate.evaluate import evaluate_all

    todo = {"cold_start": (start_model, "cold_start"), **{k: (v, k) for k, v in models.items()}}
    results, _, _ = evaluate_all(todo, recipe.eval, out, heldout=prompts, heldout_verifier=recipe.verify.verifier,
                                 system_prompt=recipe.prompts.system_prompt, engine_factory=partial(engine_factory, recipe.eval))
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "recipes" / "demo.yaml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's GRPO max_steps")
    ap.add_argument("--out", default=None, help="work directory (default: a fresh temporary one)")
    ap.add_argument("--no-control", action="store_true", help="only the recipe's GRPO")
    ap.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE", help="override a GRPO training_arg (YAML value)")
    ap.add_argument("--tag", default="", help="suffix of the per-run folders (runs with other --arg values)")
    ap.add_argument("--eval", action="store_true", help="score cold start and GRPO models on the held-out prompts (recipe's eval)")
    a = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import tempfile

    import polars as pl
    from transformers import AutoTokenizer

    from distill.core.models import resolve_model
    from distill.generation.prompts import load_prompts
    from distill.config.recipe import load_recipe
    from rl.cold_start import run_cold_start
    from rl.teacher import run_grpo
    from rl.templates import build_template

    recipe = load_recipe(a.config)
    tc = recipe.teacher
    out = Path(a.out or tempfile.mkdtemp(prefix="bench_teacher_rl-"))
    out.mkdir(parents=True, exist_ok=True)
    train, ev = load_prompts(recipe.prompts)
    model = resolve_model(tc.model)
    template = build_template(tc.template, AutoTokenizer.from_pretrained(model), recipe.prompts.system_prompt)
    print(f"recipe {a.config}; {len(train)} train prompts; work dir {out}", flush=True)
    if tc.cold_start.enabled:
        cs = out / "cold_start"
        if not (cs / "config.json").is_file():
            t0 = time.perf_counter()
            run_cold_start(model, tc.cold_start, template, cs, seed=recipe.seed, exclude=set(ev["prompt_id"]), prompts=train)
            print(f"cold start: {time.perf_counter() - t0:.1f} s", flush=True)
        model = str(cs)

    results = []
    for seed in a.seeds:
        for arm in ("grpo",) if a.no_control else ("grpo", "control"):
            args = dict(tc.grpo.training_args)
            if a.steps:
                args["max_steps"] = a.steps
            for kv in a.arg:
                key, _, value = kv.partition("=")
                args[key] = yaml.safe_load(value)
                if isinstance(args[key], str):  # YAML 1.1 reads "1e-5" (no dot) as a string
                    try:
                        args[key] = float(args[key])
                    except ValueError:
                        pass
            if arm == "control":
                args["learning_rate"] = 0.0
            cfg = tc.grpo.model_copy(update={"training_args": args})
            d = out / f"seed{seed}-{arm}{a.tag}"
            if (d / "metrics.json").is_file():
                s = json.loads((d / "metrics.json").read_text())
            else:
                m = run_grpo(model, train, cfg, d / "model", seed, template)
                s = summarise(m)
                (d / "metrics.json").write_text(json.dumps(s, indent=1))
            results.append({"seed": seed, "arm": arm, **s})
            w = s["windows"]["reward"]
            print(f"seed {seed} {arm}: reward first20 {w['first']:.3f} last20 {w['last']:.3f} "
                  f"({s['steps']} steps, median {s['median_step_seconds']:.1f} s/step)", flush=True)

    names = list(results[0]["windows"])
    print("\n| seed | arm | " + " | ".join(f"{n} first20 / last20 / after20" for n in names) + " | s/step |")
    print("|---:|---|" + "---:|" * (len(names) + 1))
    for r in results:
        cells = [" / ".join("-" if r["windows"][n][p] is None else f"{r['windows'][n][p]:.3f}" for p in ("first", "last", "after")) for n in names]
        print(f"| {r['seed']} | {r['arm']} | " + " | ".join(cells) + f" | {r['median_step_seconds']:.1f} |")
    if not a.no_control:
        print("\nGRPO minus control (same seed, same prompts):")
        for seed in a.seeds:
            g, c = (next(r for r in results if r["seed"] == seed and r["arm"] == arm) for arm in ("grpo", "control"))
            diffs = []
            for n in names:
                gl, cl, ga, ca = g["windows"][n]["last"], c["windows"][n]["last"], g["windows"][n]["after"], c["windows"][n]["after"]
                if None not in (gl, cl, ga, ca):
                    diffs.append(f"{n}: last20 {gl - cl:+.3f}, after20 {ga - ca:+.3f}")
            gw = g["windows"]["reward"]
            real = gw["last"] > gw["first"] and gw["last"] > c["windows"]["reward"]["last"]
            print(f"  seed {seed}: " + "; ".join(diffs) + f"  -> rise {'above' if real else 'NOT above'} own start and control")
    if a.eval:
        scores = evaluate(recipe, model, {f"seed{r['seed']}-{r['arm']}{a.tag}": str(out / f"seed{r['seed']}-{r['arm']}{a.tag}" / "model") for r in results},
                          ev, out / f"eval{a.tag}")
        print("\n| model | pass@1 | 95% CI | format rate | truncated | mean tokens |\n|---|---:|---|---:|---:|---:|")
        for key, r in scores.items():
            print(f"| {key} | {r['pass@1']:.3f} | {r['pass@1_ci95']} | {r['format_rate']:.3f} | {r['truncated_rate']:.3f} | {r['mean_completion_tokens']:.1f} |")
        for r in results:
            r["eval"] = scores.get(f"seed{r['seed']}-{r['arm']}{a.tag}")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nresults: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
