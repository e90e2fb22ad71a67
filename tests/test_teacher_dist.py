"""The teacher and the students on several processes: `distill launch --stage teacher`, `distill run` routing
a stage whose hardware asks for several GPUs through `accelerate launch`, one writer of the stage directory,
the Trainer's gather on save, the few-shot cold start generated on one process only, memory handed back
between stages, and the eval's data-parallel engines.

The multi-process tests run 2 CPU processes under `accelerate launch` with the DDP config (gloo), as
tests/test_plan.py does. What does not run on CPU: FSDP (accelerate 1.15's FullyShardedDataParallelPlugin
raises "no available devices found, must be one of 'XPU', 'CUDA', ..." without an accelerator) and
DeepSpeed ZeRO-2/3 (deepspeed is not installed here, and its CPU path needs a C++ build); their commands
and configs are checked without running (here and in tests/test_plan.py), and the save goes through the
same `trainer.save_model` gather that DDP exercises.
"""

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from distill.config.hardware import HardwareConfig
from distill.config.recipe import load_recipe, recipe_from_dict
from distill.core.run import Run
from distill.launch import launch_command
from distill.stage_fns import sft_stage
from distill.training.distributed import launch_processes, on_main_process

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "recipes" / "demo.yaml"
VARYING = [{"name": "language_consistency", "options": {"scope": "completion"}}]  # a random model's only gradient (test_teacher.py)
SMALL_SFT = {"max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 256,
             "bf16": False, "gradient_checkpointing": False}


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1",
                HF_HUB_OFFLINE="1")


def teacher_recipe(model: Path, run_dir: Path, strategy: str = "ddp", cold_start: dict | None = None) -> dict:
    """A tiny teacher: a cold start from the bundled examples (LoRA, merged on save), then 2 GRPO steps."""
    cs = cold_start or {"source": "file", "path": str(REPO / "data" / "cold_start_examples.jsonl"), "n_examples": 4}
    return {
        "name": "teacher-dist", "run_dir": str(run_dir), "threads": 1,
        "prompts": {"source": "demo_arithmetic", "n_train": 4, "n_eval": 2},
        "teacher": {
            "model": str(model),
            "cold_start": {**cs, "lora": {"r": 4, "alpha": 8}, "training_args": SMALL_SFT},
            "grpo": {"lora": {"enabled": False}, "rewards": VARYING, "training_args": {
                "max_steps": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "num_generations": 4,
                "max_completion_length": 8, "bf16": False, "gradient_checkpointing": False, "save_steps": 1}},
            "hardware": {"gpus_per_node": 2, "strategy": strategy, "launch": "always"},
        },
        "students": [{"name": "s", "model": str(model), "lora": {"enabled": False}, "training_args": {**SMALL_SFT, "max_steps": 2},
                      "hardware": {"gpus_per_node": 2, "strategy": strategy, "launch": "always"}}],
    }


# --- fast ---------------------------------------------------------------------------------------------------------


def test_new_hardware_fields_leave_the_demo_hashes_and_round_trip():
    demo = load_recipe(DEMO)
    assert "hardware" not in demo.model_dump()["teacher"] and "launch" not in demo.model_dump()["students"][0]["hardware"]
    r = load_recipe(DEMO, ["teacher.hardware.gpus_per_node=2", "students.0.hardware.launch=always"])
    assert r.section_hash("teacher") != demo.section_hash("teacher")
    # the recipe a launched stage reads back (distill.training.distributed.launch_stage) is the same recipe
    again = recipe_from_dict(yaml.safe_load(yaml.safe_dump(r.model_dump(mode="json"), sort_keys=False)))
    assert again.recipe_hash() == r.recipe_hash() and again.section_hash("teacher") == r.section_hash("teacher")


def test_when_distill_run_launches_processes():
    assert launch_processes(None, "teacher.hardware") == 1
    assert launch_processes(HardwareConfig(gpus_per_node=1), "f") == 1
    assert launch_processes(HardwareConfig(gpus_per_node=8, launch="never"), "f") == 1
    assert launch_processes(HardwareConfig(gpus_per_node=2, launch="always"), "f") == 2
    import torch

    if not torch.cuda.is_available():  # auto: only where CUDA shows several devices (the demo's 8×H100 default trains in-process here)
        assert launch_processes(HardwareConfig(gpus_per_node=8), "f") == 1
    with pytest.raises(ValueError, match=r"students\[1\].hardware.nodes is 2: .*distill launch"):
        launch_processes(HardwareConfig(gpus_per_node=2, nodes=2, launch="always"), "students[1].hardware")


def test_launch_command_for_the_teacher(tiny_llama, tmp_path):
    recipe = recipe_from_dict(teacher_recipe(tiny_llama, tmp_path, strategy="fsdp"))
    cmd = launch_command("r.yaml", recipe, stage="teacher", run_dir="runs/x", port=29999)
    assert cmd[cmd.index("--config_file") + 1].endswith("configs/accelerate/fsdp.yaml")
    assert cmd[cmd.index("--num_processes") + 1] == "2"
    assert cmd[cmd.index("-m") + 1:] == ["distill.launch", "--config", "r.yaml", "--stage", "teacher", "--run-dir", "runs/x"]
    # the accelerate config named in the recipe wins, and a missing one is named by its field
    named = recipe_from_dict(teacher_recipe(tiny_llama, tmp_path) | {"teacher": {
        **teacher_recipe(tiny_llama, tmp_path)["teacher"], "hardware": {"gpus_per_node": 2, "accelerate_config": "configs/accelerate/zero2.yaml"}}})
    cmd = launch_command("r.yaml", named, stage="teacher")
    assert cmd[cmd.index("--config_file") + 1].endswith("configs/accelerate/zero2.yaml")
    missing = recipe_from_dict({**teacher_recipe(tiny_llama, tmp_path), "teacher": {
        **teacher_recipe(tiny_llama, tmp_path)["teacher"], "hardware": {"gpus_per_node": 2, "accelerate_config": "nope.yaml"}}})
    with pytest.raises(FileNotFoundError, match=r"teacher.hardware.accelerate_config"):
        launch_command("r.yaml", missing, stage="teacher")
    with pytest.raises(ValueError, match="teacher.hardware is not set"):
        launch_command("r.yaml", load_recipe(DEMO), stage="teacher")


def test_on_main_process_in_one_process_just_calls():
    assert on_main_process(lambda: [1, 2]) == [1, 2]


def test_sft_stage_leaves_no_model_behind(tiny_llama, tmp_path):
    """5639c99: the trainer and its model sat in reference cycles after the stage returned (GPU memory held
    into the next stage until Python's collector happened to run); the stage now collects them."""
    from transformers import PreTrainedModel

    run_dir = tmp_path / "run"
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
             "completion": [{"role": "assistant", "content": f"<think>\n{i} + 1 = {i + 1}\n</think>\n\\boxed{{{i + 1}}}"}]} for i in range(4)]
    (run_dir / "sft_data").mkdir(parents=True)
    pl.DataFrame(rows).write_parquet(run_dir / "sft_data" / "train.parquet")
    recipe = recipe_from_dict({"name": "free", "students": [{"name": "s", "model": str(tiny_llama), "lora": {"enabled": False},
                                                             "training_args": SMALL_SFT}]})
    gc.collect()
    before = {id(o) for o in gc.get_objects() if isinstance(o, PreTrainedModel)}  # other tests' models, still held
    gc.disable()  # only the stage's own collection may free them
    try:
        m = sft_stage(Run(recipe, run_dir), {"fingerprint": "merge-for-test"}, "s")
        alive = [type(o).__name__ for o in gc.get_objects() if isinstance(o, PreTrainedModel) and id(o) not in before]
    finally:
        gc.enable()
    assert m["metrics"]["steps"] == 1
    assert alive == []


# --- 2 processes under accelerate launch (slow) ---------------------------------------------------------------------


def _launch_teacher(recipe: dict, tmp_path: Path, port: int) -> subprocess.CompletedProcess:
    config = tmp_path / "r.yaml"
    config.write_text(yaml.safe_dump(recipe))
    return subprocess.run([sys.executable, "-m", "distill.cli", "launch", "--stage", "teacher", "--config", str(config),
                           "--run-dir", recipe["run_dir"], "--port", str(port)], env=_env(), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_distill_launch_trains_the_teacher_on_two_processes(tiny_llama, tmp_path, strategy="ddp"):
    """`distill launch --stage teacher` (5639c99 launched sft only): cold start (LoRA, merged after the
    gather) then 2 GRPO steps on 2 processes; one manifest, written by the main process; the model whole."""
    run_dir = tmp_path / "run"
    proc = _launch_teacher(teacher_recipe(tiny_llama, run_dir, strategy), tmp_path, 29620)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "--num_processes 2" in proc.stdout and "--stage teacher" in proc.stdout
    assert f"configs/accelerate/{strategy}.yaml" in proc.stdout
    manifest = json.loads((run_dir / "teacher" / "_manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["trained"]
    metrics = json.loads((run_dir / "teacher" / "metrics.json").read_text())
    assert metrics["cold_start"]["rows"] == 4 and metrics["grpo"]["steps"] == 2
    from safetensors.torch import load_file
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(tiny_llama)
    weights = load_file(run_dir / "teacher" / "model" / "model.safetensors")
    embed = weights["model.embed_tokens.weight"]
    assert tuple(embed.shape) == (cfg.vocab_size, cfg.hidden_size)  # gathered whole, not a shard
    assert not any("lora" in k for k in load_file(run_dir / "teacher" / "cold_start" / "model.safetensors"))  # merged
    assert not list((run_dir / "teacher").glob(".*.gathered"))


@pytest.mark.slow
def test_fewshot_cold_start_generates_on_one_process(tiny_llama, tmp_path):
    """5639c99 generated the few-shot cold-start set on every process (each its own engine, the whole
    prompt set). Now the main one generates and shares; a random model keeps no sample, so the run stops
    with that message on every process, after one generation."""
    run_dir = tmp_path / "run"
    fewshot = {"source": "fewshot", "n_examples": 2, "fewshot": {"engine": "transformers", "samples_per_prompt": 1, "max_tokens": 4,
                                                                 "examples": str(REPO / "data" / "cold_start_examples.jsonl")}}
    proc = _launch_teacher(teacher_recipe(tiny_llama, run_dir, cold_start=fewshot), tmp_path, 29622)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "kept no sample" in log, log[-3000:]
    assert log.count("few-shot generation kept") == 1, log[-3000:]  # 5639c99: once per process


@pytest.mark.slow
def test_distill_run_routes_sft_through_the_launcher(tiny_llama, tmp_path, strategy="ddp"):
    """The sft stage of `distill run` (the pipeline's own call) whose hardware asks for 2 GPUs trains on 2
    processes under `accelerate launch` and returns their manifest (5639c99 trained in-process)."""
    run_dir = tmp_path / "run"
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
             "completion": [{"role": "assistant", "content": f"<think>\n{i} + 1 = {i + 1}\n</think>\n\\boxed{{{i + 1}}}"}]} for i in range(8)]
    (run_dir / "sft_data").mkdir(parents=True)
    pl.DataFrame(rows).write_parquet(run_dir / "sft_data" / "train.parquet")
    (run_dir / "sft_data" / "_manifest.json").write_text(json.dumps({"fingerprint": "merge-for-test"}))
    recipe = recipe_from_dict(teacher_recipe(tiny_llama, run_dir, strategy))
    old = os.environ.get("PYTHONPATH")
    m = sft_stage(Run(recipe, run_dir), {"fingerprint": "merge-for-test"}, "s")
    assert os.environ.get("PYTHONPATH") == old
    assert not m["cached"] and m["processes"] == 2 and m["metrics"]["steps"] == 2
    assert (run_dir / "students" / "s" / "model" / "model.safetensors").is_file()
    again = sft_stage(Run(recipe, run_dir), {"fingerprint": "merge-for-test"}, "s")  # reused: nothing launched
    assert again["cached"] and again["fingerprint"] == m["fingerprint"]


@pytest.mark.slow
def test_eval_runs_data_parallel_workers(tiny_llama, tmp_path):
    """eval.vllm.data_parallel_size: 2 engines at once, each generating its share of the shards (5639c99
    ignored it in the eval: one engine did everything). The engines here are transformers ones on CPU."""
    from functools import partial

    from distill.config.eval import EvalConfig
    from distill.engines.factory import make_engine
    from distill.evaluate.evaluate import evaluate_all

    heldout = pl.DataFrame({"prompt_id": [f"p{i}" for i in range(4)], "prompt": [f"What is {i} + 1?" for i in range(4)],
                            "answer": [str(i + 1) for i in range(4)]})
    cfg = EvalConfig(engine="vllm", k=2, max_tokens=4, vllm={"data_parallel_size": 2})
    results, _, manifest = evaluate_all(
        {"student_after": (str(tiny_llama), "tiny")}, cfg, tmp_path / "eval", heldout=heldout,
        engine_factory=lambda path: partial(make_engine, "transformers", path, seed=0),
    )
    assert results["student_after"]["generation"]["workers"] == 2 and manifest["data_parallel_workers"] == 2
    assert results["student_after"]["n_prompts"] == 4 and results["student_after"]["n_samples"] == 8


def test_where_the_teacher_trains_is_not_in_its_fingerprint():
    """teacher.hardware (GPUs, strategy, launch) changes how the teacher stage runs, not what it learns: a
    run moved to other hardware reuses its teacher, as students[].hardware does for sft."""
    from distill.stage_fns import teacher_settings

    demo = load_recipe(DEMO)
    moved = load_recipe(DEMO, ["teacher.hardware.gpus_per_node=2", "teacher.hardware.strategy=ddp"])
    assert teacher_settings(moved) == teacher_settings(demo)
    assert teacher_settings(demo)["teacher"] == demo.section_hash("teacher")  # runs made before it reuse their teacher
    assert teacher_settings(load_recipe(DEMO, ["teacher.grpo.training_args.max_steps=3"])) != teacher_settings(demo)
