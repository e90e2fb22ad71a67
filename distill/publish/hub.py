"""Publish a finished run to the Hugging Face Hub: three datasets and the student checkpoints, with cards.

    reasoning      selected/kept.parquet            the curated, verified traces the students learnt from
    non-reasoning  sft_data rows of kind non_reasoning
    merged         sft_data/train.parquet           the SFT set as trained on
    <student>      students/<name>/model/           the checkpoint (safetensors, tokenizer, chat template)

Each becomes its own repo, on a branch per run (`publish.revision`, default `run-<recipe hash>`), private
unless the recipe says otherwise. `stage()` lays the repos out in a directory exactly as they will be
pushed; a dry run stops there, a push uploads those same directories with `HfApi.upload_folder`.

The token is read from HF_TOKEN or the `huggingface-cli login` file by huggingface_hub itself, passed
only to `HfApi`, and never returned, logged or written: results and plans say where a token was found,
never what it is.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from distill.config.names import hub_repo_id
from distill.config.recipe import Recipe
from distill.core.storage import file_sha256, read_json, write_json
from distill.publish.cards import dataset_card, model_card, source_licences
from distill.publish.safety import PLAN, PublishError, check_out, commit_out, model_files

__all__ = ["PLAN", "PublishError", "publish", "publish_stage", "repo_ids", "revision", "stage", "token_source"]

log = logging.getLogger(__name__)



def token_source() -> str | None:
    """Where huggingface_hub will find a token, without reading it out: for plans and logs."""
    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return "environment (HF_TOKEN)"
    from huggingface_hub import constants  # heavy: only where a token is looked for

    if Path(constants.HF_TOKEN_PATH).is_file():
        return "huggingface-cli login"
    return None


def repo_ids(recipe: Recipe) -> dict[str, str]:
    cfg = recipe.publish
    base = cfg.dataset_repo or recipe.name
    models = cfg.model_repo_prefix or recipe.name
    ids = {kind: f"{base}-{kind}" for kind in ("reasoning", "non-reasoning", "merged")}
    ids |= {f"model:{s.name}": f"{models}-{s.name}" for s in recipe.students}
    for key, rid in ids.items():  # each id becomes a path under OUT: a Hub id, never a path
        field = "publish.model_repo_prefix (or the recipe name) and the student name" if key.startswith("model:") \
            else "publish.dataset_repo (or the recipe name)"
        try:
            hub_repo_id(rid, field)
        except ValueError as e:
            raise PublishError(f"cannot publish: {e}") from None
    return ids


def revision(recipe: Recipe, report: dict) -> str:
    """The run's branch: the recipe's `publish.revision`, else `run-<recipe hash from report.json>`."""
    return recipe.publish.revision or f"run-{report['recipe']['hash']}"


def _public_source(value: Any) -> Any:
    """Local file paths in the `source` column become their file name (no machine paths on the Hub)."""
    if isinstance(value, str) and os.path.isabs(value):
        return Path(value).name
    return value


def _publishable(df: pl.DataFrame) -> pl.DataFrame:
    if "source" in df.columns and df["source"].dtype == pl.Utf8:
        df = df.with_columns(pl.col("source").map_elements(_public_source, return_dtype=pl.Utf8))
    return df


def _languages(df: pl.DataFrame) -> list[str]:
    for col in ("target_language", "language"):
        if col in df.columns:
            return sorted({str(x) for x in df[col].drop_nulls().unique() if x and len(str(x)) <= 3})
    return []


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # checkpoints are large: a hard link when on the same filesystem
    except OSError:
        shutil.copy2(src, dst)


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise PublishError(f"cannot publish: {what} is missing ({path}); run the pipeline up to the report first")
    return path


def stage(run_dir: Path, recipe: Recipe, out: Path) -> dict[str, Any]:
    """Write every repo's files under `out/<datasets|models>/<repo id>/`; return the plan."""
    run_dir, out = Path(run_dir), Path(out)
    report = read_json(_need(run_dir / "report.json", "report.json"))
    ids = repo_ids(recipe)
    rev = revision(recipe, report)
    merged = pl.read_parquet(_need(run_dir / "sft_data" / "train.parquet", "the merged SFT set"))
    tables = {
        "reasoning": pl.read_parquet(_need(run_dir / "selected" / "kept.parquet", "the selected reasoning traces")),
        "non-reasoning": merged.filter(pl.col("kind") == "non_reasoning") if "kind" in merged.columns else merged.clear(),
        "merged": merged,
    }
    langs = _languages(tables["reasoning"])
    repos = []
    for kind, df in tables.items():
        d = out / "datasets" / ids[kind]
        (d / "data").mkdir(parents=True, exist_ok=True)
        _publishable(df).write_parquet(d / "data" / "train.parquet")
        dataset_card(recipe, report, kind=kind, rows=df.height, languages=langs, repo_ids=ids).save(d / "README.md")
        repos.append({"repo_id": ids[kind], "repo_type": "dataset", "dir": d, "rows": df.height})
    for s in recipe.students:
        src = _need(run_dir / "students" / s.name / "model", f"the checkpoint of student {s.name!r}")
        d = out / "models" / ids[f"model:{s.name}"]
        d.mkdir(parents=True, exist_ok=True)
        for f, rel in model_files(src, s.name):  # regular files only: a symlink may not reach outside the model dir
            _link_or_copy(f, d / rel)
        model_card(recipe, report, student=s.name, repo_ids=ids).save(d / "README.md")
        repos.append({"repo_id": ids[f"model:{s.name}"], "repo_type": "model", "dir": d})
    plan = {
        "recipe": report["recipe"],
        "revision": rev,
        "private": recipe.publish.private,
        "token": token_source(),
        "repos": [
            {**{k: v for k, v in r.items() if k != "dir"}, "path": str(r["dir"].relative_to(out)),
             "files": {str(f.relative_to(r["dir"])): {"bytes": f.stat().st_size, "sha256": file_sha256(f)}
                       for f in sorted(r["dir"].rglob("*")) if f.is_file()}}
            for r in repos
        ],
    }
    return plan


def _check_licences(recipe: Recipe) -> None:
    unknown = [k for k, v in source_licences(recipe).items() if v == "unknown"]
    if unknown and not recipe.publish.private:
        raise PublishError(
            "refusing a public push while source licences are unknown: " + "; ".join(unknown)
            + " (set publish.source_licenses in the recipe, or publish.private: true)"
        )


def publish(run_dir: Path, recipe: Recipe, *, dry_run: bool, out: Path | None = None) -> dict[str, Any]:
    """Dry run: stage into `out` (default `<run_dir>/publish`) and write the plan there. Push: stage into a
    temporary directory, then create each repo (private as configured), its run branch, and upload."""
    _check_licences(recipe)
    repo_ids(recipe)  # every repo id is a Hub id before anything is written
    if dry_run:
        out = Path(out) if out else Path(run_dir) / "publish"
        # never deletes what it did not write: OUT is new, empty or this run's previous dry run (safety.py)
        dst, staging = check_out(Path(run_dir), out)
        try:
            plan = stage(run_dir, recipe, staging)
            write_json(staging / PLAN, plan)
            commit_out(Path(run_dir), dst, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("publish (dry run): %d repos written under %s, branch %s; Hub token: %s", len(plan["repos"]), out, plan["revision"],
                 plan["token"] or "none found (a push needs HF_TOKEN or huggingface-cli login)")
        return {**plan, "dry_run": True, "out": str(out)}

    from huggingface_hub import HfApi  # heavy: only for a real push

    if token_source() is None:
        raise PublishError("no Hugging Face token: set HF_TOKEN or run `huggingface-cli login` (or use a dry run)")
    with tempfile.TemporaryDirectory(prefix="r1-distill-publish-") as tmp:
        plan = stage(run_dir, recipe, Path(tmp))
        api = HfApi()  # huggingface_hub reads the token itself; it never passes through our code
        rev = plan["revision"]
        for r in plan["repos"]:
            rid, rtype = r["repo_id"], r["repo_type"]
            try:
                url = api.create_repo(rid, repo_type=rtype, private=plan["private"], exist_ok=True)
                api.create_branch(rid, repo_type=rtype, branch=rev, exist_ok=True)
                api.upload_folder(repo_id=rid, repo_type=rtype, folder_path=Path(tmp) / r["path"], revision=rev,
                                  commit_message=f"r1-distill run {plan['recipe']['name']} (recipe {plan['recipe']['hash']})")
            except Exception as e:  # HTTP, connection, offline mode
                # the exception text is huggingface_hub's; it does not hold the token, but say only the type
                # and status to be sure nothing from request headers is echoed
                status = getattr(getattr(e, "response", None), "status_code", None)
                raise PublishError(f"pushing {rtype} {rid}@{rev} failed: {type(e).__name__}" + (f" (HTTP {status})" if status else "")) from None
            r["url"] = str(url)
            log.info("published %s %s@%s", rtype, rid, rev)
    return {**plan, "dry_run": False}


def publish_stage(run, manifests: dict[str, dict]) -> dict:
    """The pipeline's last stage (run only when `publish.enabled`); a dry run writes under the run directory.
    Never reused: it always publishes the run as it is now."""
    cfg = run.recipe.publish
    out = Path(cfg.dry_run_dir) if cfg.dry_run_dir else Path(run.dir) / "publish"
    result = publish(Path(run.dir), run.recipe, dry_run=cfg.dry_run, out=out)
    return {"rows_in": 0, "rows_out": len(result["repos"]), "seconds": 0.0, "fingerprint": "", "cached": False,
            "dry_run": cfg.dry_run, "revision": result["revision"], "token": result["token"],
            "repos": [r["repo_id"] for r in result["repos"]], "out": result.get("out")}
