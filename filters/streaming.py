"""`curate_file` at scale: two streaming passes over the input with flat memory.

1. Score: batches of `batch_rows` rows go to worker processes (spawned: polars' threads make fork
   unsafe), which compute every score column and the reasons of every measure but dedup. The parent
   writes each batch's score columns (small) to a spill directory and collects what dedup needs: a
   few integers per row, and per distinct prompt its MinHash band keys and signature (spilled too).
2. Dedup decides for all rows at once (filters/dedup.py: sorts, no pairwise comparisons).
3. Write: the input is read again batch by batch, joined with its score columns and dedup decision,
   and appended to kept.parquet or rejected.parquet in this run's own directory; with funnel.json they
   are published together by one rename (filters/output_set.py), so a killed run changes nothing.

Workers die with the parent (distill/core/workers.py), and an output directory that is, or lies inside,
an input directory is refused (a rerun would read its own outputs).

Memory is a few batches plus O(rows) small integers, so it hardly grows with the input; the input is
read twice instead of being held. Results do not depend on `batch_rows` or `workers`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import tempfile
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterator

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from distill.config.curate import CurateConfig
from distill.core.paths import refuse_own_outputs
from distill.core.progress import progress
from distill.core.storage import read_table, write_json
from distill.core.workers import tied_initializer
from filters.decontam import Decontam
from filters.dedup import DEDUP_COLUMNS, DedupIndex, apply_dedup, duplicate_ids, no_dedup
from filters.funnel import Funnel
from filters.output_set import OutputSet
from filters.registry import SCORE_COLUMNS
from filters.scoring import REASON_COLUMNS, Scorer, Timings, check_columns, load_measures, local_reasons, prepare

log = logging.getLogger(__name__)
MAX_WORKERS = 8


# --- reading -------------------------------------------------------------------------------------


def _parquet_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
        if not files:
            raise FileNotFoundError(f"no parquet shards in {path}")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    return [path] if path.suffix.lower() == ".parquet" else []


class Source:
    """The input as a sequence of batches with one schema (shards with different schemas are unified
    like `pl.concat(how="diagonal_relaxed")`). Parquet streams; JSONL is read whole."""

    def __init__(self, path: Path, batch_rows: int):
        self.path, self.batch_rows = path, batch_rows
        self.files = _parquet_files(path)
        self._table: pl.DataFrame | None = None
        if self.files:
            schemas = [pl.read_parquet_schema(f) for f in self.files]
            template = pl.concat([pl.DataFrame(schema=s) for s in schemas], how="diagonal_relaxed")
            self.rows = sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)
        else:
            self._table = read_table(path)
            template = self._table.clear()
            self.rows = self._table.height
        check_columns(template.columns, path)
        self.template = prepare(template)

    def _conform(self, df: pl.DataFrame) -> pl.DataFrame:
        return pl.concat([self.template, prepare(df)], how="diagonal_relaxed")

    def batches(self) -> Iterator[pl.DataFrame]:
        yielded = False
        if self._table is not None:
            for start in range(0, self._table.height, self.batch_rows):
                yielded = True
                yield self._conform(self._table.slice(start, self.batch_rows))
        else:
            for f in self.files:
                for rb in pq.ParquetFile(f).iter_batches(batch_size=self.batch_rows):
                    if rb.num_rows:
                        yielded = True
                        yield self._conform(pl.from_arrow(pa.Table.from_batches([rb])))
        if not yielded:
            yield self.template


# --- workers -------------------------------------------------------------------------------------

_SCORER: Scorer | None = None


def _init_worker(cfg_json: str, loaded: dict[str, Any]) -> None:
    global _SCORER
    _SCORER = Scorer(CurateConfig.model_validate_json(cfg_json), loaded)


def _score_batch(df: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any] | None, dict[str, float]]:
    """Score columns + reasons but dedup (a frame of those columns only), dedup inputs, timings."""
    scorer = _SCORER
    before = dict(scorer.timings.seconds)
    judged = local_reasons(scorer.score(df), scorer.cfg)
    inputs = scorer.dedup_inputs(judged) if scorer.cfg.dedup.enabled else None
    spent = {k: v - before.get(k, 0.0) for k, v in scorer.timings.seconds.items()}
    out = judged.select(*SCORE_COLUMNS, REASON_COLUMNS[0])
    del judged, df
    _trim()
    return out, inputs, spent


def _trim() -> None:
    """Give freed heap back to the OS after a batch (glibc), so a long-lived worker's RSS stays at one
    batch's worth instead of creeping with fragmentation."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
        except OSError:  # not glibc
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None


class _InProcess:
    """The executor interface, run in this process (small inputs: no worker start-up)."""

    def __init__(self, cfg_json: str, loaded: dict[str, Any]):
        _init_worker(cfg_json, loaded)

    def submit(self, fn, *args):
        class Done:
            def __init__(self, value):
                self.value = value

            def result(self):
                return self.value

        return Done(fn(*args))

    def shutdown(self, *a, **k) -> None:
        pass


def _executor(workers: int, cfg: CurateConfig, loaded: dict[str, Any]):
    cfg_json = cfg.model_dump_json()
    if workers <= 0:
        return _InProcess(cfg_json, loaded)
    init, initargs = tied_initializer(_init_worker, cfg_json, loaded)  # workers die with this process, SIGKILL included
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=init, initargs=initargs)


def _auto_workers(rows: int, batch_rows: int) -> int:
    if rows <= 2 * batch_rows:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return min(cores, MAX_WORKERS) if cores > 1 else 0


# --- the two passes ------------------------------------------------------------------------------


class _Writer:
    """Appends frames to a parquet file under a temporary name; `commit` renames it into place."""

    def __init__(self, target: Path):
        self.target = target
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.writer: pq.ParquetWriter | None = None

    def write(self, df: pl.DataFrame) -> None:
        table = df.to_arrow()
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, table.schema, compression="zstd")
        elif table.schema != self.writer.schema:
            table = table.cast(self.writer.schema)
        self.writer.write_table(table)

    def commit(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.target)

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.tmp.unlink(missing_ok=True)


def curate_stream(
    input_path: Path, output_dir: Path, cfg: CurateConfig, *, batch_rows: int = 10_000, workers: int | None = None
) -> dict[str, Any]:
    t_start = time.perf_counter()
    refuse_own_outputs(input_path, output_dir, output_flag="--output-dir")  # a rerun must not read its own outputs
    source = Source(input_path, batch_rows)  # validates columns before anything is written
    loaded = load_measures(cfg)  # benchmarks are read once, here, not in every worker
    index = Decontam(cfg, loaded[Decontam.name]).index  # for the funnel's per-benchmark counts
    workers = _auto_workers(source.rows, batch_rows) if workers is None else workers
    outs = OutputSet(output_dir)  # the three outputs are published together (filters/output_set.py)
    spill = outs.spill
    timings = Timings()
    log.info("curate: %d rows from %s, batches of %d, %d worker(s)", source.rows, input_path, batch_rows, workers)
    try:
        # pass 1: scores
        dedup = DedupIndex(cfg.dedup, spill_dir=spill) if cfg.dedup.enabled else None
        ids: list[pl.Series] = []
        n_batches = 0
        # One polars thread per worker process (they inherit the environment): the workers are the
        # parallelism.
        saved_threads = os.environ.get("POLARS_MAX_THREADS")
        if workers > 0:
            os.environ["POLARS_MAX_THREADS"] = "1"
        pool = _executor(workers, cfg, loaded)
        try:
            pending: deque = deque()

            def collect() -> None:
                nonlocal n_batches
                scores, inputs, spent = pending.popleft().result()
                scores.write_parquet(spill / f"scores-{n_batches:06d}.parquet", compression="lz4")
                bar.update(scores.height)
                if dedup is not None:
                    dedup.add_rows(**inputs["rows"])
                    if inputs["prompts"]:
                        dedup.add_prompts(**inputs["prompts"])
                for k, v in spent.items():
                    timings.seconds[k] += v
                n_batches += 1

            bar = progress(source.rows, "curate: score", unit="rows")
            for batch in source.batches():
                ids.append(batch.get_column("id").cast(pl.Utf8))
                pending.append(pool.submit(_score_batch, batch))
                del batch
                if len(pending) > max(workers, 1):
                    collect()
            while pending:
                collect()
            bar.close()
        finally:
            pool.shutdown(cancel_futures=True)
            if saved_threads is None:
                os.environ.pop("POLARS_MAX_THREADS", None)
            else:
                os.environ["POLARS_MAX_THREADS"] = saved_threads

        # dedup over every row
        result = None
        if dedup is not None:
            with timings("dedup"):
                result = dedup.decide()
            all_ids = pl.concat(ids)
            dup_of = duplicate_ids(all_ids, result.duplicate_of)
            del all_ids
        del ids

        # pass 2: join, split, write
        kept_w, rej_w = _Writer(outs.dir / "kept.parquet"), _Writer(outs.dir / "rejected.parquet")
        funnel = Funnel(cfg, index)
        try:
            offset = 0
            bar = progress(source.rows, "curate: judge and write", unit="rows")
            for i, batch in enumerate(source.batches()):
                scores = pl.read_parquet(spill / f"scores-{i:06d}.parquet")
                batch = batch.drop([c for c in (*scores.columns, *DEDUP_COLUMNS, *REASON_COLUMNS) if c in batch.columns])
                judged = batch.hstack(scores.get_columns())
                n = judged.height
                if result is not None:
                    sl = slice(offset, offset + n)
                    judged = apply_dedup(judged, result.reason[sl], dup_of.slice(offset, n), result.cluster[sl], result.cluster_prompts[sl])
                else:
                    judged = no_dedup(judged)
                offset += n
                funnel.add(judged)
                is_kept = judged.get_column(REASON_COLUMNS[1]).is_null()
                kept_w.write(judged.filter(is_kept))
                rej_w.write(judged.filter(~is_kept))
                bar.update(n)
            bar.close()
            kept_w.commit()
            rej_w.commit()
        except BaseException:
            kept_w.discard()
            rej_w.discard()
            raise
        out = funnel.result(timings.seconds, result.stats if result is not None else {})
        out["timing"].update(wall_seconds=round(time.perf_counter() - t_start, 3), workers=workers, batch_rows=batch_rows)
        write_json(outs.dir / "funnel.json", out)
        outs.commit()
    finally:
        outs.discard()  # a failed run's directory; after a commit, only the lock
    return out
