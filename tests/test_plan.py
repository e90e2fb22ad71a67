"""Student recipes, `distill plan` and the `distill launch` command (no weights are loaded)."""

import json
from pathlib import Path

import pytest

from distill.cli import main
from distill.launch import accelerate_config, launch_command
from distill.planning.archs import ARCHS, arch_for, arch_from_config
from distill.core.hardware import gpu_spec
from distill.planning.plan import plan_recipe
from distill.planning.memory import sft_memory
from distill.config.base import RecipeError
from distill.config.recipe import load_recipe, recipe_from_dict

ROOT = Path(__file__).resolve().parents[1]
STUDENT_RECIPES = sorted((ROOT / "recipes").glob("r1-distill-*.yaml"))
R1_STUDENTS = {"Qwen/Qwen2.5-Math-1.5B", "Qwen/Qwen2.5-Math-7B", "Qwen/Qwen2.5-14B", "Qwen/Qwen2.5-32B",
               "meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.3-70B-Instruct"}


def test_the_six_r1_students_have_recipes():
    models = {s.model for p in STUDENT_RECIPES for s in load_recipe(p).students}
    assert R1_STUDENTS <= models
    methods = {(s.lora.enabled, s.lora.load_in_4bit) for p in STUDENT_RECIPES for s in load_recipe(p).students}
    assert (True, True) in methods and (False, False) in methods  # a QLoRA variant next to full fine-tuning


@pytest.mark.parametrize("path", STUDENT_RECIPES, ids=lambda p: p.stem)
def test_every_student_recipe_validates_and_plans(path, capsys):
    recipe = load_recipe(path)
    for s in recipe.students:
        assert s.training_args["save_strategy"] == "steps"  # resumable after a kill
        assert accelerate_config(s.hardware).is_file()
    assert main(["plan", str(path), "--gpu", "H100-80GB", "--gpus", "8"]) == 0
    out = capsys.readouterr().out
    for s in recipe.students:
        assert f"sft:{s.name}" in out
    assert "GPU-hours" in out and "GiB" in out
    # at the recipe's own hardware every student fits
    plan = plan_recipe(recipe)
    for s in recipe.students:
        stage = plan["stages"][f"sft:{s.name}"]
        assert stage["memory"]["fits"], (s.name, stage["memory"])
        assert stage["gpu_hours"] > 0
    assert plan["stages"]["sample"]["gpu_hours"] > 0


def test_plan_json_and_assumption_flags(capsys):
    path = ROOT / "recipes" / "r1-distill-qwen2.5-32b.yaml"
    assert main(["plan", str(path), "--json", "--sft-samples", "17000", "--sft-tokens-per-sample", "6000",
                 "--mfu", "0.2", "--gen-tok-s-per-gpu", "100"]) == 0
    plan = json.loads(capsys.readouterr().out)
    sft = plan["stages"]["sft:qwen2.5-32b"]
    assert sft["samples"] == 17000 and sft["tokens"] == 17000 * 6000 * 3 and sft["mfu"] == 0.2
    gen = plan["stages"]["sample"]
    assert gen["throughput_source"] == "given"
    assert gen["gpu_hours"] == pytest.approx(gen["output_tokens"] / 100 / 3600, rel=1e-3)


@pytest.mark.parametrize("name,billions", [
    ("Qwen/Qwen2.5-Math-1.5B", 1.54), ("Qwen/Qwen2.5-Math-7B", 7.62), ("Qwen/Qwen2.5-14B", 14.77),
    ("Qwen/Qwen2.5-32B", 32.76), ("meta-llama/Llama-3.1-8B", 8.03), ("meta-llama/Llama-3.3-70B-Instruct", 70.55),
])
def test_parameter_counts_match_the_published_sizes(name, billions):
    assert arch_for(name).params() / 1e9 == pytest.approx(billions, rel=0.005)


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_qwen2"])
def test_config_json_shapes_count_the_real_parameters(arch, request):
    from transformers import AutoModelForCausalLM

    path = request.getfixturevalue(arch)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert arch_for(str(path)).params() == sum(p.numel() for p in model.parameters())
    assert arch_from_config(path / "config.json").vocab == model.config.vocab_size


def test_memory_follows_the_sharding_strategy():
    a, h100 = ARCHS["qwen2.5-32b"], gpu_spec("H100-80GB")
    kw = dict(gpu=h100, gpus_per_node=8, method="full", micro_batch=1, seq_len=8192)
    ddp = sft_memory(a, gpus=8, strategy="ddp", **kw)
    z3 = sft_memory(a, gpus=8, strategy="zero3", **kw)
    z3_32 = sft_memory(a, gpus=32, strategy="zero3", **kw)
    off = sft_memory(a, gpus=8, strategy="zero3-offload", **kw)
    states = ddp.weights_gib + ddp.grads_gib + ddp.optimizer_gib
    assert states == pytest.approx(16 * a.params() / 2**30)  # ZeRO's 16 bytes per parameter, all on one GPU
    assert not ddp.fits
    assert z3.weights_gib + z3.grads_gib + z3.optimizer_gib == pytest.approx(states / 8)
    assert z3_32.total_gib < z3.total_gib
    assert off.total_gib < z3.total_gib and off.cpu_offload_gib_per_node > 400 and off.fits
    lora = sft_memory(a, gpus=8, strategy="ddp", **{**kw, "method": "lora"}, lora_r=16)
    qlora = sft_memory(a, gpus=8, strategy="ddp", **{**kw, "method": "qlora"}, lora_r=16)
    assert qlora.weights_gib < 0.4 * lora.weights_gib and lora.trainable < 0.01 * a.params()
    no_ckpt = sft_memory(a, gpus=8, strategy="zero3", **kw, gradient_checkpointing=False)
    assert no_ckpt.activations_gib > 5 * z3.activations_gib


def test_bad_gpu_model_and_qlora_settings_name_the_field(tmp_path):
    with pytest.raises(RecipeError, match=r"students\.0\.hardware\.gpu.*unknown GPU 'H1000'"):
        recipe_from_dict({"name": "x", "students": [{"name": "s", "hardware": {"gpu": "H1000"}}]})
    with pytest.raises(RecipeError, match=r"students\.0\.lora.*load_in_4bit"):
        recipe_from_dict({"name": "x", "students": [{"name": "s", "lora": {"enabled": False, "load_in_4bit": True}}]})
    with pytest.raises(ValueError, match="unknown model 'acme/Foo-3B'.*config.json"):
        arch_for("acme/Foo-3B")
    assert main(["plan", str(ROOT / "recipes" / "demo.yaml"), "--gpu", "TPU"]) == 2


def test_launch_command_single_and_multi_node():
    recipe = load_recipe(ROOT / "recipes" / "r1-distill-qwen2.5-32b.yaml")
    cmd = launch_command("recipes/r1-distill-qwen2.5-32b.yaml", recipe, run_dir="runs/x", overrides=["seed=1"])
    assert cmd[:2] == ["accelerate", "launch"]
    assert cmd[cmd.index("--config_file") + 1].endswith("configs/accelerate/zero3.yaml")
    assert cmd[cmd.index("--num_machines") + 1] == "4" and cmd[cmd.index("--num_processes") + 1] == "32"
    assert cmd[cmd.index("--machine_rank") + 1] == "${MACHINE_RANK}"
    assert cmd[cmd.index("-m") + 1 :] == ["distill.launch", "--config", "recipes/r1-distill-qwen2.5-32b.yaml",
                                          "--student", "qwen2.5-32b", "--run-dir", "runs/x", "seed=1"]
    one = launch_command("r.yaml", recipe, nodes=1, gpus_per_node=4)
    assert one[one.index("--num_processes") + 1] == "4" and "--machine_rank" not in one
    with pytest.raises(ValueError, match="no student 'nope'"):
        launch_command("r.yaml", recipe, student="nope")


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.stem)
def test_accelerate_configs_load_with_accelerate(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    assert cfg.mixed_precision == "bf16"
    kind = path.stem
    expected = {"ddp": "MULTI_GPU", "fsdp": "FSDP"}.get(kind, "DEEPSPEED")
    assert cfg.distributed_type.value == expected
    if kind.startswith("zero"):
        assert cfg.deepspeed_config["zero_stage"] == int(kind[4])


@pytest.mark.slow
def test_launch_runs_the_sft_stage_on_two_processes(tiny_llama, tmp_path):
    """`distill launch` with the DDP config on a machine without GPUs: accelerate starts 2 processes (DDP over
    gloo), each runs the sft stage; the main one writes the manifest and the merged student."""
    import os
    import subprocess
    import sys

    import polars as pl
    import yaml

    import shutil

    # a base model whose own EOS is not the token its template ends turns with (as Qwen2.5 base): SFT stamps
    # the turn end, and the LoRA adapter gathered from 2 processes must not reload it away
    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    cfg = json.loads((base / "config.json").read_text())
    endoftext = cfg["pad_token_id"]
    (base / "config.json").write_text(json.dumps({**cfg, "eos_token_id": endoftext}))
    im_end = cfg["eos_token_id"]
    run = tmp_path / "run"
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
             "completion": [{"role": "assistant", "content": f"<think>\n{i} + 1 = {i + 1}\n</think>\n\\boxed{{{i + 1}}}"}]}
            for i in range(16)]
    (run / "sft_data").mkdir(parents=True)
    pl.DataFrame(rows).write_parquet(run / "sft_data" / "train.parquet")
    (run / "sft_data" / "_manifest.json").write_text(json.dumps({"fingerprint": "merge-for-test"}))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "launch-test", "students": [{
        "name": "s", "model": str(base), "lora": {"r": 4, "alpha": 8},
        "hardware": {"strategy": "ddp", "gpus_per_node": 2},
        "training_args": {"max_steps": 3, "per_device_train_batch_size": 2, "save_strategy": "steps", "save_steps": 2,
                          "eos_token": "<|im_end|>"},
    }]}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "launch", "--config", str(recipe), "--run-dir", str(run),
                           "--port", "29613"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "accelerate launch" in proc.stdout and "--num_processes 2" in proc.stdout
    manifest = json.loads((run / "students" / "s" / "_manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["metrics"]["steps"] == 3
    assert (run / "students" / "s" / "model" / "model.safetensors").is_file()
    assert (run / "students" / "s" / ".model.checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    saved = json.loads((run / "students" / "s" / "model" / "config.json").read_text())
    assert saved["eos_token_id"] == im_end != endoftext
