"""The pipeline's stages as plain functions over a run directory, with manifest-based reuse.

Each stage takes the `Run` and the manifests of the stages it reads, and returns its own manifest. Its
fingerprint is a hash of its recipe section and its inputs' fingerprints, so a rerun skips finished
stages, and a changed setting reruns that stage and everything downstream of it, nothing upstream.
Prefect (`flows/`) only calls these functions; the CLI calls them the same way.

    prompts ─▶ teacher ─▶ sample ─▶ verify ─▶ curate ─▶ merge ─▶ sft (per student) ─▶ eval ─▶ report
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import polars as pl

from distill.recipe import Recipe
from distill.storage import file_sha256, fingerprint, is_done, read_json, read_table, write_json, write_manifest, write_parquet

log = logging.getLogger(__name__)

STAGES = ("prompts", "teacher", "sample", "verify", "curate", "merge", "sft", "eval", "report")
STARTED = "_started.json"


class Run:
    def __init__(self, recipe: Recipe, run_dir: str | Path | None = None):
        self.recipe = recipe
        # absolute, so manifests and Prefect results name the same files from any working directory
        self.dir = (Path(run_dir) if run_dir else recipe.resolved_run_dir()).resolve()

    def stage(self, name: str, subdir: str, settings: Any, inputs: list[dict], body: Callable[[Path], dict]) -> dict:
        """Run `body(stage_dir)` unless a manifest with the same fingerprint exists; write the manifest."""
        stage_dir = self.dir / subdir
        fp = fingerprint(name, settings, [m["fingerprint"] for m in inputs])
        done = is_done(stage_dir, fp)
        if done:
            log.info("stage %s: reusing %s (fingerprint %s)", name, stage_dir, fp)
            return {**done, "cached": True}
        started = read_json(stage_dir / STARTED)
        if started and started.get("fingerprint") != fp:
            # partial or finished work for other settings: it no longer describes this recipe
            log.info("stage %s: settings changed, clearing %s", name, stage_dir)
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        write_json(stage_dir / STARTED, {"fingerprint": fp})
        log.info("stage %s: running into %s", name, stage_dir)
        t0 = time.perf_counter()
        info = body(stage_dir)
        seconds = round(time.perf_counter() - t0, 1)
        manifest = write_manifest(stage_dir, fp, stage=name, seconds=seconds, **info)
        return {**manifest, "cached": False}


def _model_label(kind: str, manifest: dict) -> str:
    """A label that changes whenever the model's producing stage does (sample ids depend on it)."""
    return f"{kind}@{manifest['fingerprint']}"


# --- stages ------------------------------------------------------------------------------------------


def prompts_stage(run: Run) -> dict:
    from distill.prompts import load_prompts

    def body(d: Path) -> dict:
        train, ev = load_prompts(run.recipe.prompts)
        files = {"train.parquet": write_parquet(train, d / "train.parquet"), "eval.parquet": write_parquet(ev, d / "eval.parquet")}
        return {"rows_in": train.height + ev.height, "rows_out": train.height + ev.height, "files": files}

    return run.stage("prompts", "prompts", run.recipe.section_hash("prompts"), [], body)


def teacher_stage(run: Run, prompts_m: dict) -> dict:
    cfg = run.recipe.teacher

    def body(d: Path) -> dict:
        from distill.models import resolve_model

        train = pl.read_parquet(run.dir / "prompts" / "train.parquet")
        if not cfg.enabled:
            return {"rows_in": 0, "rows_out": 0, "model": resolve_model(cfg.model), "trained": False}
        from rl.teacher import train_teacher

        excluded = set(pl.read_parquet(run.dir / "prompts" / "eval.parquet")["prompt_id"])
        metrics = train_teacher(cfg, train, d, seed=run.recipe.seed, system_prompt=run.recipe.prompts.system_prompt, exclude=excluded)
        write_json(d / "metrics.json", metrics)
        return {"rows_in": train.height, "rows_out": train.height, "model": str(d / "model"), "trained": True, "files": {"model": {}}}

    settings = {"teacher": run.recipe.section_hash("teacher"), "seed": run.recipe.seed, "system": run.recipe.prompts.system_prompt}
    return run.stage("teacher", "teacher", settings, [prompts_m], body)


def _engine_factory(kind: str, model: str, seed: int, chat_template: str | None, vllm_settings):
    from distill.engines import make_engine

    return lambda: make_engine(kind, model, seed=seed, chat_template=chat_template, vllm_settings=vllm_settings)


def sample_stage(run: Run, prompts_m: dict, teacher_m: dict) -> dict:
    from distill.engines import SamplingParams
    from distill.sample import generate_traces

    cfg = run.recipe.sampling

    def body(d: Path) -> dict:
        prompts = pl.read_parquet(run.dir / "prompts" / "train.parquet")
        params = SamplingParams(cfg.n, cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.seed)
        stats = generate_traces(
            prompts, d, model_label=_model_label("teacher", teacher_m), params=params,
            engine_factory=_engine_factory(cfg.engine, teacher_m["model"], cfg.seed, cfg.chat_template, cfg.vllm),
            shard_size=cfg.shard_size, system_prompt=run.recipe.prompts.system_prompt,
        )
        return {"rows_in": prompts.height, "rows_out": stats["rows"], "generation": stats}

    return run.stage("sample", "traces", run.recipe.section_hash("sampling"), [prompts_m, teacher_m], body)


def verify_stage(run: Run, sample_m: dict) -> dict:
    from distill.verify import verify_with_config

    def body(d: Path) -> dict:
        # stats: judge/rules disagreement counts (cascade), sandbox protections in force (code)
        df, stats = verify_with_config(read_table(run.dir / "traces"), run.recipe.verify)
        files = {"traces.parquet": write_parquet(df, d / "traces.parquet")}
        counts = {
            "correct": int(df["correct"].sum()),
            "incorrect": int((df["correct"] == False).sum()),  # noqa: E712 (polars expression)
            "unverifiable": int(df["correct"].is_null().sum()),
            "reasons": dict(sorted(df.group_by("verify_reason").len().iter_rows())),
        }
        by_prompt = df.group_by("prompt_id").agg(pl.col("correct").fill_null(False).any().alias("any"))
        counts["prompts_with_a_correct_sample"] = int(by_prompt["any"].sum())
        counts.update(stats)
        return {"rows_in": df.height, "rows_out": df.height, "files": files, "verdicts": counts}

    return run.stage("verify", "verified", run.recipe.section_hash("verify"), [sample_m], body)


def curate_stage(run: Run, verify_m: dict) -> dict:
    from filters.curate import curate_file

    def body(d: Path) -> dict:
        # streams in batches over worker processes: flat memory at any size (filters/streaming.py)
        funnel = curate_file(run.dir / "verified" / "traces.parquet", d, run.recipe.curate)
        files = {f"{part}.parquet": {"rows": funnel[part], "sha256": file_sha256(d / f"{part}.parquet")} for part in ("kept", "rejected")}
        return {"rows_in": funnel["rows_in"], "rows_out": funnel["kept"], "files": files, "funnel": funnel}

    return run.stage("curate", "curated", run.recipe.section_hash("curate"), [verify_m], body)


def merge_stage(run: Run, curate_m: dict) -> dict:
    from distill.merge import merge, write_hf_dataset

    def body(d: Path) -> dict:
        kept = pl.read_parquet(run.dir / "curated" / "kept.parquet")
        df, mix = merge(kept, run.recipe.merge, run.recipe.prompts.system_prompt)
        files = {"train.parquet": write_parquet(df, d / "train.parquet")}
        write_hf_dataset(df, d / "hf")
        return {"rows_in": kept.height, "rows_out": df.height, "files": files, "mix": mix}

    settings = {"merge": run.recipe.section_hash("merge"), "system": run.recipe.prompts.system_prompt}
    return run.stage("merge", "sft_data", settings, [curate_m], body)


def sft_stage(run: Run, merge_m: dict, student_name: str) -> dict:
    from distill.merge import to_training_rows
    from distill.models import resolve_model
    from distill.sft import train_sft

    student = next(s for s in run.recipe.students if s.name == student_name)

    def body(d: Path) -> dict:
        df = pl.read_parquet(run.dir / "sft_data" / "train.parquet")
        metrics = train_sft(
            resolve_model(student.model), to_training_rows(df), d / "model", lora=student.lora,
            training_args=student.training_args, seed=run.recipe.seed, chat_template=student.chat_template,
        )
        write_json(d / "metrics.json", metrics)
        return {"rows_in": df.height, "rows_out": df.height, "model": str(d / "model"), "metrics": metrics, "files": {"model": {}}}

    settings = {"student": student.model_dump(mode="json"), "seed": run.recipe.seed}
    return run.stage(f"sft:{student_name}", f"students/{student_name}", settings, [merge_m], body)


def eval_stage(run: Run, prompts_m: dict, teacher_m: dict, sft_ms: dict[str, dict]) -> dict:
    from distill.engines import SamplingParams
    from distill.evaluate import evaluate_model
    from distill.models import resolve_model

    cfg = run.recipe.eval

    def body(d: Path) -> dict:
        prompts = pl.read_parquet(run.dir / "prompts" / "eval.parquet")
        params = SamplingParams(cfg.k, cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.seed)
        models: dict[str, tuple[str, str]] = {}
        if cfg.include_teacher:
            models["teacher"] = (teacher_m["model"], _model_label("teacher", teacher_m))
        for i, s in enumerate(run.recipe.students):
            suffix = "" if i == 0 else f":{s.name}"
            models[f"student_before{suffix}"] = (resolve_model(s.model), s.model)
            models[f"student_after{suffix}"] = (sft_ms[s.name]["model"], _model_label(f"student:{s.name}", sft_ms[s.name]))
        results = {}
        for key, (path, label) in models.items():
            log.info("eval: %s (%s)", key, label)
            results[key] = evaluate_model(
                prompts, d / key.replace(":", "_"), model_label=label, params=params,
                engine_factory=_engine_factory(cfg.engine, path, cfg.seed, None, cfg.vllm),
                verifier=run.recipe.verify.verifier, system_prompt=run.recipe.prompts.system_prompt,
            )
            results[key]["model"] = label
        manifest = {"engine": cfg.engine, "seed": cfg.seed, "k": cfg.k, "temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}
        write_json(d / "results.json", {"results": results, "manifest": manifest})
        n = prompts.height * len(models)
        return {"rows_in": n, "rows_out": n * cfg.k, "results": results, "eval_manifest": manifest}

    settings = {"eval": run.recipe.section_hash("eval"), "verify": run.recipe.section_hash("verify"), "system": run.recipe.prompts.system_prompt}
    return run.stage("eval", "eval", settings, [prompts_m, teacher_m, *sft_ms.values()], body)


def report_stage(run: Run, manifests: dict[str, dict]) -> dict:
    from distill.report import write_report

    return write_report(run, manifests)


Call = Callable[..., dict]


def _direct(name: str, fn: Callable[..., dict], *args) -> dict:
    return fn(*args)


def run_pipeline(run: Run, only: str | None = None, call: Call = _direct) -> dict[str, dict]:
    """Every stage in order, reusing finished ones; stop after `only` when given.

    `call(name, stage_fn, *args)` runs one stage: directly here, as a Prefect task in `flows/`.
    """
    if only is not None and only not in STAGES:
        raise ValueError(f"unknown stage {only!r} (stages: {', '.join(STAGES)})")
    m: dict[str, dict] = {}

    def step(name: str, fn: Callable[..., dict], *args) -> bool:
        m[name] = call(name, fn, run, *args)
        return name == only

    if step("prompts", prompts_stage):
        return m
    if step("teacher", teacher_stage, m["prompts"]):
        return m
    if step("sample", sample_stage, m["prompts"], m["teacher"]):
        return m
    if step("verify", verify_stage, m["sample"]):
        return m
    if step("curate", curate_stage, m["verify"]):
        return m
    if step("merge", merge_stage, m["curate"]):
        return m
    for s in run.recipe.students:
        m[f"sft:{s.name}"] = call(f"sft:{s.name}", sft_stage, run, m["merge"], s.name)
    if only == "sft":
        return m
    if run.recipe.eval.enabled:
        sft_ms = {s.name: m[f"sft:{s.name}"] for s in run.recipe.students}
        if step("eval", eval_stage, m["prompts"], m["teacher"], sft_ms):
            return m
    elif only == "eval":
        return m
    step("report", report_stage, m)
    return m
