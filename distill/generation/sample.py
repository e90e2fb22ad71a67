"""Rejection-sampling generation: n samples per prompt, in shards that survive `kill -9`, exactly once.

Prompts are split into fixed shards. A finished shard is two files, each written atomically (temporary
name, then rename): `shard-NNNNN.parquet` and its sidecar `shard-NNNNN.json` (rows, sha256 of the file,
and a digest of the sample ids it must hold). The sidecar is the commit record: it is written last, so a
shard counts as done only when its sidecar exists, names the expected ids and matches the parquet's
hash. A missing, truncated or corrupt shard is therefore regenerated and never read as data; on a rerun
only those shards are generated, and the engine is not even started when nothing is missing.

Sample ids are content-addressed (prompt id, sample index, model, sampling settings), so any rerun, on
any machine, names the same samples the same way. Extra samples for a prompt (adaptive sampling) take
the next sample indices and keep the first ones' ids.

Every generated shard and every engine start is appended to a ledger (`_ledger-<host>-<pid>.jsonl`); the
accounting (tokens, engine time, GPU-hours, cost) sums them, so work done before a crash is counted too.

Workers: `generate_traces(rank=r, world_size=w)` generates only shards s with s % w == r, so several
processes (one per GPU group, or per node on a shared filesystem) split a run without coordination;
`generate_traces_parallel` starts such workers on this machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import re
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import polars as pl

from distill.engines.engines import Engine, Request, SamplingParams, stream_batches
from distill.core.progress import progress
from distill.core.schema import content_id
from distill.core.storage import file_sha256, read_json, write_json, write_parquet

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
LEDGER_PREFIX = "_ledger-"  # _ledger-<host>-<pid>.jsonl
OFFSET = "sample_offset"  # optional prompt column: the sample index of the prompt's first new sample


def to_messages(prompt: str, system_prompt: str | None = None) -> list[dict]:
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": prompt}]


def sample_ids(prompt_id: str, n: int, model: str, params: SamplingParams, *, start: int = 0, context: dict | None = None) -> list[str]:
    """Ids of samples start..start+n-1 of a prompt. `context` adds what else shapes a sample (system prompt,
    chat template); None values are left out, so ids without context stay as they always were."""
    settings = params.as_dict() | {"n": None}  # adding samples later keeps the ids of the first ones
    settings |= {k: v for k, v in (context or {}).items() if v is not None}
    return [content_id(prompt_id, i, model, settings) for i in range(start, start + n)]


def _ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def sidecar_path(shard: Path) -> Path:
    return shard.with_suffix(".json")


def shard_status(path: Path, expected: list[str]) -> str:
    """"ok", "missing" or "corrupt" (unreadable sidecar, other ids, or a file whose hash or size differs)."""
    side = read_json(sidecar_path(path))
    if not path.is_file() and side is None:
        return "missing"
    if not side or not path.is_file():
        return "corrupt" if path.is_file() else "missing"  # parquet without its commit record: a crash between the two
    if side.get("ids_sha256") != _ids_digest(expected) or side.get("rows") != len(expected):
        return "corrupt"  # another prompt set or settings wrote here
    if path.stat().st_size != side.get("bytes") or file_sha256(path) != side.get("sha256"):
        return "corrupt"
    return "ok"


# --- the ledger ------------------------------------------------------------------------------------------------


def _ledger_path(out_dir: Path) -> Path:
    # one file per process: appends from several hosts to one file on a shared filesystem (NFS) can interleave
    return Path(out_dir) / f"{LEDGER_PREFIX}{socket.gethostname()}-{os.getpid()}.jsonl"


def _ledger_append(out_dir: Path, event: dict) -> None:
    """One JSON line, appended and fsynced."""
    line = json.dumps(event | {"time": round(time.time(), 3), "host": socket.gethostname(), "pid": os.getpid()}) + "\n"
    fd = os.open(_ledger_path(out_dir), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_ledger(out_dir: Path) -> list[dict]:
    """Every process's events, oldest first."""
    events = []
    for path in sorted(Path(out_dir).glob(f"{LEDGER_PREFIX}*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a kill: the work it describes is redone anyway
                continue
    return sorted(events, key=lambda e: e.get("time", 0))


def ledger_totals(out_dir: Path) -> dict:
    """Everything this directory's generation ever cost, reruns and regenerated shards included."""
    ev = read_ledger(out_dir)
    shards = [e for e in ev if e.get("event") == "shard"]
    starts = [e for e in ev if e.get("event") == "engine_start"]
    return {
        "completion_tokens": sum(e.get("completion_tokens", 0) for e in shards),
        "prompt_tokens": sum(e.get("prompt_tokens", 0) for e in shards),
        "samples": sum(e.get("rows", 0) for e in shards),
        "engine_seconds": round(sum(e.get("engine_seconds", 0.0) for e in shards), 2),
        "engine_start_seconds": round(sum(e.get("seconds", 0.0) for e in starts), 2),
        "engine_starts": len(starts),
        "shards_written": len(shards),
    }


def accounting(out_dir: Path, *, gpus: int, cost, samples: int, correct: int | None = None) -> dict:
    """Totals from the ledger, GPU-hours (engine start + generation, × GPUs per engine) and cost.

    `cost` is a recipe `CostConfig`: GPU-hours × gpu_hour_usd plus tokens × API prices."""
    t = ledger_totals(out_dir)
    gpu_hours = gpus * (t["engine_seconds"] + t["engine_start_seconds"]) / 3600
    usd = (
        gpu_hours * cost.gpu_hour_usd
        + t["prompt_tokens"] / 1e6 * cost.input_usd_per_mtok
        + t["completion_tokens"] / 1e6 * cost.output_usd_per_mtok
    )
    out = {
        "total_completion_tokens": t["completion_tokens"],
        "total_prompt_tokens": t["prompt_tokens"],
        "total_engine_seconds": t["engine_seconds"],
        "total_engine_start_seconds": t["engine_start_seconds"],
        "engine_starts": t["engine_starts"],
        "gpus": gpus,
        "gpu_hours": round(gpu_hours, 6),
        "cost_usd": round(usd, 6),
        "cost_per_sample_usd": round(usd / samples, 8) if samples else None,
    }
    if correct is not None:
        out["cost_per_correct_sample_usd"] = round(usd / correct, 8) if correct else None
    return out


# --- one pass over the prompts -----------------------------------------------------------------------------------


@dataclass
class _Shard:
    index: int
    path: Path
    prompts: pl.DataFrame
    expected: list[str]


def _plan(prompts: pl.DataFrame, out_dir: Path, prefix: str, shard_size: int, n: int, model_label: str, params: SamplingParams, context: dict) -> list[_Shard]:
    shards = []
    offsets = prompts[OFFSET].to_list() if OFFSET in prompts.columns else [0] * prompts.height
    for s, start in enumerate(range(0, prompts.height, shard_size)):
        part = prompts.slice(start, shard_size)
        expected = [
            i
            for pid, off in zip(part["prompt_id"], offsets[start : start + shard_size])
            for i in sample_ids(pid, n, model_label, params, start=off, context=context)
        ]
        shards.append(_Shard(s, out_dir / f"{prefix}-{s:05d}.parquet", part, expected))
    return shards


def _assemble(shard: _Shard, results, params: SamplingParams, model_label: str, context: dict) -> tuple[pl.DataFrame, dict]:
    offsets = dict(zip(shard.prompts["prompt_id"], shard.prompts[OFFSET] if OFFSET in shard.prompts.columns else [0] * shard.prompts.height))
    rows = []
    prompt_tokens = 0
    for res in results:
        off = offsets[res.request_id]
        ids = sample_ids(res.request_id, params.n, model_label, params, start=off, context=context)
        prompt_tokens += res.prompt_tokens
        for i, c in enumerate(res.completions):
            rows.append(
                {
                    "id": ids[i],
                    "prompt_id": res.request_id,
                    "sample_index": off + i,
                    "model": model_label,
                    "completion": c.text,
                    "finish_reason": c.finish_reason,
                    "prompt_tokens": res.prompt_tokens,
                    "completion_tokens": c.completion_tokens,
                }
            )
    gen = pl.DataFrame(rows, schema=TRACE_SCHEMA)
    extra = [c for c in shard.prompts.columns if c not in ("prompt_id", OFFSET)]
    table = shard.prompts.select(["prompt_id", *extra]).join(gen, on="prompt_id", how="inner").select(list(TRACE_SCHEMA) + extra)
    order = {k: n for n, k in enumerate(shard.expected)}
    table = table.sort(pl.col("id").replace_strict(order, default=len(order), return_dtype=pl.Int64))
    if table["id"].to_list() != shard.expected:
        raise RuntimeError(f"engine returned {table.height} samples for {shard.path.name}, expected {len(shard.expected)}")
    return table, {"completion_tokens": int(gen["completion_tokens"].sum()), "prompt_tokens": prompt_tokens}


def _write_shard(shard: _Shard, table: pl.DataFrame) -> dict:
    entry = write_parquet(table, shard.path)
    side = {
        "file": shard.path.name,
        "rows": table.height,
        "sha256": entry["sha256"],
        "bytes": shard.path.stat().st_size,
        "ids_sha256": _ids_digest(shard.expected),
    }
    write_json(sidecar_path(shard.path), side)  # the commit record, last
    return entry


def _cleanup(out_dir: Path, prefix: str, keep: int) -> None:
    """Drop this prefix's shards beyond `keep` (an earlier, larger prompt set) and temporaries of killed writers."""
    pat = re.compile(rf"^{re.escape(prefix)}-(\d{{5}})\.(parquet|json)$")
    for p in out_dir.iterdir():
        m = pat.match(p.name)
        if m and int(m.group(1)) >= keep:
            p.unlink(missing_ok=True)
        elif p.name.startswith(f".{prefix}-") and p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)


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
    shards = _plan(prompts, out_dir, prefix, shard_size, params.n, model_label, params, context)
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
            _ledger_append(out_dir, {"event": "engine_start", "engine": stats["engine"], "seconds": round(started, 3)})
        try:
            batches = (
                [Request(pid, to_messages(p, system_prompt), off) for pid, p, off in _requests_of(s)]
                for s in todo
            )
            t0 = last = time.perf_counter()
            bar = progress(sum(len(s.expected) for s in todo), desc or f"sample {out_dir.name}", unit="samples")
            for b, results in stream_batches(engine, batches, params):
                shard = todo[b]
                table, tok = _assemble(shard, results, params, model_label, context)
                entry = _write_shard(shard, table)
                now = time.perf_counter()
                # wall time since the previous shard finished: with streaming engines shards overlap,
                # so this splits the pass's engine time over the shards without counting any twice
                _ledger_append(out_dir, {"event": "shard", "file": shard.path.name, "rows": table.height, "sha256": entry["sha256"],
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
        _cleanup(out_dir, prefix, len(shards))
    secs = stats["engine_seconds"]
    stats["engine_seconds"] = round(secs, 2)
    stats["tokens_per_second"] = round(stats["completion_tokens"] / secs, 1) if secs else None
    stats["files"] = {s.path.name: {"rows": len(s.expected), "sha256": (read_json(sidecar_path(s.path)) or {}).get("sha256")} for s in mine}
    return stats


def _requests_of(s: _Shard):
    offsets = s.prompts[OFFSET].to_list() if OFFSET in s.prompts.columns else [0] * s.prompts.height
    return zip(s.prompts["prompt_id"].to_list(), s.prompts["prompt"].to_list(), offsets)


# --- several workers on this machine -------------------------------------------------------------------------------


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
            import torch

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


# --- adaptive sampling ---------------------------------------------------------------------------------------------


class _Borrowed:
    """A pass's view of a shared engine: closing it ends the pass, not the engine."""

    def __init__(self, engine: Engine, reused: bool = True):
        self._engine, self.name, self.version = engine, engine.name, getattr(engine, "version", "")
        self.reused = reused  # False on the call that started it: only that one's start time is real
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


def read_traces(out_dir: Path, prefixes: list[str] | None = None) -> pl.DataFrame:
    files = sorted(p for p in Path(out_dir).glob("*.parquet") if not p.name.startswith(".") and (prefixes is None or p.name.split("-")[0] in prefixes))
    return pl.concat([pl.read_parquet(p) for p in files], how="diagonal_relaxed") if files else pl.DataFrame()


def generate_adaptive(
    prompts: pl.DataFrame,
    out_dir: Path,
    *,
    params: SamplingParams,
    generate: Callable[..., dict],
    verify: Callable[[pl.DataFrame], pl.DataFrame],
    adaptive,
    keep_k: int | None = None,
) -> dict:
    """n samples per prompt, then rounds of `adaptive.samples_per_round` more for prompts whose pass rate
    is low but not zero, until the per-prompt budget (`distill.generation.rejection.adaptive_plan` decides).

    `generate(prompts, out_dir, params=, prefix=)` is one pass (generate_traces with its engine bound);
    `verify(df)` adds `correct`. Round r's shards are `round{r:02d}-NNNNN.parquet`. Which prompts a round
    samples depends only on what earlier rounds wrote, so a rerun after a kill plans the same rounds."""
    from distill.generation.rejection import adaptive_plan

    stats = generate(prompts, out_dir, params=params, prefix="shard")
    rounds: list[dict] = []
    verdicts = pl.DataFrame(schema={"id": pl.Utf8, "correct": pl.Boolean})
    prefixes = ["shard"]
    r = 0
    while r <= adaptive.max_samples_per_prompt:  # each round adds >= 1 sample to every prompt it picks
        traces = read_traces(out_dir, prefixes)
        new = traces.join(verdicts.select("id"), on="id", how="anti")
        if new.height:  # verify each sample once across rounds
            verdicts = pl.concat([verdicts, verify(new).select("id", pl.col("correct").cast(pl.Boolean))])
        df = traces.join(verdicts, on="id", how="left")
        plan = adaptive_plan(df, adaptive, keep_k)
        if plan.height == 0:
            break
        r += 1
        # prompts in a round normally all have the same number of samples so far, hence the same `extra`;
        # if not, each group gets its own shard series
        groups = plan.partition_by("extra", maintain_order=True)
        for j, group in enumerate(groups):
            extra = int(group["extra"][0])
            prefix = f"round{r:02d}" if len(groups) == 1 else f"round{r:02d}g{j}"
            todo = prompts.join(group.select("prompt_id", OFFSET), on="prompt_id", how="inner", maintain_order="left")
            st = generate(todo, out_dir, params=replace(params, n=extra), prefix=prefix)
            rounds.append({"round": r, "prompts": todo.height, "samples": st["rows"], "shards_generated": st["shards_generated"],
                           "completion_tokens": st["completion_tokens"], "engine_seconds": st["engine_seconds"]})
            for k in ("completion_tokens", "prompt_tokens", "engine_seconds", "shards_generated", "shards_corrupt"):
                stats[k] = round(stats[k] + st[k], 2) if isinstance(stats[k], float) else stats[k] + st[k]
            stats["rows"] += st["rows"]
            stats["files"] |= st["files"]
            stats["engine"] = stats["engine"] or st["engine"]
            prefixes.append(prefix)
    # rounds a previous run planned beyond this one's (its earlier shards were regenerated differently)
    for p in Path(out_dir).iterdir():
        if p.name.lstrip(".").startswith("round") and p.name.lstrip(".").split("-")[0] not in prefixes:
            p.unlink(missing_ok=True)
    secs = stats["engine_seconds"]
    stats["tokens_per_second"] = round(stats["completion_tokens"] / secs, 1) if secs else None
    stats["adaptive"] = {
        "rounds": rounds,
        "extra_samples": sum(r["samples"] for r in rounds),
        "correct_samples": int(df["correct"].fill_null(False).sum()) if df.height else 0,
    }
    return stats
