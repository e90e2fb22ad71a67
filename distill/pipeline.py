"""The whole pipeline: every stage of distill/stages.py's table in order, over one run directory.

    prompts ─▶ teacher ─▶ sample ─▶ verify ─▶ curate ─▶ select ─▶ merge ─▶ sft (per student) ─▶ eval ─▶ report ─▶ publish

Finished stages are reused (their manifests, `distill.core.run.Run.stage`); a changed setting reruns that
stage and everything downstream of it, nothing upstream. The stage functions are in distill/stage_fns.py.
Prefect (`flows/`) runs the same loop with each stage as its own subflow; the CLI calls it directly.
"""

from __future__ import annotations

from distill.core.progress import stage_finished
from distill.core.run import Call, Run, call_directly
from distill.stages import schedule, stage_args

__all__ = ["Run", "call_directly", "run_pipeline", "stage_summary"]


def run_pipeline(run: Run, only: str | None = None, call: Call = call_directly) -> dict[str, dict]:
    """Every stage in order, reusing finished ones; stop after `only` when given.

    `call(label, stage_fn, run, *args)` runs one stage: directly here, as a Prefect subflow in `flows/`.
    """
    manifests: dict[str, dict] = {}
    run.save_recipe()  # before any stage: `distill status RUN_DIR` reads it, also after a kill
    for st, label, student in schedule(run.recipe, only):
        manifests[label] = call(label, st.fn, run, *stage_args(st, run.recipe, manifests, student))
        out_dir = run.dir / st.subdir / (student or "") if st.subdir else run.dir
        stage_finished(label, manifests[label], out_dir)  # the stage's line on the console (and Prefect's UI)
    return manifests


def stage_summary(manifests: dict[str, dict]) -> dict[str, dict]:
    """Rows, seconds and reuse per stage: what `distill run` prints and Prefect's stage table shows."""
    return {label: {k: m.get(k) for k in ("rows_in", "rows_out", "seconds", "cached")} for label, m in manifests.items()}
