"""`report.json` (the contract other tools read) and a short markdown summary, from the stage manifests.

What each stage ran with (its manifest's `settings`: sampling parameters, engines and their library
versions, ...) is copied into report.json's `settings`, by stage label: the Hub cards read it there.
"""

from __future__ import annotations

import time
from pathlib import Path


from distill.core.storage import read_json, write_json
from distill.report.html import write_html


def generation_accounting(run, manifests: dict[str, dict]) -> dict:
    """The sample stage's accounting, priced with the recipe's current prices (prices are not part of the
    stage's fingerprint, so a changed price must not regenerate anything), per accepted sample: the rows
    the select stage passes to merge (curate's when there is no select stage)."""
    gen = dict(manifests.get("sample", {}).get("generation", {}))
    if not gen:
        return gen
    cost = run.recipe.sampling.cost
    if "gpu_hours" in gen:
        gen["cost_usd"] = round(
            gen["gpu_hours"] * cost.gpu_hour_usd
            + gen.get("total_prompt_tokens", 0) / 1e6 * cost.input_usd_per_mtok
            + gen.get("total_completion_tokens", 0) / 1e6 * cost.output_usd_per_mtok,
            6,
        )
    accepted = manifests.get("select", manifests.get("curate", {})).get("rows_out")
    gen["accepted_samples"] = accepted
    if "cost_usd" in gen:
        gen["cost_per_accepted_sample_usd"] = round(gen["cost_usd"] / accepted, 8) if accepted else None
    return gen


def build_report(run, manifests: dict[str, dict]) -> dict:
    recipe = run.recipe
    stages = {
        name: {"rows_in": m.get("rows_in", 0), "rows_out": m.get("rows_out", 0), "seconds": m.get("seconds", 0.0), "cached": m.get("cached", False)}
        for name, m in manifests.items()
        if name != "report"
    }
    funnel = manifests.get("curate", {}).get("funnel", {})
    teacher_metrics = read_json(run.dir / "teacher" / "metrics.json") or {}
    grpo = teacher_metrics.get("grpo", {})
    teacher_m = manifests.get("teacher", {})
    teacher = {
        "trained": teacher_m.get("trained", False),
        # the manifest's record (a run from before manifests kept settings: the recipe's)
        "base_model": teacher_m.get("settings", {}).get("model", recipe.teacher.model),
        "reward_curve": grpo.get("reward_curve", []),
        "reward_curves": grpo.get("reward_curves", {}),
        "completion_length_curve": grpo.get("completion_length_curve", []),
        "kl_curve": grpo.get("kl_curve", []),
        "steps": grpo.get("step", []),
        "template": teacher_metrics.get("template"),
        "resumed_from_step": grpo.get("resumed_from_step"),
        "tensorboard": grpo.get("tensorboard"),
        "cold_start_loss_curve": teacher_metrics.get("cold_start", {}).get("loss_curve", []),
    }
    ev = manifests.get("eval", {})
    return {
        "recipe": {"name": recipe.name, "hash": recipe.recipe_hash()},
        "run_dir": str(run.dir),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stages": stages,
        "total_seconds": round(sum(s["seconds"] for s in stages.values() if not s["cached"]), 1),
        "reject_reasons": {k: v for k, v in funnel.get("primary_reasons", {}).items() if v},
        "funnel": funnel,
        "verdicts": manifests.get("verify", {}).get("verdicts", {}),
        "generation": generation_accounting(run, manifests),
        "selection": manifests.get("select", {}).get("selection", {}),
        "mix": manifests.get("merge", {}).get("mix", {}),
        "teacher": teacher,
        "eval": ev.get("results", {}),
        "eval_manifest": ev.get("eval_manifest", {}),
        "eval_delta": ev.get("delta", {}),  # student -> benchmark -> after - before, paired 95% CI
        "teacher_rl_delta": ev.get("teacher_delta", {}),  # benchmark -> teacher after GRPO - before
        "settings": {name: m["settings"] for name, m in manifests.items() if m.get("settings")},  # what each stage ran with
    }


def curve_windows(values: list) -> dict | None:
    """A per-step curve's mean over its first and last fifth of steps (at least one step each), and over
    the steps after the first fifth; None values (a reward that could not judge) left out."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    k = max(1, len(vals) // 5)
    after = vals[k:] or vals
    return {"steps": len(vals), "k": k, "first": sum(vals[:k]) / k, "last": sum(vals[-k:]) / k, "after": sum(after) / len(after)}


def _curve(values: list) -> str:
    w = curve_windows(values)
    if w is None:
        return "(none)"
    return f"{w['steps']} steps; first {w['k']}: {w['first']:.3f}, last {w['k']}: {w['last']:.3f}"


def _teacher_steps(t: dict) -> list[str]:
    """One row per GRPO step: mean reward, each reward's mean, completion length and KL (the curves)."""
    curves = t.get("reward_curves", {})
    total = t.get("reward_curve", [])
    if not total:
        return []
    steps = t.get("steps") or list(range(1, len(total) + 1))
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["", "| step | reward | " + " | ".join(curves) + " | length | KL |", "|---:" * (4 + len(curves)) + "|"]
    lengths, kls = t.get("completion_length_curve", []), t.get("kl_curve", [])
    for i, step in enumerate(steps):
        row = [str(step), fmt(total[i])] + [fmt(c[i] if i < len(c) else None) for c in curves.values()]
        row += [fmt(lengths[i] if i < len(lengths) else None), fmt(kls[i] if i < len(kls) else None)]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def render_markdown(report: dict) -> str:
    lines = [f"# r1-distill run `{report['recipe']['name']}`", "", f"Recipe hash `{report['recipe']['hash']}`; created {report['created_at']}.", ""]
    lines += ["## Stages", "", "| stage | rows in | rows out | seconds | reused |", "|---|---:|---:|---:|---|"]
    for name, s in report["stages"].items():
        lines.append(f"| {name} | {s['rows_in']} | {s['rows_out']} | {s['seconds']} | {'yes' if s['cached'] else ''} |")
    g = report.get("generation") or {}
    if g:
        lines += ["", "## Generation", ""]
        lines.append(f"- engine: {g.get('engine')}; {g.get('total_completion_tokens', g.get('completion_tokens'))} tokens generated "
                     f"({g.get('tokens_per_second')} tok/s this pass), engine time {g.get('total_engine_seconds', g.get('engine_seconds'))} s "
                     f"+ {g.get('total_engine_start_seconds', g.get('engine_start_seconds'))} s starting")
        each = g.get("cost_per_accepted_sample_usd")
        lines.append(f"- {g.get('gpu_hours')} GPU-hours ({g.get('gpus')} GPUs), cost ${g.get('cost_usd')}; "
                     f"{g.get('accepted_samples')} accepted samples" + (f", ${each} each" if each is not None else ""))
    lines += ["", "## Rejected traces (primary reason)", ""]
    lines += [f"- {k}: {v}" for k, v in report["reject_reasons"].items()] or ["- none"]
    t = report["teacher"]
    lines += ["", "## Teacher", "", f"- trained: {t['trained']} (base `{t['base_model']}`)", f"- GRPO mean reward: {_curve(t['reward_curve'])}"]
    for name, curve in t.get("reward_curves", {}).items():
        lines.append(f"- reward `{name}`: {_curve(curve)}")
    lines.append(f"- completion length (tokens): {_curve(t.get('completion_length_curve', []))}")
    lines += _teacher_steps(t)
    lines += ["", "## Evaluation (pass@1 over k samples; the answer is scored, not the format)", ""]
    lines += ["| model | pass@1 | 95% CI | cons@k | format rate | prompts | k |", "|---|---:|---|---:|---:|---:|---:|"]
    for name, r in report["eval"].items():
        cons = next((v for key, v in r.items() if key.startswith("cons@")), None)
        lines.append(f"| {name} | {r['pass@1']:.3f} | {r['pass@1_ci95']} | {cons} | {r['format_rate']:.3f} | {r['n_prompts']} | {r['k']} |")
    lines += _teacher_rl_lines(report.get("teacher_rl_delta") or {}, report["eval"])
    lines += _mix_lines(report.get("mix") or {}) + _delta_lines(report.get("eval_delta") or {})
    return "\n".join(lines) + "\n"


def _teacher_rl_lines(delta: dict, results: dict) -> list[str]:
    """The teacher after GRPO minus the model GRPO started from, on the held-out prompts: did RL help?"""
    if not delta:
        return []
    lines = ["", "## Teacher after GRPO minus before (pass@1, paired over the same prompts)", "",
             "| benchmark | before | after | difference | 95% CI | prompts |", "|---|---:|---:|---:|---|---:|"]
    for bench, d in delta.items():
        lines.append(f"| {bench} | {_delta_cells(d)} |")
    b, a = results.get("teacher_before_rl"), results.get("teacher")
    if b and a and b.get("format_rate") is not None and a.get("format_rate") is not None:
        lines += ["", f"Format rate (held-out): {b['format_rate']:.3f} before GRPO, {a['format_rate']:.3f} after."]
    return lines


def _mix_lines(mix: dict) -> list[str]:
    if not mix.get("table"):
        return []
    nr = mix.get("non_reasoning_fraction", {})
    lines = ["", "## SFT mix (by tokens)", "",
             f"Non-reasoning share of tokens: {nr.get('actual')} (target {nr.get('target')}); tokens counted with "
             f"{mix.get('token_counter')}; non-reasoning answers: think block {mix.get('think_style')}.", "",
             "| kind | category | source | rows | tokens | share | target | available rows | factor |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for t in mix["table"]:
        lines.append(f"| {t['kind']} | {t['category']} | {t['source']} | {t['rows']} | {t['tokens']} | {t['token_share']:.4f} | "
                     f"{t['target_share']:.4f} | {t['rows_available']} | {t['factor']} |")
    if mix.get("dropped"):
        lines += ["", "Rows left out: " + ", ".join(f"{k} {v}" for k, v in mix["dropped"].items()) + " (sft_data/dropped.parquet)."]
    return lines


def _delta_lines(deltas: dict) -> list[str]:
    if not deltas:
        return []
    lines = ["", "## Student after SFT minus before (pass@1, paired over the same prompts)", "",
             "| student | benchmark | before | after | difference | 95% CI | prompts |", "|---|---|---:|---:|---:|---|---:|"]
    for student, per in deltas.items():
        for bench, d in per.items():
            lines.append(f"| {student} | {bench} | {_delta_cells(d)} |")
    return lines


def _delta_cells(d: dict) -> str:
    """before | after | difference | CI | prompts of one paired before/after difference."""
    return f"{d['before']} | {d['after']} | {d['delta']:+.4f} | {d['ci95']} | {d['n_prompts']}"


def write_report(run, manifests: dict[str, dict]) -> dict:
    report = build_report(run, manifests)
    write_json(Path(run.dir) / "report.json", report)
    (Path(run.dir) / "report.md").write_text(render_markdown(report))
    write_html(Path(run.dir), report)
    # the resolved recipe beside its outputs: `distill publish RUN_DIR` builds the cards from it
    run.save_recipe()
    return {"rows_in": 0, "rows_out": 0, "seconds": 0.0, "fingerprint": "", "path": str(Path(run.dir) / "report.json")}
