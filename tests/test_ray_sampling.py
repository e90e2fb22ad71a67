"""Sampling shards mapped over a local Ray instance with two workers, each a vLLM engine on a tiny model,
through prefect-ray's RayTaskRunner; the shards are the ones a local run writes, and a rerun reuses them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from distill.engines.base import SamplingParams
from distill.config.recipe import recipe_from_dict
from distill.generation.shards import sample_ids
from distill.core.storage import read_table

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_sampling_over_two_ray_workers_with_vllm(tiny_llama, tmp_path):
    from test_pipeline import tiny_recipe

    run_dir = tmp_path / "run"
    raw = tiny_recipe(tiny_llama, run_dir, sample_engine="vllm")
    raw["teacher"]["enabled"] = False  # sample from the tiny model as-is: this test is about the sampling stage
    raw["sampling"]["shard_size"] = 2  # 6 prompts: 3 shards, two for rank 0 and one for rank 1
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    script = (
        "import json, sys\n"
        "from distill.config.recipe import load_recipe\n"
        "from flows.pipeline import distill_pipeline\n"
        "from flows.ray_sampling import RaySettings\n"
        "if __name__ == '__main__':\n"
        "    r = load_recipe(sys.argv[1])\n"
        "    out = distill_pipeline(r, only='sample', ray=RaySettings(workers=2, cpus_per_worker=1, local_cpus=2))\n"
        "    print('SUMMARY ' + json.dumps(out))\n"
    )
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "RAY_memory_monitor_refresh_ms": "0",  # a shared CI machine's memory use is not this test's to police
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600",
    }
    if os.environ.get("R1_DISTILL_TEST_PREFECT_API_URL"):  # make test's server: the Ray workers report to it too
        env["PREFECT_API_URL"] = os.environ["R1_DISTILL_TEST_PREFECT_API_URL"]
    out = subprocess.run([sys.executable, "-c", script, str(cfg)], env=env, capture_output=True, text=True, timeout=2400, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    summary = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("SUMMARY "))[8:])
    assert summary["sample"]["rows_out"] == 6 * 2 and summary["sample"]["cached"] is False

    manifest = json.loads((run_dir / "traces" / "_manifest.json").read_text())
    ray = manifest["generation"]["ray"]
    assert ray["workers"] == 2 and ray["shards_generated_by_driver"] == 0
    per = {w["rank"]: w for w in ray["per_worker"]}
    assert per[0]["shards_generated"] == 2 and per[1]["shards_generated"] == 1
    assert per[0]["pid"] != per[1]["pid"]  # two worker processes, two engines
    assert manifest["generation"]["engine"].startswith("vllm")

    # the traces are exactly the ones a local run plans: same content-addressed ids, every sample present
    traces = read_table(run_dir / "traces")
    recipe = recipe_from_dict(raw)
    s = recipe.sampling
    params = SamplingParams(s.n, s.temperature, s.top_p, s.max_tokens, s.seed)
    prompts = pl.read_parquet(run_dir / "prompts" / "train.parquet")
    label = traces["model"][0]
    expected = {i for pid in prompts["prompt_id"] for i in sample_ids(pid, s.n, label, params, context={"system_prompt": None, "chat_template": None})}
    assert set(traces["id"]) == expected and traces.height == 12
    assert traces["completion_tokens"].min() > 0
    # every engine start (one per worker) is in the ledger the accounting reads
    starts = [json.loads(line) for p in (run_dir / "traces").glob("_ledger-*.jsonl") for line in p.read_text().splitlines()]
    assert sum(e["event"] == "engine_start" for e in starts) == 2
