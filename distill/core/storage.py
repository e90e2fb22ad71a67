"""Atomic files and stage manifests: what makes `kill -9` safe and reruns cheap.

A file is written to a temporary name in its directory and renamed into place, so a reader sees either
nothing or the whole file. A stage is done when `<stage dir>/_manifest.json` exists and its fingerprint
equals the one computed from the stage's settings and its inputs' fingerprints; a changed setting changes
the fingerprint, which reruns that stage and, through the chain, every stage after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import polars as pl

MANIFEST = "_manifest.json"
# Bump when a stage's output format or semantics change, so old run directories are recomputed.
FORMAT_VERSION = 1


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Like atomic_path for a directory (a model checkpoint): build it aside, then swap it in."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False, default=str) + "\n")


def write_parquet(df: pl.DataFrame, path: Path) -> dict[str, Any]:
    """Write atomically; return the manifest entry (rows, sha256)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)
    return {"rows": df.height, "sha256": file_sha256(path)}


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as e:  # truncated, corrupt, not parquet at all
        raise ValueError(f"{path}: not a readable parquet file ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


_A = {"object": "an object", "list": "a list", "scalar": "a plain value"}


def _kind(value: Any) -> str:
    return "object" if isinstance(value, dict) else "list" if isinstance(value, list) else "scalar"


def _check_kinds(rows: list[dict], linenos: list[int], path: Path) -> None:
    """Refuse a key holding objects in one row and lists or plain values in another (no column type holds
    both); plain values of different types (42 and "1/2") are fine, they become text."""
    first: dict[str, tuple[str, int]] = {}
    for row, lineno in zip(rows, linenos):
        for key, value in row.items():
            if value is None:
                continue
            kind = _kind(value)
            seen = first.setdefault(key, (kind, lineno))
            if seen[0] != kind:
                raise ValueError(f"{path}:{lineno}: column {key!r} holds {_A[kind]} here but {_A[seen[0]]} on line {seen[1]}")


def read_jsonl(path: Path) -> pl.DataFrame:
    """A JSON-lines file as a table; a bad line is a ValueError naming the file and line (not UTF-8, not
    JSON, not an object, nested too deep, a column mixing objects, lists and plain values)."""
    rows, linenos = [], []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line)") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            except RecursionError:
                raise ValueError(f"{path}:{lineno}: JSON nested too deeply") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: each line must be a JSON object")
            rows.append(row)
            linenos.append(lineno)
    if not rows:
        raise ValueError(f"{path}: no rows")
    _check_kinds(rows, linenos, path)
    try:
        return pl.from_dicts(rows, infer_schema_length=None)
    except (pl.exceptions.PolarsError, OverflowError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: rows do not fit one table ({_first_line(e)})") from None


def check_text_columns(path: str | Path, columns: tuple[str, ...]) -> None:
    """Before a command that streams parquet input makes any output: a ValueError naming the file when it is not
    readable parquet, or when one of `columns` holds lists or structs (nested parquet) instead of text."""
    path = Path(path)
    files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith(".")) if path.is_dir() else [path]
    for f in (f for f in files if f.suffix.lower() == ".parquet" and f.is_file()):
        try:
            schema = pl.read_parquet_schema(f)
        except (pl.exceptions.PolarsError, OSError) as e:
            raise ValueError(f"{f}: not a readable parquet file ({_first_line(e)})") from None
        for col in columns:
            dtype = schema.get(col)
            if dtype is not None and (dtype.is_nested() or dtype in (pl.Object, pl.Binary)):
                raise ValueError(f"{f}: column {col!r} holds {dtype} values, not text")


def read_table(path: str | Path) -> pl.DataFrame:
    """Read a JSONL, JSON-lines or parquet file, or a directory of parquet shards. A file that cannot be read
    is a ValueError naming it (and the line, for JSONL)."""
    path = Path(path)
    if path.is_dir():
        shards = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
        if not shards:
            raise FileNotFoundError(f"no parquet shards in {path}")
        frames = [_read_parquet(p) for p in shards]
        try:
            return pl.concat(frames, how="diagonal_relaxed")
        except pl.exceptions.PolarsError as e:
            raise ValueError(f"{path}: shards with columns of different types ({_first_line(e)})") from None
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return read_jsonl(path)
    raise ValueError(f"{path}: unsupported file type {suffix!r} (use .jsonl or .parquet)")


def fingerprint(stage: str, settings: Any, inputs: list[str]) -> str:
    blob = json.dumps(
        {"stage": stage, "format": FORMAT_VERSION, "settings": settings, "inputs": inputs},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_json(path: Path) -> Any:
    """Parsed JSON, or None when the file is missing or unreadable (files are written atomically)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    return read_json(Path(stage_dir) / MANIFEST)


def is_done(stage_dir: Path, fp: str) -> dict[str, Any] | None:
    """The manifest if the stage finished with this fingerprint and its files are intact, else None."""
    m = read_manifest(stage_dir)
    if not m or m.get("fingerprint") != fp:
        return None
    for name, entry in (m.get("files") or {}).items():
        p = Path(stage_dir) / name
        if not p.exists():
            return None
        if "sha256" in entry and p.is_file() and file_sha256(p) != entry["sha256"]:
            return None
    return m


def write_manifest(stage_dir: Path, fp: str, **fields: Any) -> dict[str, Any]:
    manifest = {"fingerprint": fp, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
    write_json(Path(stage_dir) / MANIFEST, manifest)
    return manifest
