"""Sampling shards mapped over a Ray cluster through prefect-ray's `RayTaskRunner`.

Each Ray worker is one Prefect task holding one vLLM engine (tensor × pipeline parallel GPUs from the
recipe's `sampling.vllm`), and generates the shards s with s % workers == rank: the same
`distill.generation.sample.generate_traces` that runs on one machine, so shards, ids, sidecars and the ledger are
exactly the ones a local run writes. After the workers, one pass on the driver checks every shard and
generates any that a lost worker left (no engine starts when none is missing), so a run that loses a node
still finishes, and a rerun regenerates only what is missing.

An engine larger than one node (`sampling.vllm.distributed_executor_backend: ray`, e.g. DeepSeek-R1 at TP 8 x
PP 2 on 8-GPU nodes) cannot be one Ray task: a task lives on one node. Each such worker gets a placement
group of tensor x pipeline parallel {GPU: 1, CPU: 1} bundles packed onto as few nodes as possible (8 + 8),
its task runs in bundle 0 holding no GPU itself, and vLLM's Ray executor finds the group
(`ray.util.get_current_placement_group`) and puts one worker on each bundle: TP within a node, PP across.
vLLM hands a placement group to its engine-core subprocess only from a Ray actor (vllm/engine/arg_utils.py),
so such a worker runs the engine core in its own process (VLLM_ENABLE_V1_MULTIPROCESSING=0).

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

from distill.config.sampling import VLLMSettings
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
    placement_timeout_s: float = Field(600, gt=0)  # a multi-node engine's GPUs must be free within this
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


class Placement(BaseModel):
    """Where one sampling worker's engine runs: its task holds `num_gpus`; a multi-node engine's task holds
    none and runs in a placement group of `bundles` (strategy PACK: as few nodes as possible)."""

    multi_node: bool
    num_gpus: float
    bundles: list[dict[str, float]] = Field(default_factory=list)
    strategy: str = "PACK"
    nodes: int = 1


def engine_placement(vllm: VLLMSettings | None, *, devices_per_engine: int = 1, device: str = "GPU",
                     gpus_per_worker: float | None = None) -> Placement:
    """The placement of one worker: `device` is "GPU" on a GPU cluster ("CPU" stands in for it on CPU)."""
    if vllm is not None and vllm.distributed_executor_backend == "ray" and vllm.nodes_per_engine > 1:
        bundles = [{device: 1.0} | ({"CPU": 1.0} if device != "CPU" else {}) for _ in range(vllm.engine_gpus)]
        return Placement(multi_node=True, num_gpus=0.0, bundles=bundles, nodes=vllm.nodes_per_engine)
    if gpus_per_worker is not None:
        return Placement(multi_node=False, num_gpus=gpus_per_worker)
    n = vllm.engine_gpus if vllm is not None else devices_per_engine
    return Placement(multi_node=False, num_gpus=float(n) if device == "GPU" else 0.0)


def placement_groups(placement: Placement, workers: int, timeout_s: float) -> list:
    """One ready placement group per worker (multi-node engines), or a clear error naming what is missing."""
    import ray  # optional and slow: only when sampling goes to Ray
    from ray.util.placement_group import placement_group, remove_placement_group  # same

    groups = [placement_group(placement.bundles, strategy=placement.strategy, name=f"distill-sample-engine-{r}") for r in range(workers)]
    for r, pg in enumerate(groups):
        if not pg.wait(timeout_s):
            for g in groups:
                remove_placement_group(g)
            need = {k: sum(b.get(k, 0) for b in placement.bundles) for k in placement.bundles[0]}
            raise RuntimeError(f"Ray could not place sampling engine {r} of {workers} within {timeout_s:.0f} s: each needs {need} "
                               f"over {placement.nodes} nodes; the cluster has {ray.cluster_resources()} "
                               "(sampling.vllm tensor/pipeline parallel sizes, --ray-workers)")
    return groups


def worker_options(placement: Placement, cpus: float, group=None) -> dict[str, Any]:
    """Ray remote options of one worker task: its GPUs, or bundle 0 of its engine's placement group."""
    if group is None:
        return {"num_cpus": cpus, "num_gpus": placement.num_gpus}
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy  # optional: only on Ray

    strategy = PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=0,
                                                placement_group_capture_child_tasks=True)
    return {"num_cpus": min(cpus, 1.0), "num_gpus": 0, "scheduling_strategy": strategy}


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
                  cpus_per_worker: float = 1, multi_node: bool = False) -> dict:
    """One Ray worker: its own engine, the shards rank, rank + world_size, ... (resumable like any pass)."""
    import torch  # heavy: only in a Ray worker, to see whether it has a GPU

    if multi_node:  # the engine core in this process, where vLLM finds the task's placement group
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    elif not torch.cuda.is_available():
        _bind_cpus(rank, cpus_per_worker)
    t0 = time.perf_counter()
    stats = generate_traces(prompts, Path(out_dir), engine_factory=engine_factory, rank=rank, world_size=world_size, **kwargs)
    stats.pop("files", None)
    return stats | {"rank": rank, "host": socket.gethostname(), "pid": os.getpid(), "seconds": round(time.perf_counter() - t0, 2)}


def _map_shards(settings: RaySettings, placement: Placement, prompts: pl.DataFrame, out_dir: str, engine_factory: Callable,
                kwargs: dict) -> list[dict]:
    """The workers, one Prefect task each on Ray; a worker that fails is reported, not raised."""
    from prefect_ray.context import remote_options  # optional (imports ray): only when sampling goes to Ray
    from ray.util.placement_group import remove_placement_group  # same

    w = settings.workers
    groups = placement_groups(placement, w, settings.placement_timeout_s) if placement.multi_node else [None] * w
    try:
        futures = []
        for r in range(w):
            with remote_options(**worker_options(placement, settings.cpus_per_worker, groups[r])):
                futures.append(sample_shards.with_options(task_run_name=f"sample-shards-{r}-of-{w}").submit(
                    r, w, prompts, out_dir, engine_factory, kwargs, settings.cpus_per_worker, placement.multi_node))
        workers = []
        for r, f in enumerate(futures):
            try:
                workers.append(f.result())
            except Exception as e:  # noqa: BLE001 - its shards are generated by the check pass
                log.warning("Ray worker %d failed (%s: %s); its missing shards are generated on the driver", r, type(e).__name__, e)
                workers.append({"rank": r, "error": f"{type(e).__name__}: {e}"})
        return workers
    finally:
        for g in groups:
            if g is not None:
                remove_placement_group(g)


class RaySampler:
    """A sampling pass over Ray, for `distill.core.run.Run.sampler`. Each pass is a flow of its own
    (`distill-sample-ray`) on a RayTaskRunner; Ray is started (or joined) once, on the first pass, and left
    by `close()`, so adaptive rounds do not pay for a Ray start each."""

    def __init__(self, settings: RaySettings, devices_per_engine: int = 1, vllm: VLLMSettings | None = None):
        self.settings = settings
        self.devices_per_engine = vllm.engine_gpus if vllm is not None else devices_per_engine
        self.vllm = vllm  # the sampling engine's settings: a multi-node engine gets a placement group per worker
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

    def placement(self) -> Placement:
        import ray  # optional and slow: only when sampling goes to Ray

        device = "GPU" if ray.cluster_resources().get("GPU", 0) > 0 else "CPU"
        return engine_placement(self.vllm, devices_per_engine=self.devices_per_engine, device=device,
                                gpus_per_worker=self.settings.gpus_per_worker)

    def __call__(self, prompts: pl.DataFrame, out_dir: Path, *, engine_factory: Callable, **kwargs) -> dict:
        self._start()
        w = self.settings.workers
        # the RayTaskRunner finds Ray running and joins it (it only shuts down an instance it started)
        placement = self.placement()

        def pass_over_ray(workers: int, shard_prefix: str) -> list[dict]:  # the data stays out of the flow's parameters
            return _map_shards(self.settings, placement, prompts, str(out_dir), engine_factory, kwargs)

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
        stats["ray"] = {"workers": w, "shards_generated_by_driver": generated_here, "placement": placement.model_dump(),
                        "per_worker": [{k: x[k] for k in ("rank", "host", "pid", "shards_generated", "engine_seconds", "seconds", "error") if k in x} for x in workers]}
        return stats
