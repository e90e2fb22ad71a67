"""issue 15, items 1-3: what `distill publish` may touch. A dry run never deletes what it did not write
(an unrelated OUT, the run itself, `. .`), repo ids and the recipe name cannot carry a path out of OUT or
runs/, and a symlink in a student's model directory cannot publish (or hash) a file from elsewhere.

Each test fails on 5639c99, where the dry run began with `shutil.rmtree(OUT)`, an absolute
`publish.dataset_repo` or recipe `name` passed validation, and the checkpoint's files were listed with
`rglob` + `is_file()` (following links)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from distill.config.base import RecipeError
from distill.config.recipe import recipe_from_dict
from distill.publish.hub import PLAN, PublishError, publish

REPO = Path(__file__).resolve().parents[1]
RECIPE = {"name": "x", "students": [{"name": "s"}]}
MARK = ".distill-dry-run.json"  # distill/publish/safety.py's MARK, spelt out so this file also runs against 5639c99


def fake_run(root: Path) -> Path:
    """The files a finished run leaves that publish reads: report.json, the SFT set, the selected traces, a checkpoint."""
    run = root / "run"
    (run / "sft_data").mkdir(parents=True)
    (run / "selected").mkdir()
    df = pl.DataFrame({"id": ["a", "b"], "prompt": ["p", "q"], "completion": ["c", "d"], "kind": ["reasoning", "non_reasoning"]})
    df.write_parquet(run / "sft_data" / "train.parquet")
    df.head(1).write_parquet(run / "selected" / "kept.parquet")
    model = run / "students" / "s" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    (run / "report.json").write_text(json.dumps({"recipe": {"name": "x", "hash": "abc"}}))
    return run


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


# --- item 1: the dry run deletes nothing it did not write ------------------------------------------


def test_dry_run_refuses_an_unrelated_non_empty_out(tmp_path):
    run = fake_run(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(PublishError, match="not empty and is not a dry run of"):
        publish(run, recipe_from_dict(RECIPE), dry_run=True, out=out)
    assert _tree(out) == {"thesis.tex": b"years of work"}


@pytest.mark.parametrize("where", ["run", "inside", "parent", "link-to-run"])
def test_dry_run_refuses_out_overlapping_the_run(tmp_path, where):
    run = fake_run(tmp_path)
    before = _tree(tmp_path)
    out = {"run": run, "inside": run / "selected", "parent": tmp_path, "link-to-run": tmp_path / "link"}[where]
    if where == "link-to-run":
        out.symlink_to(run)
    with pytest.raises(PublishError, match="run directory"):
        publish(run, recipe_from_dict(RECIPE), dry_run=True, out=out)
    assert _tree(tmp_path) == before  # nothing deleted, nothing staged left behind
    assert not list(tmp_path.rglob(".*dry-run.tmp"))


def test_dot_dot_from_inside_the_run_is_refused_by_the_cli(tmp_path):
    """`distill publish --dry-run . .` run from the run directory: on 5639c99 it deleted the run."""
    run = fake_run(tmp_path)
    (run / "recipe.yaml").write_text("name: x\nstudents: [{name: s}]\n")
    before = _tree(run)
    res = _cli("publish", "--dry-run", ".", ".", cwd=run)
    assert res.returncode == 2 and "is or contains the run directory" in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert _tree(run) == before


def test_dry_run_replaces_only_its_own_previous_output(tmp_path):
    run = fake_run(tmp_path)
    recipe = recipe_from_dict(RECIPE)
    out = tmp_path / "out"
    publish(run, recipe, dry_run=True, out=out)
    first = _tree(out)
    mark = json.loads((out / MARK).read_text())
    assert mark["run_dir"] == str(run.resolve()) and PLAN in mark["files"]
    publish(run, recipe, dry_run=True, out=out)  # a rerun replaces its own files
    assert set(_tree(out)) == set(first)
    publish(run, recipe, dry_run=True)  # the default, RUN/publish, is allowed inside the run
    assert (run / "publish" / PLAN).is_file()

    (out / "datasets" / "notes.txt").write_text("added by hand")
    with pytest.raises(PublishError, match="did not write .*notes.txt"):
        publish(run, recipe, dry_run=True, out=out)
    assert (out / "datasets" / "notes.txt").read_text() == "added by hand"

    other = fake_run(tmp_path / "other")  # a dry run of another run is not this one's to replace
    with pytest.raises(PublishError, match="not a dry run of"):
        publish(other, recipe, dry_run=True, out=out)
    assert (out / PLAN).is_file()


def test_a_dry_run_from_before_the_mark_is_replaced_only_in_run_publish(tmp_path):
    run = fake_run(tmp_path)
    recipe = recipe_from_dict(RECIPE)
    publish(run, recipe, dry_run=True)
    (run / "publish" / MARK).unlink()  # as 5639c99 left it: the plan lists every file
    publish(run, recipe, dry_run=True)
    assert (run / "publish" / MARK).is_file()
    (run / "publish" / MARK).unlink()
    (run / "publish" / "notes.txt").write_text("mine")  # no longer exactly the plan's files: not replaced
    with pytest.raises(PublishError, match="not a dry run of"):
        publish(run, recipe, dry_run=True)
    assert (run / "publish" / "notes.txt").read_text() == "mine"


def test_a_killed_dry_runs_staging_directory_is_cleaned(tmp_path):
    run = fake_run(tmp_path)
    staging = tmp_path / ".out.dry-run.tmp"
    (staging / "datasets").mkdir(parents=True)
    (staging / MARK).write_text(json.dumps({"run_dir": str(run.resolve()), "files": None}))
    publish(run, recipe_from_dict(RECIPE), dry_run=True, out=tmp_path / "out")
    assert not staging.exists() and (tmp_path / "out" / PLAN).is_file()


# --- item 2: repo ids and the recipe name are names, never paths -----------------------------------


@pytest.mark.parametrize("field,value", [("dataset_repo", "/x"), ("dataset_repo", "../x"), ("dataset_repo", "org/../../x"),
                                         ("model_repo_prefix", "/tmp/m"), ("dataset_repo", "org/-x"), ("dataset_repo", "a b")])
def test_repo_ids_are_hub_ids(field, value):
    with pytest.raises(RecipeError, match=f"publish.{field}"):
        recipe_from_dict({"name": "x", "publish": {field: value}})


@pytest.mark.parametrize("name", ["/abs", "../up", "a/b", ".", "..", ".hidden", "", "a b", "x" * 97, "a\\b"])
def test_recipe_name_is_one_safe_path_component(name):
    with pytest.raises(RecipeError, match="name"):
        recipe_from_dict({"name": name})


def test_accepted_names_stay_under_runs_and_out(tmp_path):
    for name in ("demo", "r1-distill-qwen2.5-math-7b", "My_Recipe", "a.b"):
        r = recipe_from_dict({"name": name})
        assert r.resolved_run_dir().resolve().is_relative_to(Path("runs").resolve())
    run = fake_run(tmp_path)
    with pytest.raises(PublishError, match="student name"):  # the student's name is part of its repo id
        publish(run, recipe_from_dict({"name": "x", "students": [{"name": "s..x"}]}), dry_run=True, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- item 3: a symlink in a checkpoint cannot publish a file from elsewhere -------------------------


def test_symlink_out_of_the_model_dir_is_refused(tmp_path):
    run = fake_run(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("CANARY-not-for-the-hub")
    (run / "students" / "s" / "model" / "tokenizer.json").symlink_to(secret)
    out = tmp_path / "out"
    with pytest.raises(PublishError, match="symlink to .*secret.txt.*not a file inside"):
        publish(run, recipe_from_dict(RECIPE), dry_run=True, out=out)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_symlinked_directory_in_the_model_dir_is_refused(tmp_path):
    run = fake_run(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "id_rsa").write_text("CANARY")
    (run / "students" / "s" / "model" / "extra").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PublishError, match="extra is a symlink"):
        publish(run, recipe_from_dict(RECIPE), dry_run=True, out=tmp_path / "out")


def test_symlink_inside_the_model_dir_is_published_as_its_file(tmp_path):
    run = fake_run(tmp_path)
    model = run / "students" / "s" / "model"
    (model / "generation_config.json").symlink_to("config.json")  # relative, inside: resolved
    out = tmp_path / "out"
    plan = publish(run, recipe_from_dict(RECIPE), dry_run=True, out=out)
    published = out / "models" / "x-s" / "generation_config.json"
    assert published.is_file() and not published.is_symlink() and published.read_text() == "{}"
    files = next(r["files"] for r in plan["repos"] if r["repo_type"] == "model")
    assert set(files) == {"README.md", "config.json", "generation_config.json", "model.safetensors"}
    assert not any(p.is_symlink() for p in out.rglob("*"))
