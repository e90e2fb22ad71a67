"""Rejection-sampling generation: n samples per prompt, in shards that survive `kill -9`.

Prompts are split into fixed shards; each finished shard is written atomically as
`shard-NNNNN.parquet`. On a rerun a shard is skipped when its file reads back with exactly the
expected sample ids (content-addressed: prompt id, sample index, model, sampling settings), so only
missing or broken shards are generated, and the engine is not even started when nothing is missing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import polars as pl

from distill.engines import Engine, Request, SamplingParams
from distill.schema import content_id
from distill.storage import write_parquet

log = logging.getLogger(__name__)

TRACE_SCHEMA = {
    "id": pl.Utf8,
    "prompt_id": pl.Utf8,
    "sample_index": pl.Int64,
    "model": pl.Utf8,
    "completion": pl.Utf8,
    "finish_reason": pl.Utf8,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
}


def to_messages(prompt: str, system_prompt: str | None = None) -> list[dict]:
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": prompt}]


def sample_ids(prompt_id: str, n: int, model: str, params: SamplingParams) -> list[str]:
    settings = params.as_dict() | {"n": None}  # adding samples later keeps the ids of the first ones
    return [content_id(prompt_id, i, model, settings) for i in range(n)]


def _shard_ok(path: Path, expected: list[str]) -> bool:
    if not path.is_file():
        return False
    try:
        got = pl.read_parquet(path, columns=["id"])["id"].to_list()
    except Exception as e:  # truncated or corrupt file: regenerate, never read as data
        log.warning("shard %s unreadable (%s); regenerating", path.name, e)
        return False
    return got == expected


def generate_traces(
    prompts: pl.DataFrame,
    out_dir: Path,
    *,
    model_label: str,
    params: SamplingParams,
    engine_factory: Callable[[], Engine],
    shard_size: int = 64,
    system_prompt: str | None = None,
) -> dict:
    """Generate every missing shard; return accounting (rows, tokens, seconds, shards generated)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine: Engine | None = None
    stats = {"shards": 0, "shards_generated": 0, "rows": 0, "completion_tokens": 0, "engine_seconds": 0.0, "engine": None}
    try:
        for s, start in enumerate(range(0, prompts.height, shard_size)):
            shard = prompts.slice(start, shard_size)
            path = out_dir / f"shard-{s:05d}.parquet"
            expected = [i for pid in shard["prompt_id"] for i in sample_ids(pid, params.n, model_label, params)]
            stats["shards"] += 1
            stats["rows"] += len(expected)
            if _shard_ok(path, expected):
                continue
            if engine is None:
                t0 = time.perf_counter()
                engine = engine_factory()
                stats["engine_start_seconds"] = round(time.perf_counter() - t0, 2)
                stats["engine"] = f"{engine.name} {getattr(engine, 'version', '')}".strip()
            requests = [Request(pid, to_messages(p, system_prompt)) for pid, p in zip(shard["prompt_id"], shard["prompt"])]
            t0 = time.perf_counter()
            results = engine.generate(requests, params)
            stats["engine_seconds"] += time.perf_counter() - t0
            rows = []
            for res in results:
                ids = sample_ids(res.request_id, params.n, model_label, params)
                for i, c in enumerate(res.completions):
                    rows.append(
                        {
                            "id": ids[i],
                            "prompt_id": res.request_id,
                            "sample_index": i,
                            "model": model_label,
                            "completion": c.text,
                            "finish_reason": c.finish_reason,
                            "prompt_tokens": res.prompt_tokens,
                            "completion_tokens": c.completion_tokens,
                        }
                    )
            gen = pl.DataFrame(rows, schema=TRACE_SCHEMA)
            table = shard.join(gen, on="prompt_id", how="inner").select(list(TRACE_SCHEMA) + [c for c in shard.columns if c != "prompt_id"])
            table = table.sort(pl.col("id").replace_strict({k: n for n, k in enumerate(expected)}, return_dtype=pl.Int64))
            if table["id"].to_list() != expected:
                raise RuntimeError(f"engine returned {table.height} samples for shard {s}, expected {len(expected)}")
            write_parquet(table, path)
            stats["shards_generated"] += 1
            stats["completion_tokens"] += int(gen["completion_tokens"].sum())
            log.info("shard %d: %d samples", s, table.height)
    finally:
        if engine is not None:
            engine.close()
    # drop shards of an earlier, larger prompt set so the directory holds exactly this run's samples
    for extra in sorted(out_dir.glob("shard-*.parquet"))[stats["shards"] :]:
        extra.unlink()
    secs = stats["engine_seconds"]
    stats["engine_seconds"] = round(secs, 2)
    stats["tokens_per_second"] = round(stats["completion_tokens"] / secs, 1) if secs else None
    return stats
