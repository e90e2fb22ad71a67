"""Sampling shards mapped over a Ray cluster through prefect-ray's `RayTaskRunner`.

Each Ray worker is one Prefect task holding one vLLM engine (tensor × pipeline parallel GPUs from the
recipe's `sampling.vllm`), and generates the shards s with s % workers == rank: the same
`distill.generation.sample.generate_traces` that runs on one machine, so shards, ids, sidecars and the ledger are
exactly the ones a local run writes. After the workers, one pass on the driver checks every shard and
generates any that a lost worker left (no engine starts when none is missing), so a run that loses a node
still finishes, and a rerun regenerates only what is missing.

The run directory must be on a filesystem every node sees (NFS, Lustre, a mounted bucket), as the code is:
on a cluster `PYTHONPATH` (or Ray's `runtime_env`) points the workers at the same checkout.

    distill run --config recipes/r1-distill-qwen2.5-math-7b.yaml --ray auto --ray-workers 8
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

import polars as pl
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.settings import PREFECT_API_URL
from pydantic import BaseModel, ConfigDict, Field

from distill.generation.sample import generate_traces
from flows.retry import RETRY_DELAYS, retry_on_transient

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]
# what a worker process needs from the driver's environment (offline mode, caches, vLLM-cpu settings)
_PASS_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "R1_DISTILL_CACHE", "VLLM_CPU_KVCACHE_SPACE",
             "VLLM_CACHE_ROOT", "VLLM_CPU_NUM_OF_RESERVED_CPU", "TOKENIZERS_PARALLELISM")


class RaySettings(BaseModel):
    """Where and how wide sampling runs on Ray. `address`: "auto" (the cluster this node belongs to, as
    `ray start` left it), "ray://host:10001" (Ray client), or None for a local instance started here."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = None
    workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float | None = Field(None, ge=0)  # default: tensor × pipeline parallel size on GPU nodes, 0 on CPU
    local_cpus: int | None = Field(None, ge=1)  # a local instance's CPUs (default: all)
    object_store_mb: int = Field(256, ge=64)  # a local instance's object store: shards travel as files, not objects

    def task_runner(self):
        from prefect_ray import RayTaskRunner  # optional (imports ray): only when sampling goes to Ray

        env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
        # workers import `distill` and `flows` from this checkout (a shared filesystem on a cluster)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        # one thread pool per worker of its own size: oversubscribed OpenMP pools made CPU work 10x slower here
        env["OMP_NUM_THREADS"] = str(max(1, int(self.cpus_per_worker)))
        api = prefect_api_url()
        if api:  # the workers report their task runs to this flow's server (else each would start one of its own)
            env["PREFECT_API_URL"] = api
        init: dict[str, Any] = {"runtime_env": {"env_vars": env}, "include_dashboard": False, "log_to_driver": True}
        if self.address is None:
            init |= {"num_cpus": self.local_cpus or os.cpu_count(), "object_store_memory": self.object_store_mb * 2**20}
        return RayTaskRunner(address=self.address, init_kwargs=init)


def prefect_api_url() -> str | None:
    """The API this process talks to: PREFECT_API_URL, or the temporary local server of this flow run."""
    if PREFECT_API_URL.value():
        return PREFECT_API_URL.value()
    ctx = FlowRunContext.get()
    client = getattr(ctx, "client", None) if ctx else None
    return str(client.api_url) if client is not None else None


def _bind_cpus(rank: int, cpus_per_worker: float) -> None:
    """vLLM-cpu pins its OpenMP threads (VLLM_CPU_OMP_THREADS_BIND). Ray does not pin tasks, so two engines on
    one node would both pin every core: give each rank its own cores instead, unless the user set a binding."""
    if "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return
    n = os.cpu_count() or 1
    c = max(1, min(int(cpus_per_worker), n))
    first = (rank * c) % n
    last = min(first + c, n) - 1
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = f"{first}-{last}" if last > first else str(first)


@task(name="sample-shards", retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_on_transient,
      persist_result=False, cache_policy=NO_CACHE)
def sample_shards(rank: int, world_size: int, prompts: pl.DataFrame, out_dir: str, engine_factory: Callable, kwargs: dict,
                  cpus_per_worker: float = 1) -> dict:
    """One Ray worker: its own engine, the shards rank, rank + world_size, ... (resumable like any pass)."""
    import torch  # heavy: only in a Ray worker, to see whether it has a GPU

    if not torch.cuda.is_available():
        _bind_cpus(rank, cpus_per_worker)
    t0 = time.perf_counter()
    stats = generate_traces(prompts, Path(out_dir), engine_factory=engine_factory, rank=rank, world_size=world_size, **kwargs)
    stats.pop("files", None)
    return stats | {"rank": rank, "host": socket.gethostname(), "pid": os.getpid(), "seconds": round(time.perf_counter() - t0, 2)}


def _map_shards(settings: RaySettings, gpus: float, prompts: pl.DataFrame, out_dir: str, engine_factory: Callable, kwargs: dict) -> list[dict]:
    """The workers, one Prefect task each on Ray; a worker that fails is reported, not raised."""
    from prefect_ray.context import remote_options  # optional (imports ray): only when sampling goes to Ray

    w = settings.workers
    with remote_options(num_cpus=settings.cpus_per_worker, num_gpus=gpus):
        futures = [
            sample_shards.with_options(task_run_name=f"sample-shards-{r}-of-{w}").submit(
                r, w, prompts, out_dir, engine_factory, kwargs, settings.cpus_per_worker)
            for r in range(w)
        ]
    workers = []
    for r, f in enumerate(futures):
        try:
            workers.append(f.result())
        except Exception as e:  # noqa: BLE001 - its shards are generated by the check pass
            log.warning("Ray worker %d failed (%s: %s); its missing shards are generated on the driver", r, type(e).__name__, e)
            workers.append({"rank": r, "error": f"{type(e).__name__}: {e}"})
    return workers


class RaySampler:
    """A sampling pass over Ray, for `distill.core.run.Run.sampler`. Each pass is a flow of its own
    (`distill-sample-ray`) on a RayTaskRunner; Ray is started (or joined) once, on the first pass, and left
    by `close()`, so adaptive rounds do not pay for a Ray start each."""

    def __init__(self, settings: RaySettings, devices_per_engine: int = 1):
        self.settings = settings
        self.devices_per_engine = devices_per_engine
        self._owns_ray = False

    def _start(self) -> None:
        import ray  # optional and slow: only when sampling goes to Ray

        if not ray.is_initialized():
            if self.settings.address is None:
                # Ray runs its workers at nice 15 by default: on a busy node they then starve behind every
                # other process (engines took minutes to start here). A cluster sets this at `ray start`.
                os.environ.setdefault("RAY_worker_niceness", "0")
            runner = self.settings.task_runner()
            ray.init(*((runner.address,) if runner.address and runner.address != "auto" else ()), **runner.init_kwargs)
            self._owns_ray = True
            log.info("Ray: %d nodes, resources %s", len([n for n in ray.nodes() if n.get("alive")]), ray.cluster_resources())

    def close(self) -> None:
        import ray  # optional and slow: only when sampling goes to Ray

        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    def _gpus(self) -> float:
        if self.settings.gpus_per_worker is not None:
            return self.settings.gpus_per_worker
        import ray  # optional and slow: only when sampling goes to Ray

        return float(self.devices_per_engine) if ray.cluster_resources().get("GPU", 0) > 0 else 0.0

    def __call__(self, prompts: pl.DataFrame, out_dir: Path, *, engine_factory: Callable, **kwargs) -> dict:
        self._start()
        w = self.settings.workers
        # the RayTaskRunner finds Ray running and joins it (it only shuts down an instance it started)
        gpus = self._gpus()

        def pass_over_ray(workers: int, shard_prefix: str) -> list[dict]:  # the data stays out of the flow's parameters
            return _map_shards(self.settings, gpus, prompts, str(out_dir), engine_factory, kwargs)

        the_flow = flow(pass_over_ray, name="distill-sample-ray", persist_result=False, task_runner=self.settings.task_runner(),
                        flow_run_name=f"sample-{kwargs.get('prefix', 'shard')}-on-{w}-ray-workers")
        workers = the_flow(w, kwargs.get("prefix", "shard"))
        # the check pass: verifies every shard's sidecar, fills the gaps, removes stale shards
        stats = generate_traces(prompts, out_dir, engine_factory=engine_factory, **kwargs)
        generated_here = stats["shards_generated"]
        for key in ("shards_generated", "completion_tokens", "prompt_tokens"):
            stats[key] += sum(x.get(key, 0) for x in workers)
        # workers run side by side: the pass took as long as its slowest worker, plus the check pass
        stats["engine_seconds"] = round(max([x.get("engine_seconds", 0.0) for x in workers] + [0.0]) + stats["engine_seconds"], 2)
        stats["tokens_per_second"] = round(stats["completion_tokens"] / stats["engine_seconds"], 1) if stats["engine_seconds"] else None
        stats["engine"] = stats["engine"] or next((x["engine"] for x in workers if x.get("engine")), None)
        stats["ray"] = {"workers": w, "shards_generated_by_driver": generated_here,
                        "per_worker": [{k: x[k] for k in ("rank", "host", "pid", "shards_generated", "engine_seconds", "seconds", "error") if k in x} for x in workers]}
        return stats
