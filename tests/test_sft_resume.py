"""Kill-and-resume: SIGKILL an SFT run after its first checkpoint, rerun it, and it continues from there."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.training.sft import last_checkpoint

WORKER = """
import json, sys
from pathlib import Path
from distill.config.hardware import LoraConfig
from distill.training.sft import train_sft
rows = [{"prompt": [{"role": "user", "content": f"What is {i} + 2?"}],
         "completion": [{"role": "assistant", "content": f"<think>\\n{i} + 2 = {i + 2}\\n</think>\\nThe answer is \\\\boxed{{{i + 2}}}."}]}
        for i in range(64)]
out = Path(sys.argv[2])
metrics = train_sft(sys.argv[1], rows, out / "model", lora=LoraConfig(enabled=False), seed=3,
                    training_args={"max_steps": 40, "per_device_train_batch_size": 2, "learning_rate": 1e-3,
                                   "save_strategy": "steps", "save_steps": 4, "save_total_limit": 2})
(out / "metrics.json").write_text(json.dumps(metrics))
"""


def _start(model: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", WORKER, str(model), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_last_checkpoint_skips_incomplete(tmp_path):
    assert last_checkpoint(tmp_path / "none") is None
    for step, complete in ((4, True), (8, True), (12, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path).name == "checkpoint-8"


@pytest.mark.slow
def test_sft_resumes_from_its_last_checkpoint_after_sigkill(tiny_llama, tmp_path):
    ckpts = tmp_path / ".model.checkpoints"
    proc = _start(tiny_llama, tmp_path)
    deadline = time.monotonic() + 300
    try:
        while last_checkpoint(ckpts) is None:
            assert proc.poll() is None, f"the run ended before its first checkpoint:\n{proc.stdout.read()}"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = int(last_checkpoint(ckpts).name.split("-")[1])
    assert 0 < killed_at < 40 and not (tmp_path / "model").exists()

    proc = _start(tiny_llama, tmp_path)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["resumed_from_step"] >= killed_at  # a later checkpoint may have finished before the kill landed
    assert metrics["steps"] == 40
    # the second run trained only the remaining steps; the log keeps the killed run's steps before them
    assert metrics["steps_run"] == 40 - metrics["resumed_from_step"]
    assert len(metrics["loss_curve"]) == 40
    assert (tmp_path / "model" / "model.safetensors").is_file()
