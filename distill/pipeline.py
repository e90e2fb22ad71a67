"""The pipeline's stages as plain functions over a run directory, with manifest-based reuse.

Each stage takes the `Run` and the manifests of the stages it reads, and returns its own manifest. Its
fingerprint is a hash of its recipe section and its inputs' fingerprints, so a rerun skips finished
stages, and a changed setting reruns that stage and everything downstream of it, nothing upstream.
Prefect (`flows/`) only calls these functions; the CLI calls them the same way.

    prompts ─▶ teacher ─▶ sample ─▶ verify ─▶ curate ─▶ select ─▶ merge ─▶ sft (per student) ─▶ eval ─▶ report ─▶ publish
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import polars as pl

from distill.config.recipe import Recipe
from distill.core.storage import file_sha256, fingerprint, is_done, read_json, read_table, write_json, write_manifest, write_parquet

log = logging.getLogger(__name__)

STAGES = ("prompts", "teacher", "sample", "verify", "curate", "select", "merge", "sft", "eval", "report", "publish")
STARTED = "_started.json"


class Run:
    def __init__(self, recipe: Recipe, run_dir: str | Path | None = None, sampler: Callable[..., dict] | None = None):
        self.recipe = recipe
        # one sampling pass in place of this machine's workers, same signature as sample.generate_traces
        # less `rank`/`world_size` (flows/ray_sampling.py maps the shards over a Ray cluster)
        self.sampler = sampler
        # absolute, so manifests and Prefect results name the same files from any working directory
        self.dir = (Path(run_dir) if run_dir else recipe.resolved_run_dir()).resolve()

    # One process runs a stage here. DistributedRun (distill/launch.py) runs its body on every process
    # of an `accelerate launch` and overrides these three: only the main one touches the stage directory.
    def is_main_process(self) -> bool:
        return True

    def wait_for_everyone(self) -> None:
        pass

    def manifest_extras(self) -> dict[str, Any]:
        return {}

    def stage(self, name: str, subdir: str, settings: Any, inputs: list[dict], body: Callable[[Path], dict]) -> dict:
        """Run `body(stage_dir)` unless a manifest with the same fingerprint exists; write the manifest."""
        stage_dir = self.dir / subdir
        fp = fingerprint(name, settings, [m["fingerprint"] for m in inputs])
        done = is_done(stage_dir, fp)
        if done:
            log.info("stage %s: reusing %s (fingerprint %s)", name, stage_dir, fp)
            return {**done, "cached": True}
        if self.is_main_process():
            started = read_json(stage_dir / STARTED)
            if started and started.get("fingerprint") != fp:
                # partial or finished work for other settings: it no longer describes this recipe
                log.info("stage %s: settings changed, clearing %s", name, stage_dir)
                shutil.rmtree(stage_dir)
            stage_dir.mkdir(parents=True, exist_ok=True)
            write_json(stage_dir / STARTED, {"fingerprint": fp})
        self.wait_for_everyone()
        log.info("stage %s: running into %s", name, stage_dir)
        t0 = time.perf_counter()
        info = body(stage_dir)
        seconds = round(time.perf_counter() - t0, 1)
        manifest = {"fingerprint": fp, **info}
        if self.is_main_process():
            manifest = write_manifest(stage_dir, fp, stage=name, seconds=seconds, **self.manifest_extras(), **info)
        self.wait_for_everyone()
        return {**manifest, "cached": False}


def _model_label(kind: str, manifest: dict) -> str:
    """A label that changes whenever the model's producing stage does (sample ids depend on it)."""
    return f"{kind}@{manifest['fingerprint']}"


# --- stages ------------------------------------------------------------------------------------------


def prompts_stage(run: Run) -> dict:
    from distill.generation.prompts import load_prompts

    def body(d: Path) -> dict:
        train, ev = load_prompts(run.recipe.prompts)
        files = {"train.parquet": write_parquet(train, d / "train.parquet"), "eval.parquet": write_parquet(ev, d / "eval.parquet")}
        return {"rows_in": train.height + ev.height, "rows_out": train.height + ev.height, "files": files}

    return run.stage("prompts", "prompts", run.recipe.section_hash("prompts"), [], body)


def teacher_stage(run: Run, prompts_m: dict) -> dict:
    cfg = run.recipe.teacher

    def body(d: Path) -> dict:
        from distill.core.models import resolve_model

        train = pl.read_parquet(run.dir / "prompts" / "train.parquet")
        if not cfg.enabled:
            return {"rows_in": 0, "rows_out": 0, "model": resolve_model(cfg.model), "trained": False}
        from rl.teacher import train_teacher

        excluded = set(pl.read_parquet(run.dir / "prompts" / "eval.parquet")["prompt_id"])
        metrics = train_teacher(cfg, train, d, seed=run.recipe.seed, system_prompt=run.recipe.prompts.system_prompt, exclude=excluded)
        write_json(d / "metrics.json", metrics)
        out = {"rows_in": train.height, "rows_out": train.height, "model": str(d / "model"), "trained": True, "files": {"model": {}}}
        if "rl_start_model" in metrics:  # what GRPO started from, for the eval's before/after-RL comparison
            out["rl_start_model"] = metrics["rl_start_model"]
        return out

    settings = {"teacher": run.recipe.section_hash("teacher"), "seed": run.recipe.seed, "system": run.recipe.prompts.system_prompt}
    return run.stage("teacher", "teacher", settings, [prompts_m], body)


def _engine_factory(kind: str, model: str, seed: int, chat_template: str | None, vllm_settings):
    from distill.engines.engines import make_engine

    return lambda: make_engine(kind, model, seed=seed, chat_template=chat_template, vllm_settings=vllm_settings)


def _sampling_fingerprint(run: Run) -> dict:
    """What decides which samples exist: not the engine, its transport or prices (switching from vLLM to a
    server mid-run keeps what was generated: ids do not depend on the engine), not keep_k/strategy unless
    adaptive sampling reads them. A changed fingerprint clears the traces directory (Run.stage)."""
    cfg = run.recipe.sampling
    adaptive = cfg.rejection.adaptive.enabled
    data = cfg.model_dump(mode="json", exclude={"engine", "vllm", "openai", "cost", "rejection"})
    data["adaptive"] = cfg.rejection.adaptive.model_dump(mode="json") | ({"keep_k": cfg.rejection.keep_k} if adaptive else {})
    if adaptive:  # rounds follow the verdicts
        data["verify"] = run.recipe.section_hash("verify")
    return data


def _gpus(cfg) -> int:
    if cfg.cost.gpus is not None:
        return cfg.cost.gpus
    if cfg.engine == "vllm":
        v = cfg.vllm
        return v.tensor_parallel_size * v.pipeline_parallel_size * v.data_parallel_size
    return 1 if cfg.engine == "transformers" else 0  # a hosted API is priced per token


def sample_stage(run: Run, prompts_m: dict, teacher_m: dict) -> dict:
    from functools import partial

    from distill.engines.engines import SamplingParams, make_engine
    from distill.generation.sample import SharedEngine, accounting, generate_adaptive, generate_traces, generate_traces_parallel

    cfg = run.recipe.sampling

    def body(d: Path) -> dict:
        prompts = pl.read_parquet(run.dir / "prompts" / "train.parquet")
        params = SamplingParams(cfg.n, cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.seed)
        factory = partial(  # picklable: data-parallel workers build their own engine from it
            make_engine, cfg.engine, teacher_m["model"], seed=cfg.seed, chat_template=cfg.chat_template,
            vllm_settings=cfg.vllm, openai_settings=cfg.openai,
        )
        common = dict(
            model_label=_model_label("teacher", teacher_m), shard_size=cfg.shard_size,
            system_prompt=run.recipe.prompts.system_prompt, id_context={"chat_template": cfg.chat_template},
        )
        dp = cfg.vllm.data_parallel_size if cfg.engine == "vllm" else 1
        shared = None
        if run.sampler is not None:
            one_pass = partial(run.sampler, engine_factory=factory, **common)
        elif dp > 1:
            tp_pp = cfg.vllm.tensor_parallel_size * cfg.vllm.pipeline_parallel_size
            one_pass = partial(generate_traces_parallel, workers=dp, devices_per_worker=tp_pp, engine_factory=factory, **common)
        else:
            shared = SharedEngine(factory)  # one engine start for all adaptive rounds
            one_pass = partial(generate_traces, engine_factory=shared, **common)
        try:
            if cfg.rejection.adaptive.enabled:
                from distill.verify.verify import verify_with_config

                # the verify stage's own verifier and settings: rounds are planned on the same verdicts
                stats = generate_adaptive(
                    prompts, d, params=params, generate=one_pass, verify=lambda df: verify_with_config(df, run.recipe.verify)[0],
                    adaptive=cfg.rejection.adaptive, keep_k=cfg.rejection.keep_k,
                )
            else:
                stats = one_pass(prompts, d, params=params)
        finally:
            if shared is not None:
                shared.shutdown()
        files = stats.pop("files")
        correct = stats.get("adaptive", {}).get("correct_samples")
        stats |= accounting(d, gpus=_gpus(cfg), cost=cfg.cost, samples=stats["rows"], correct=correct)
        return {"rows_in": prompts.height, "rows_out": stats["rows"], "generation": stats, "files": files}

    return run.stage("sample", "traces", _sampling_fingerprint(run), [prompts_m, teacher_m], body)


def verify_stage(run: Run, sample_m: dict) -> dict:
    from distill.verify.verify import verify_with_config

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


def select_stage(run: Run, verify_m: dict, curate_m: dict) -> dict:
    """The rejection policy after curation: per-prompt pass rates and difficulty, up to k accepted samples
    per prompt, and the prompts without one listed for a later round (distill.generation.rejection)."""
    from distill.generation.rejection import LEVELS, pass_rates, select_per_prompt, unsolved_prompts

    rej = run.recipe.sampling.rejection

    def body(d: Path) -> dict:
        verified = pl.read_parquet(run.dir / "verified" / "traces.parquet")
        kept = pl.read_parquet(run.dir / "curated" / "kept.parquet")
        rates = pass_rates(verified)
        selected, over = select_per_prompt(kept, rej.keep_k, rej.strategy)
        selected = selected.join(rates.select("prompt_id", "pass_rate", "difficulty", "level"), on="prompt_id", how="left", maintain_order="left")
        unsolved = unsolved_prompts(verified, selected)
        files = {
            "kept.parquet": write_parquet(selected, d / "kept.parquet"),
            "rejected.parquet": write_parquet(over, d / "rejected.parquet"),
            "pass_rates.parquet": write_parquet(rates, d / "pass_rates.parquet"),
            "unsolved.parquet": write_parquet(unsolved, d / "unsolved.parquet"),
        }
        levels = dict(rates.group_by("level").len().iter_rows())
        summary = {
            "keep_k": rej.keep_k,
            "strategy": rej.strategy,
            "prompts": rates.height,
            "levels": {lv: int(levels.get(lv, 0)) for lv in LEVELS},
            "mean_pass_rate": round(float(rates["pass_rate"].mean()), 4) if rates["pass_rate"].drop_nulls().len() else None,
            "prompts_with_accepted_sample": selected["prompt_id"].n_unique() if selected.height else 0,
            "unsolved": dict(sorted(unsolved.group_by("reason").len().iter_rows())) if unsolved.height else {},
            "dropped_over_k": over.height,
        }
        return {"rows_in": kept.height, "rows_out": selected.height, "files": files, "selection": summary}

    settings = {"keep_k": rej.keep_k, "strategy": rej.strategy}
    return run.stage("select", "selected", settings, [verify_m, curate_m], body)


def merge_stage(run: Run, select_m: dict) -> dict:
    from distill.mix.merge import build_sft_set, write_hf_dataset

    cfg = run.recipe.merge

    def body(d: Path) -> dict:
        from distill.core.models import resolve_model

        kept = pl.read_parquet(run.dir / "selected" / "kept.parquet")
        # tokens are counted, and the think style decided, with the first student's tokenizer
        first = run.recipe.students[0] if run.recipe.students else None
        tokenizer = None
        if first is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(resolve_model(first.model))
        generator = cfg.generator.model
        if generator == "teacher":
            generator = (read_json(run.dir / "teacher" / "_manifest.json") or {}).get("model")
        res = build_sft_set(
            kept, cfg, run.recipe.prompts.system_prompt, tokenizer=tokenizer, chat_template=first.chat_template if first else None,
            student_name=first.name if first else "the assistant", generator_model=generator, work_dir=d / "generated",
        )
        files = {"train.parquet": write_parquet(res.df, d / "train.parquet"), "dropped.parquet": write_parquet(res.dropped, d / "dropped.parquet")}
        write_hf_dataset(res.df, d / "hf")
        return {"rows_in": res.mix["rows_in"], "rows_out": res.df.height, "files": files, "mix": res.mix}

    first = run.recipe.students[0] if run.recipe.students else None
    settings = {
        "merge": run.recipe.section_hash("merge"), "system": run.recipe.prompts.system_prompt,
        "tokenizer": [first.model, first.chat_template, first.name] if first else None,
    }
    return run.stage("merge", "sft_data", settings, [select_m], body)


def sft_stage(run: Run, merge_m: dict, student_name: str) -> dict:
    from distill.mix.merge import to_training_rows
    from distill.core.models import resolve_model
    from distill.training.sft import train_sft

    student = next(s for s in run.recipe.students if s.name == student_name)

    def body(d: Path) -> dict:
        df = pl.read_parquet(run.dir / "sft_data" / "train.parquet")
        metrics = train_sft(
            resolve_model(student.model), to_training_rows(df), d / "model", lora=student.lora,
            training_args=student.training_args, seed=run.recipe.seed, chat_template=student.chat_template,
        )
        write_json(d / "metrics.json", metrics)
        return {"rows_in": df.height, "rows_out": df.height, "model": str(d / "model"), "metrics": metrics, "files": {"model": {}}}

    # where it trains (hardware) does not change what it learns; the batch settings are in training_args
    settings = {"student": student.model_dump(mode="json", exclude={"hardware"}), "seed": run.recipe.seed}
    return run.stage(f"sft:{student_name}", f"students/{student_name}", settings, [merge_m], body)


TEACHER_RL = "teacher after GRPO"  # pair key of the teacher's RL delta; student names cannot hold a space


def eval_stage(run: Run, prompts_m: dict, teacher_m: dict, sft_ms: dict[str, dict]) -> dict:
    from distill.engines.engines import SamplingParams
    from distill.evaluate.evaluate import evaluate_all
    from distill.core.models import resolve_model

    cfg = run.recipe.eval

    def body(d: Path) -> dict:
        prompts = pl.read_parquet(run.dir / "prompts" / "eval.parquet")
        models: dict[str, tuple[str, str]] = {}
        pairs: dict[str, tuple[str, str]] = {}
        if cfg.include_teacher:
            if cfg.include_teacher_before_rl and teacher_m.get("rl_start_model"):
                models["teacher_before_rl"] = (teacher_m["rl_start_model"], _model_label("teacher_before_rl", teacher_m))
                pairs[TEACHER_RL] = ("teacher_before_rl", "teacher")
            models["teacher"] = (teacher_m["model"], _model_label("teacher", teacher_m))
        for i, s in enumerate(run.recipe.students):
            suffix = "" if i == 0 else f":{s.name}"
            models[f"student_before{suffix}"] = (resolve_model(s.model), s.model)
            models[f"student_after{suffix}"] = (sft_ms[s.name]["model"], _model_label(f"student:{s.name}", sft_ms[s.name]))
            pairs[s.name] = (f"student_before{suffix}", f"student_after{suffix}")
        results, deltas, manifest = evaluate_all(
            models, cfg, d, heldout=prompts, heldout_verifier=run.recipe.verify.verifier, system_prompt=run.recipe.prompts.system_prompt,
            engine_factory=lambda path: _engine_factory(cfg.engine, path, cfg.seed, None, cfg.vllm), pairs=pairs,
        )
        teacher_delta = deltas.pop(TEACHER_RL, {})  # `delta` stays student -> benchmark (the cards read it)
        write_json(d / "results.json", {"results": results, "delta": deltas, "teacher_delta": teacher_delta, "manifest": manifest})
        n = sum(b["n_prompts"] for b in manifest["benchmarks"].values()) * len(models)
        return {"rows_in": n, "rows_out": n * cfg.k, "results": results, "delta": deltas, "teacher_delta": teacher_delta, "eval_manifest": manifest,
                "files": {"eval_manifest.json": {}}}

    settings = {"eval": run.recipe.section_hash("eval"), "verify": run.recipe.section_hash("verify"), "system": run.recipe.prompts.system_prompt}
    return run.stage("eval", "eval", settings, [prompts_m, teacher_m, *sft_ms.values()], body)


def report_stage(run: Run, manifests: dict[str, dict]) -> dict:
    from distill.report.summary import write_report

    return write_report(run, manifests)


def publish_stage(run: Run, manifests: dict[str, dict]) -> dict:
    from distill.publish.hub import publish_stage as publish

    return publish(run, manifests)


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
    if step("select", select_stage, m["verify"], m["curate"]):
        return m
    if step("merge", merge_stage, m["select"]):
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
    if step("report", report_stage, m):
        return m
    if run.recipe.publish.enabled:
        step("publish", publish_stage, m)
    return m
