"""Prefect wiring: each stage of `distill.pipeline` runs as a Prefect task inside one flow.

No logic lives here. Stage reuse is decided by the run directory's manifests (so it also holds
outside Prefect, and survives a lost Prefect database); Prefect adds the UI, retries, logs and artifacts.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from distill.pipeline import Run, run_pipeline
from distill.recipe import Recipe


def _as_task(name: str, fn, *args) -> dict:
    return task(fn, name=name, cache_policy=NO_CACHE, persist_result=False)(*args)


@flow(name="r1-distill", persist_result=False)
def distill_pipeline(recipe: Recipe, run_dir: str | None = None, only: str | None = None) -> dict:
    """The whole pipeline (or up to the stage `only`) for one validated recipe."""
    run = Run(recipe, run_dir)
    manifests = run_pipeline(run, only=only, call=_as_task)
    report_md = Path(run.dir) / "report.md"
    if "report" in manifests and report_md.is_file():
        create_markdown_artifact(report_md.read_text(), key=f"{recipe.name.lower().replace('_', '-')}-report", description="r1-distill run report")
    return {name: {k: m.get(k) for k in ("rows_in", "rows_out", "seconds", "cached")} for name, m in manifests.items()}
