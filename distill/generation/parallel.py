"""Data parallel generation on one machine: several worker processes, each with its own engine on its own
GPUs, each generating its share of the shards (`generate_traces(rank=, world_size=)`)."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Callable

import polars as pl

from distill.engines.base import Engine
from distill.generation.sample import generate_traces

log = logging.getLogger(__name__)


def _worker(rank: int, world: int, devices: str | None, kwargs: dict, factory: Callable[[], Engine]) -> None:
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
    generate_traces(**kwargs, engine_factory=factory, rank=rank, world_size=world)


def generate_traces_parallel(
    prompts: pl.DataFrame,
    out_dir: Path,
    *,
    workers: int,
    engine_factory: Callable[[], Engine],
    devices_per_worker: int = 1,
    **kwargs,
) -> dict:
    """Data parallel on one machine: `workers` processes, each with its own engine on its own GPUs
    (CUDA_VISIBLE_DEVICES), each generating shards rank, rank + workers, ...; then one pass here checks
    every shard and fills any a worker left (the engine is not started when none is missing).

    `engine_factory` must be picklable (a functools.partial of make_engine). Workers are spawned, not
    forked: CUDA and vLLM do not survive a fork."""
    if workers <= 1:
        return generate_traces(prompts, out_dir, engine_factory=engine_factory, **kwargs)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    pool = visible.split(",") if visible else None
    if pool is None:
        try:
            import torch  # heavy: only to count this machine's GPUs

            pool = [str(i) for i in range(torch.cuda.device_count())] or None
        except Exception:  # noqa: BLE001 - no torch/CUDA: workers share the CPU
            pool = None
    if pool is not None and len(pool) < workers * devices_per_worker:
        raise ValueError(f"{workers} workers × {devices_per_worker} GPUs need {workers * devices_per_worker} GPUs; {len(pool)} visible")
    ctx = mp.get_context("spawn")
    args = dict(prompts=prompts, out_dir=Path(out_dir), **kwargs)
    t0 = time.perf_counter()
    procs = []
    for r in range(workers):
        devices = ",".join(pool[r * devices_per_worker : (r + 1) * devices_per_worker]) if pool else None
        p = ctx.Process(target=_worker, args=(r, workers, devices, args, engine_factory), name=f"sample-worker-{r}")
        p.start()
        procs.append(p)
    for p in procs:
        p.join()
    failed = [p.name for p in procs if p.exitcode != 0]
    if failed:
        log.warning("workers %s failed; their missing shards are generated here", ", ".join(failed))
    wall = time.perf_counter() - t0
    stats = generate_traces(prompts, out_dir, engine_factory=engine_factory, **kwargs)
    stats["workers"] = workers
    stats["workers_wall_seconds"] = round(wall, 2)
    return stats
