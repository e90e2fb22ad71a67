"""Shards of generated samples: content-addressed sample ids, the sidecar that commits a shard, and the
steps one shard goes through (planned from the prompts, assembled from the engine's results, written).

A finished shard is two files, each written atomically (temporary name, then rename): `shard-NNNNN.parquet`
and its sidecar `shard-NNNNN.json` (rows, sha256 of the file, and a digest of the sample ids it must hold).
The sidecar is the commit record: it is written last, so a shard counts as done only when its sidecar
exists, names the expected ids and matches the parquet's hash.

Sample ids are content-addressed (prompt id, sample index, model, sampling settings), so any rerun, on
any machine, names the same samples the same way. Extra samples for a prompt (adaptive sampling) take
the next sample indices and keep the first ones' ids.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from distill.core.schema import PREFILL, content_id
from distill.core.storage import file_sha256, read_json, write_json, write_parquet
from distill.engines.base import Request, SamplingParams

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


def ids_digest(ids: list[str]) -> str:
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
    if side.get("ids_sha256") != ids_digest(expected) or side.get("rows") != len(expected):
        return "corrupt"  # another prompt set or settings wrote here
    if path.stat().st_size != side.get("bytes") or file_sha256(path) != side.get("sha256"):
        return "corrupt"
    return "ok"


def _offsets(prompts: pl.DataFrame) -> list[int]:
    return prompts[OFFSET].to_list() if OFFSET in prompts.columns else [0] * prompts.height


@dataclass
class Shard:
    index: int
    path: Path
    prompts: pl.DataFrame
    expected: list[str]

    def requests(self, system_prompt: str | None) -> list[Request]:
        """One engine request per prompt, its id the prompt id."""
        rows = zip(self.prompts["prompt_id"].to_list(), self.prompts["prompt"].to_list(), _offsets(self.prompts))
        return [Request(pid, to_messages(p, system_prompt), off) for pid, p, off in rows]


def plan_shards(prompts: pl.DataFrame, out_dir: Path, prefix: str, shard_size: int, n: int, model_label: str,
                params: SamplingParams, context: dict) -> list[Shard]:
    """The shards `prompts` fall into, each with the sample ids it must hold."""
    shards = []
    offsets = _offsets(prompts)
    for s, start in enumerate(range(0, prompts.height, shard_size)):
        part = prompts.slice(start, shard_size)
        expected = [
            i
            for pid, off in zip(part["prompt_id"], offsets[start : start + shard_size])
            for i in sample_ids(pid, n, model_label, params, start=off, context=context)
        ]
        shards.append(Shard(s, out_dir / f"{prefix}-{s:05d}.parquet", part, expected))
    return shards


def assemble_shard(shard: Shard, results, params: SamplingParams, model_label: str, context: dict,
                   prefill: str = "") -> tuple[pl.DataFrame, dict]:
    """The shard's table (trace columns, then the prompts' other columns) in expected-id order, and its tokens.

    `prefill`: what the rendered prompt ended with inside the model's turn (R1's "<think>\\n"); when not
    empty it is kept in a `prefill` column after the trace columns, so later stages see the whole turn."""
    offsets = dict(zip(shard.prompts["prompt_id"], _offsets(shard.prompts)))
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
    if prefill:
        table = table.insert_column(len(TRACE_SCHEMA), pl.Series(PREFILL, [prefill] * table.height, dtype=pl.Utf8))
    order = {k: n for n, k in enumerate(shard.expected)}
    table = table.sort(pl.col("id").replace_strict(order, default=len(order), return_dtype=pl.Int64))
    if table["id"].to_list() != shard.expected:
        raise RuntimeError(f"engine returned {table.height} samples for {shard.path.name}, expected {len(shard.expected)}")
    return table, {"completion_tokens": int(gen["completion_tokens"].sum()), "prompt_tokens": prompt_tokens}


def write_shard(shard: Shard, table: pl.DataFrame) -> dict:
    """The parquet, then its sidecar (the commit record)."""
    entry = write_parquet(table, shard.path)
    side = {
        "file": shard.path.name,
        "rows": table.height,
        "sha256": entry["sha256"],
        "bytes": shard.path.stat().st_size,
        "ids_sha256": ids_digest(shard.expected),
    }
    write_json(sidecar_path(shard.path), side)  # the commit record, last
    return entry


def cleanup_shards(out_dir: Path, prefix: str, keep: int) -> None:
    """Drop this prefix's shards beyond `keep` (an earlier, larger prompt set) and temporaries of killed writers."""
    pat = re.compile(rf"^{re.escape(prefix)}-(\d{{5}})\.(parquet|json)$")
    for p in out_dir.iterdir():
        m = pat.match(p.name)
        if m and int(m.group(1)) >= keep:
            p.unlink(missing_ok=True)
        elif p.name.startswith(f".{prefix}-") and p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)


def read_traces(out_dir: Path, prefixes: list[str] | None = None) -> pl.DataFrame:
    """Every shard's rows in `out_dir` (of the given prefixes), in file order."""
    files = sorted(p for p in Path(out_dir).glob("*.parquet") if not p.name.startswith(".") and (prefixes is None or p.name.split("-")[0] in prefixes))
    return pl.concat([pl.read_parquet(p) for p in files], how="diagonal_relaxed") if files else pl.DataFrame()
