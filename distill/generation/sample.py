"""Rejection-sampling generation: n samples per prompt, in shards that survive `kill -9`, exactly once.

Prompts are split into fixed shards (distill.generation.shards): a shard counts as done only when its
sidecar, the commit record written last, names the expected ids and matches the parquet's hash. A
missing, truncated or corrupt shard is therefore regenerated and never read as data; on a rerun only those
shards are generated, and the engine is not even started when nothing is missing. Sample ids are
content-addressed, so any rerun, on any machine, names the same samples the same way.

Every generated shard and every engine start is appended to a ledger (distill.generation.ledger), so the
accounting counts work done before a crash too.

Workers: `generate_traces(rank=r, world_size=w)` generates only shards s with s % w == r, so several
processes (one per GPU group, or per node on a shared filesystem) split a run without coordination;
`distill.generation.parallel.generate_traces_parallel` starts such workers on this machine, and
`distill.generation.adaptive.generate_adaptive` adds rounds of samples where pass rates are low.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import polars as pl

from distill.core.progress import progress
from distill.core.schema import generation_prefill
from distill.core.storage import read_json
from distill.engines.base import Engine, SamplingParams, stream_batches
from distill.generation.ledger import ledger_append
from distill.generation.shards import assemble_shard, cleanup_shards, plan_shards, shard_status, sidecar_path, write_shard

log = logging.getLogger(__name__)


def generate_traces(
    prompts: pl.DataFrame,
    out_dir: Path,
    *,
    model_label: str,
    params: SamplingParams,
    engine_factory: Callable[[], Engine],
    shard_size: int = 64,
    system_prompt: str | None = None,
    id_context: dict | None = None,
    prefix: str = "shard",
    rank: int = 0,
    world_size: int = 1,
    desc: str | None = None,
) -> dict:
    """Generate every missing shard (of this worker's share); return this pass's accounting.

    `prompts` needs `prompt_id` and `prompt`; its other columns are carried into the traces. An optional
    `sample_offset` column gives each prompt's first sample index (default 0). Only a sole worker
    (world_size == 1) removes stale shards and temporaries, so concurrent workers never race on them.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    context = {"system_prompt": system_prompt} | (id_context or {})
    shards = plan_shards(prompts, out_dir, prefix, shard_size, params.n, model_label, params, context)
    mine = [s for s in shards if s.index % world_size == rank]
    stats: dict[str, Any] = {
        "engine": None,
        "shards": len(shards),
        "shards_generated": 0,
        "shards_corrupt": 0,
        "rows": sum(len(s.expected) for s in shards),
        "completion_tokens": 0,
        "prompt_tokens": 0,
        "engine_seconds": 0.0,
        "engine_start_seconds": 0.0,
    }
    todo = []
    for s in mine:
        status = shard_status(s.path, s.expected)
        if status == "ok":
            continue
        if status == "corrupt":
            log.warning("%s is truncated, corrupt or stale; regenerating it", s.path.name)
            stats["shards_corrupt"] += 1
        sidecar_path(s.path).unlink(missing_ok=True)  # no commit record while the shard is rewritten
        todo.append(s)
    if todo:
        t0 = time.perf_counter()
        engine = engine_factory()
        started = time.perf_counter() - t0
        stats["engine_start_seconds"] = round(started, 2)
        stats["engine"] = f"{engine.name} {getattr(engine, 'version', '')}".strip()
        if not getattr(engine, "reused", False):  # a shared engine already running was started once
            ledger_append(out_dir, {"event": "engine_start", "engine": stats["engine"], "seconds": round(started, 3)})
        prefill = engine_prefill(engine)
        if prefill:  # R1's template opens the think block in the prompt: the traces keep it (column `prefill`)
            stats["prefill"] = prefill
        try:
            batches = (s.requests(system_prompt) for s in todo)
            t0 = last = time.perf_counter()
            bar = progress(sum(len(s.expected) for s in todo), desc or f"sample {out_dir.name}", unit="samples")
            for b, results in stream_batches(engine, batches, params):
                shard = todo[b]
                table, tok = assemble_shard(shard, results, params, model_label, context, prefill)
                entry = write_shard(shard, table)
                now = time.perf_counter()
                # wall time since the previous shard finished: with streaming engines shards overlap,
                # so this splits the pass's engine time over the shards without counting any twice
                ledger_append(out_dir, {"event": "shard", "file": shard.path.name, "rows": table.height, "sha256": entry["sha256"],
                                         "engine_seconds": round(now - last, 4), **tok})
                last = now
                stats["shards_generated"] += 1
                stats["completion_tokens"] += tok["completion_tokens"]
                stats["prompt_tokens"] += tok["prompt_tokens"]
                log.info("%s: %d samples", shard.path.name, table.height)
                bar.update(table.height)
            bar.close()
            stats["engine_seconds"] = time.perf_counter() - t0
        finally:
            engine.close()
    if world_size == 1:
        cleanup_shards(out_dir, prefix, len(shards))
    secs = stats["engine_seconds"]
    stats["engine_seconds"] = round(secs, 2)
    stats["tokens_per_second"] = round(stats["completion_tokens"] / secs, 1) if secs else None
    stats["files"] = {s.path.name: {"rows": len(s.expected), "sha256": (read_json(sidecar_path(s.path)) or {}).get("sha256")} for s in mine}
    return stats


def engine_prefill(engine: Engine) -> str:
    """The text the engine's rendered prompts end with inside the model's turn ("<think>\\n" for R1's
    template), read from its tokenizer and chat template; "" when it renders none itself (an HTTP
    engine's `chat` endpoint: the server renders)."""
    return generation_prefill(getattr(engine, "tokenizer", None), getattr(engine, "chat_template", None))


class _Borrowed:
    """A pass's view of a shared engine: closing it ends the pass, not the engine."""

    def __init__(self, engine: Engine, reused: bool = True):
        self._engine, self.name, self.version = engine, engine.name, getattr(engine, "version", "")
        self.reused = reused  # False on the call that started it: only that one's start time is real
        self.tokenizer, self.chat_template = getattr(engine, "tokenizer", None), getattr(engine, "chat_template", None)
        if hasattr(engine, "stream"):
            self.stream = engine.stream

    def generate(self, requests, params):
        return self._engine.generate(requests, params)

    def close(self) -> None:
        pass


class SharedEngine:
    """Starts the engine on first use and keeps it across passes (adaptive rounds); `shutdown` ends it."""

    def __init__(self, factory: Callable[[], Engine]):
        self.factory, self.engine = factory, None

    def __call__(self) -> Engine:
        if self.engine is None:
            self.engine = self.factory()
            return _Borrowed(self.engine, reused=False)
        return _Borrowed(self.engine)

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
