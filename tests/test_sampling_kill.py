"""`kill -9` during sampling, then a rerun: the result must equal an uninterrupted run's.

The sampling process is a real subprocess with the real transformers engine on a tiny model: first
`distill sample` itself (one kill as soon as a shard is committed), then a small script killed several
times at random moments (between and during shard writes). After each rerun the traces must hold exactly
the uninterrupted run's samples: same ids, no duplicates, none missing, and (the transformers engine
seeds by content) the same texts; the ledger shows that no committed shard was generated twice.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from distill.generation.ledger import read_ledger
from distill.core.storage import read_table

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def _committed(traces: Path) -> set[str]:
    return {p.name for p in traces.glob("shard-*.json")}


def _kill_when(proc: subprocess.Popen, traces: Path, at_least: int, extra_delay: float = 0.0, timeout: float = 240) -> None:
    """SIGKILL `proc` once `at_least` shards are committed (plus a delay); fail if it finishes first."""
    deadline = time.monotonic() + timeout
    while len(_committed(traces)) < at_least:
        if proc.poll() is not None:
            pytest.fail(f"the sampler finished (rc {proc.returncode}) before it could be killed:\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no shard was committed in time")
        time.sleep(0.005)
    time.sleep(extra_delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _assert_same_samples(got_dir: Path, want_dir: Path, n_rows: int) -> None:
    got, want = read_table(got_dir).sort("id"), read_table(want_dir).sort("id")
    assert got.height == want.height == n_rows
    assert got["id"].n_unique() == n_rows  # no duplicates
    assert got["id"].to_list() == want["id"].to_list()  # none missing, none extra
    assert got["completion"].to_list() == want["completion"].to_list()
    files = [e["file"] for e in read_ledger(got_dir) if e["event"] == "shard"]
    assert not [f for f, c in Counter(files).items() if c > 1], "a committed shard was generated twice"


def _cli_recipe(model: Path, run_dir: Path) -> dict:
    return {
        "name": "kill",
        "run_dir": str(run_dir),
        "threads": 1,
        "prompts": {"n_train": 40, "n_eval": 1},
        "teacher": {"enabled": False, "model": str(model)},
        "sampling": {"engine": "transformers", "n": 2, "temperature": 1.0, "top_p": 1.0, "max_tokens": 64, "shard_size": 2},
    }


def _cli(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distill.cli", "sample", "--config", str(cfg)], env=ENV, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_sigkill_distill_sample_then_rerun_equals_uninterrupted(tiny_llama, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    for name, run_dir in (("killed", killed), ("clean", clean)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(_cli_recipe(tiny_llama, run_dir)))

    proc = _cli(tmp_path / "killed.yaml")
    _kill_when(proc, killed / "traces", at_least=1)
    done = _committed(killed / "traces")
    assert 1 <= len(done) < 20, "killed part-way: some shards, not all"
    assert not (killed / "traces" / "_manifest.json").exists()

    for cfg in ("killed.yaml", "clean.yaml"):
        out = _cli(tmp_path / cfg)
        _, err = out.communicate(timeout=600)
        assert out.returncode == 0, err[-3000:]
    _assert_same_samples(killed / "traces", clean / "traces", 80)
    manifest = json.loads((killed / "traces" / "_manifest.json").read_text())
    assert manifest["rows_out"] == 80 and manifest["generation"]["shards_generated"] == 20 - len(done)
    assert manifest["generation"]["engine_starts"] == 2  # both runs started an engine; the costs add up


SCRIPT = """
import sys, time
import polars as pl
from distill.engines.base import SamplingParams
from distill.engines.transformers import TransformersEngine
from distill.generation.sample import generate_traces

out, model = sys.argv[1], sys.argv[2]
prompts = pl.DataFrame({"prompt_id": [f"p{i}" for i in range(24)], "prompt": [f"What is {i} + {i}?" for i in range(24)]})

def factory():
    engine = TransformersEngine(model, seed=0)
    inner = engine.generate
    def generate(requests, params):
        time.sleep(0.05)  # widen the windows a kill can land in
        return inner(requests, params)
    engine.generate = generate
    return engine

if __name__ == "__main__":
    params = SamplingParams(n=3, temperature=1.0, top_p=1.0, max_tokens=24)
    generate_traces(prompts, out, model_label="m", params=params, engine_factory=factory, shard_size=2)
"""


@pytest.mark.slow
def test_repeated_sigkills_at_random_moments(tiny_llama, tmp_path):
    script = tmp_path / "sampler.py"
    script.write_text(SCRIPT)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    rng = random.Random(0)

    def start(out: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(script), str(out), str(tiny_llama)], env=ENV, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    for _ in range(3):  # each time at least one more shard, then a random moment (possibly mid-write)
        already = len(_committed(killed)) if killed.exists() else 0
        _kill_when(start(killed), killed, at_least=already + 1, extra_delay=rng.uniform(0, 0.15))
    assert len(_committed(killed)) < 12
    for out in (killed, clean):
        proc = start(out)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    _assert_same_samples(killed, clean, 72)
