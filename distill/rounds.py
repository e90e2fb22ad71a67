"""Sampling rounds that grow a dataset: each round samples fresh prompts from one fixed teacher, verifies,
curates and selects them (the pipeline up to `select`), then appends the accepted rows to a dataset
directory. A nightly Prefect deployment runs one round per night (prefect.yaml, `sampling-round`).

    <dataset>/data/round-00000.parquet, round-00001.parquet, ...   the rows (load with datasets' "parquet")
    <dataset>/rounds.jsonl                                          one line per committed round

Round k uses `prompts.seed = seed + k` and `sampling.seed = seed + k`, so every round draws other prompts
and other samples, and rerunning round k (after a crash) plans exactly the same work and reuses the
stages it finished (`<run_root>/round-0000k/`). A round is committed when its line is in rounds.jsonl,
written after its parquet; the next round number is the number of committed rounds. Rows whose id (or,
for prompts seen before, whose prompt_id and completion) is already in the dataset are not appended twice.

The teacher is trained (or resolved) once, in `<run_root>/teacher-base`, and every round samples from it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import polars as pl

from distill.config.recipe import Recipe
from distill.core.run import Run, call_directly
from distill.core.storage import file_sha256, write_parquet
from distill.pipeline import run_pipeline
from distill.stage_fns import SUBDIRS

LEDGER = "rounds.jsonl"


def committed_rounds(dataset_dir: str | Path) -> list[dict]:
    path = Path(dataset_dir) / LEDGER
    if not path.is_file():
        return []
    rounds = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rounds.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {n} is not JSON ({e})") from e
    return rounds


def round_recipe(recipe: Recipe, index: int, teacher_model: str) -> Recipe:
    """The recipe of round `index`: its own prompt and sampling seeds, the shared teacher as-is."""
    data = recipe.model_dump(mode="json")
    data["prompts"]["seed"] = recipe.prompts.seed + index
    data["sampling"]["seed"] = recipe.sampling.seed + index
    data["teacher"] |= {"enabled": False, "model": teacher_model}
    data["run_dir"] = None
    return Recipe.model_validate(data)


def append_round(dataset_dir: Path, index: int, kept: pl.DataFrame, info: dict) -> dict:
    """Commit round `index`: its rows not already in the dataset (by id) as a parquet, then its ledger line."""
    data = dataset_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    earlier = sorted(p for p in data.glob("round-*.parquet") if p.name != f"round-{index:05d}.parquet")
    new = kept
    if earlier and new.height:
        seen = pl.concat([pl.read_parquet(p, columns=["id"]) for p in earlier])
        new = new.join(seen, on="id", how="anti")
    path = data / f"round-{index:05d}.parquet"
    entry = write_parquet(new, path)  # atomic; the ledger line below commits it
    line = {"round": index, "file": f"data/{path.name}", "rows": new.height, "duplicates_skipped": kept.height - new.height,
            "sha256": entry.get("sha256") or file_sha256(path), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **info}
    fd = os.open(dataset_dir / LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return line


def run_round(recipe: Recipe, dataset_dir: str | Path, run_root: str | Path | None = None, call: Callable[..., dict] = call_directly) -> dict:
    """One round: teacher (once), then prompts → sample → verify → curate → select for the next round
    number, appended to `dataset_dir`. `call` runs a stage (Prefect subflows in flows/rounds.py)."""
    dataset_dir = Path(dataset_dir).resolve()
    dataset_dir.mkdir(parents=True, exist_ok=True)
    root = Path(run_root).resolve() if run_root else recipe.resolved_run_dir().resolve() / "rounds"
    index = len(committed_rounds(dataset_dir))
    base = run_pipeline(Run(recipe, root / "teacher-base"), only="teacher", call=call)
    this = round_recipe(recipe, index, base["teacher"]["model"])
    run = Run(this, root / f"round-{index:05d}")
    m = run_pipeline(run, only="select", call=call)
    kept = pl.read_parquet(run.dir / SUBDIRS["select"] / "kept.parquet")
    info = {"prompts_seed": this.prompts.seed, "sampling_seed": this.sampling.seed, "recipe": recipe.name,
            "recipe_hash": recipe.recipe_hash(), "teacher": base["teacher"]["model"], "run_dir": str(run.dir),
            "samples": m["sample"]["rows_out"], "accepted": kept.height}
    return append_round(dataset_dir, index, kept, info)


def dataset_rows(dataset_dir: str | Path) -> pl.DataFrame:
    """Every committed round's rows (a file without a ledger line is an uncommitted round: left out)."""
    d = Path(dataset_dir)
    files = [d / r["file"] for r in committed_rounds(d)]
    return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed") if files else pl.DataFrame()
