"""The teacher stage on tiny models: GRPO moves the weights, a killed run resumes from its checkpoint's
step, the R1-Zero and R1 recipes run at tiny scale, and the real-scale recipes print their plan."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from distill.cli import main as cli_main
from distill.generation.prompts import load_prompts
from distill.config.prompts import PromptsConfig
from distill.config.teacher import TeacherConfig
from distill.config.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
REAL_TEACHER_RECIPES = ["r1-zero-qwen2.5-math-7b", "r1-zero-qwen2.5-32b", "r1-qwen2.5-math-7b", "r1-qwen2.5-32b"]

# A random model never writes the format or a right answer; the share of its output in the prompt's
# language does vary (its vocabulary holds English and Chinese), so that reward gives GRPO a gradient.
VARYING = [{"name": "language_consistency", "options": {"scope": "completion"}}]


def _prompts(n: int = 4) -> pl.DataFrame:
    return load_prompts(PromptsConfig(n_train=n, n_eval=2))[0]


def _teacher(model: Path, steps: int, **grpo_args) -> TeacherConfig:
    args = {"max_steps": steps, "per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 16,
            "learning_rate": 1e-3, "temperature": 1.0, **grpo_args}
    return TeacherConfig.model_validate(
        {"model": str(model), "cold_start": {"enabled": False}, "grpo": {"lora": {"enabled": False}, "rewards": VARYING, "training_args": args}}
    )


def test_grpo_changes_parameters_and_logs_each_reward(tiny_llama, tmp_path):
    from rl.teacher import train_teacher

    metrics = train_teacher(_teacher(tiny_llama, 2), _prompts(), tmp_path, seed=0, system_prompt=None, exclude=set())
    before = load_file(tiny_llama / "model.safetensors")
    after = load_file(tmp_path / "model" / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k].to(torch.bfloat16), after[k])]
    assert changed, "GRPO left every parameter as it was"
    g = metrics["grpo"]
    assert g["steps"] == 2 and len(g["reward_curve"]) == 2
    assert len(g["reward_curves"]["language_consistency"]) == 2 and all(0 <= v <= 1 for v in g["reward_curves"]["language_consistency"])
    assert all(v > 0 for v in g["completion_length_curve"])
    assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert metrics["rl_start_model"] == str(tiny_llama)  # no cold start: GRPO starts from the base


_KILLED_RUN = """
import sys
from pathlib import Path
sys.path[:0] = [{repo!r}, {tests!r}]
from test_teacher import _prompts, _teacher
from rl.teacher import train_teacher
train_teacher(_teacher(Path({model!r}), 40, save_steps=2), _prompts(), Path({out!r}), seed=0, system_prompt=None, exclude=set())
"""


@pytest.mark.slow
def test_killed_grpo_resumes_from_its_checkpoint_step(tiny_llama, tmp_path):
    from rl.teacher import last_checkpoint, train_teacher

    out = tmp_path / "teacher"
    script = tmp_path / "run.py"
    script.write_text(_KILLED_RUN.format(repo=str(REPO), tests=str(REPO / "tests"), model=str(tiny_llama), out=str(out)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    ckpts = out / ".model.checkpoints"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (ckpt := last_checkpoint(ckpts)) is not None and int(ckpt.name.split("-")[1]) >= 4:
                break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    resumed_at = int(last_checkpoint(ckpts).name.split("-")[1])
    assert 4 <= resumed_at < 40 and not (out / "model").exists()

    metrics = train_teacher(_teacher(tiny_llama, 40, save_steps=2), _prompts(), out, seed=0, system_prompt=None, exclude=set())
    g = metrics["grpo"]
    assert g["resumed_from_step"] == resumed_at and g["steps"] == 40
    # the curves hold every step once: those before the kill (from the checkpoint's state), then the rest
    assert g["step"] == list(range(1, 41))
    assert (out / "model" / "model.safetensors").is_file()


def _tiny_overrides(model: Path, run_dir: Path) -> list[str]:
    grpo = "teacher.grpo.training_args."
    return [
        f"run_dir={run_dir}", "threads=1", f"teacher.model={model}",
        "prompts.source=demo_arithmetic", "prompts.path=null", "prompts.n_train=4", "prompts.n_eval=2",
        f"{grpo}max_steps=1", f"{grpo}per_device_train_batch_size=4", f"{grpo}gradient_accumulation_steps=1",
        f"{grpo}num_generations=4", f"{grpo}max_completion_length=16", f"{grpo}bf16=false",
        f"{grpo}gradient_checkpointing=false", f"{grpo}vllm_max_model_length=512",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["r1-zero-qwen2.5-math-7b", "r1-qwen2.5-math-7b"])
def test_r1_zero_and_r1_recipes_run_at_tiny_scale(name, tiny_llama, tmp_path):
    from distill.pipeline import Run, run_pipeline

    overrides = _tiny_overrides(tiny_llama, tmp_path / "run")
    if name.startswith("r1-qwen"):  # R1: a cold start from the bundled examples (few-shot from a random model keeps nothing)
        cs = "teacher.cold_start."
        overrides += [f"{cs}source=file", f"{cs}path={REPO / 'data' / 'cold_start_examples.jsonl'}", f"{cs}n_examples=4",
                      f"{cs}training_args.max_steps=1", f"{cs}training_args.num_train_epochs=1", f"{cs}training_args.per_device_train_batch_size=4",
                      f"{cs}training_args.gradient_accumulation_steps=1", f"{cs}training_args.bf16=false",
                      f"{cs}training_args.gradient_checkpointing=false", f"{cs}training_args.max_length=512"]
    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml", overrides)
    m = run_pipeline(Run(recipe), only="teacher")
    metrics = json.loads((tmp_path / "run" / "teacher" / "metrics.json").read_text())
    assert m["teacher"]["trained"] and (tmp_path / "run" / "teacher" / "model" / "model.safetensors").is_file()
    names = [r.name for r in recipe.teacher.grpo.rewards]
    assert list(metrics["grpo"]["reward_curves"]) == names and metrics["grpo"]["steps"] == 1
    assert metrics["grpo"]["kl_curve"][0] is not None  # beta 0.001: the KL to the reference model is logged
    if name.startswith("r1-zero"):
        assert "cold_start" not in metrics and metrics["template"].startswith("r1_zero, answer answer_tag")
    else:
        assert "language_consistency" in names
        assert metrics["cold_start"]["rows"] == 4 and metrics["template"].startswith("chat, answer boxed, prefill")
        # the paper's reasoning/summary rendered in the template, the prefilled <think> left to the prompt
        ex = metrics["cold_start"]["example"]
        assert ex["prompt"].endswith("<think>\n") and "</think>" in ex["completion"] and not ex["completion"].startswith("<think>")


def test_fewshot_cold_start_keeps_only_verified_samples(tiny_llama):
    from rl.cold_start import collect
    from rl.templates import Template

    cfg = TeacherConfig.model_validate(
        {"cold_start": {"source": "fewshot", "n_examples": 2, "fewshot": {"engine": "transformers", "samples_per_prompt": 2, "max_tokens": 8,
                                                                           "examples": str(REPO / "data" / "cold_start_examples.jsonl")}}}
    ).cold_start
    with pytest.raises(ValueError, match="kept no sample"):  # a random model verifies nothing
        collect(cfg, Template("chat", "boxed"), seed=0, exclude=set(), model=str(tiny_llama), prompts=_prompts(2))


def test_cold_start_file_errors_name_the_row(tmp_path):
    from rl.cold_start import load_examples

    bad = tmp_path / "cs.jsonl"
    bad.write_text('{"prompt": "q1", "reasoning": "r", "summary": "s"}\n{"prompt": "q2", "reasoning": "", "summary": "s"}\n')
    with pytest.raises(ValueError, match=r"cs.jsonl: row 1 has neither"):
        load_examples(str(bad))


@pytest.mark.parametrize("name", REAL_TEACHER_RECIPES)
def test_real_scale_recipes_validate_and_print_their_plan(name, capsys):
    rc = cli_main(["teacher", "--plan", "--config", str(REPO / "recipes" / f"{name}.yaml")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "ERROR" not in out and "GRPO:" in out and "rollouts: vLLM" in out and "memory (rough)" in out
    assert ("cold-start SFT" in out) == name.startswith("r1-qwen")


def test_plan_reports_what_trl_refuses(capsys):
    rc = cli_main(["teacher", "--plan", "--config", str(REPO / "recipes" / "r1-zero-qwen2.5-math-7b.yaml"),
                   "teacher.grpo.training_args.per_device_train_batch_size=5", "teacher.grpo.training_args.gradient_accumulation_steps=1"])
    out = capsys.readouterr().out
    assert rc == 2 and "must be a multiple of num_generations" in out


def test_cpu_runs_skip_gradient_checkpointing_unless_the_recipe_asks(tmp_path):
    # TRL checkpoints gradients by default; on a CPU that only recomputes the forward pass
    from distill.training.common import base_args
    from rl.teacher import grpo_args

    assert not torch.cuda.is_available()
    assert base_args(tmp_path, 0)["gradient_checkpointing"] is False
    cfg = _teacher(Path("m"), 2).grpo
    assert grpo_args(cfg, tmp_path, 0)["gradient_checkpointing"] is False
    cfg = _teacher(Path("m"), 2, gradient_checkpointing=True).grpo
    assert grpo_args(cfg, tmp_path, 0)["gradient_checkpointing"] is True


def test_cpu_training_uses_bf16_autocast_only_where_the_cpu_has_bf16_instructions(tmp_path, monkeypatch):
    # bf16 matmuls ran 2.2x faster than fp32 on an AVX512-BF16 CPU; without those instructions they are emulated
    from distill.training import common

    flags = tmp_path / "cpuinfo"
    real_open = open

    def cpuinfo(text):
        flags.write_text(text)
        monkeypatch.setattr("builtins.open", lambda f, *a, **k: real_open(flags if f == "/proc/cpuinfo" else f, *a, **k))

    monkeypatch.delenv(common.CPU_BF16_ENV, raising=False)
    cpuinfo("processor : 0\nflags : fpu sse2 avx2 avx512f avx512_bf16\n")
    assert common.cpu_bf16() is True and common.base_args(tmp_path, 0)["bf16"] is True
    cpuinfo("processor : 0\nflags : fpu sse2 avx2 avx512f\n")
    assert common.cpu_bf16() is False and common.base_args(tmp_path, 0)["bf16"] is False
    monkeypatch.setenv(common.CPU_BF16_ENV, "1")
    assert common.base_args(tmp_path, 0)["bf16"] is True
    monkeypatch.setenv(common.CPU_BF16_ENV, "0")
    cpuinfo("processor : 0\nflags : amx_bf16 avx512_bf16\n")
    assert common.base_args(tmp_path, 0)["bf16"] is False
    assert common.base_args(tmp_path, 0)["use_cpu"] is True  # fp32 weights either way: bf16 is autocast only


@pytest.mark.slow
def test_fewshot_cold_start_keeps_verified_formatted_traces_from_a_real_model(tmp_path):
    # the kept path: SmolLM2 after the demo's own cold start (8 full fine-tuning steps, trained here)
    # writes the format, so with one long example in context some of its answers verify; every kept
    # trace is checked again, and the kept rows render into cold-start SFT rows
    from transformers import AutoTokenizer

    from distill.core.models import resolve_model
    from rl.cold_start import collect, render, run_cold_start
    from rl.rewards import Accuracy
    from rl.templates import build_template

    demo = load_recipe(REPO / "recipes" / "demo.yaml").teacher
    base = resolve_model(demo.model)
    template = build_template(demo.template, AutoTokenizer.from_pretrained(base))
    prompts = _prompts(4)
    run_cold_start(base, demo.cold_start, template, tmp_path / "cs", seed=0, exclude=set(), prompts=prompts)
    cfg = TeacherConfig.model_validate({"cold_start": {"source": "fewshot", "n_examples": 4, "fewshot": {
        "engine": "transformers", "shots": 1, "samples_per_prompt": 2, "max_tokens": 96, "temperature": 0.7,
        "examples": str(REPO / "data" / "cold_start_examples.jsonl")}}}).cold_start
    rows = collect(cfg, template, seed=0, exclude=set(), model=str(tmp_path / "cs"), prompts=prompts)
    assert 1 <= len(rows) <= 4 and len({r["prompt"] for r in rows}) == len(rows)  # one trace per prompt
    gold = dict(zip(prompts["prompt"], prompts["answer"]))
    for r in rows:
        assert template.format_ok(template.strip_prefill(r["completion"])), r["completion"]
        assert Accuracy(template)([r["completion"]], answer=[gold[r["prompt"]]], task=["math"]) == [1.0], r["completion"]
    sft = render(rows, template, AutoTokenizer.from_pretrained(base))
    assert [m["content"] for s in sft for m in s["completion"]] == [template.strip_prefill(r["completion"]) for r in rows]
