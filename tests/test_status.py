"""`distill status RUN_DIR`: done / running / crashed / not started per stage, rows, seconds, device-hours and
cost, what a rerun redoes and why; fast commands that import no model library; the stage lines."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from distill.cli import main
from distill.config.recipe import load_recipe
from distill.core.run import Run
from distill.core.storage import write_json
from distill.pipeline import run_pipeline
from distill.status import expected_fingerprints, stage_status

REPO = Path(__file__).resolve().parents[1]
# what the commands that train nothing must not import (each costs seconds and hundreds of MB)
HEAVY = ("torch", "vllm", "trl", "ray", "prefect", "transformers", "datasets", "peft", "accelerate", "deepspeed")


def small_recipe(tmp_path: Path, **changes) -> Path:
    """The demo's recipe on a few prompts with an untrained teacher: the prompts and teacher stages run in
    well under a second and load no model (the rest of the table is still planned and fingerprinted)."""
    data = yaml.safe_load((REPO / "recipes" / "demo.yaml").read_text())
    data["prompts"] |= {"n_train": 6, "n_eval": 3}
    data["teacher"] = {"enabled": False, "model": str(tmp_path / "teacher-model")}
    data["sampling"]["cost"] = {"gpu_hour_usd": 2.0}
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        data[section][key] = value
    path = tmp_path / f"recipe-{len(changes)}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def half_run(tmp_path: Path) -> tuple[Path, Path]:
    """A run stopped after the teacher stage (`distill teacher`): two stages done, the rest not started."""
    cfg = small_recipe(tmp_path)
    run_dir = tmp_path / "run"
    run_pipeline(Run(load_recipe(cfg), run_dir), only="teacher")
    return cfg, run_dir


def by_stage(rows: list[dict]) -> dict[str, dict]:
    return {r["stage"]: r for r in rows}


def test_status_of_a_run_stopped_part_way(half_run):
    cfg, run_dir = half_run
    rows = by_stage(stage_status(load_recipe(cfg), run_dir))
    assert list(rows)[:4] == ["prompts", "teacher", "sample", "verify"]
    assert rows["prompts"]["state"] == "done" and rows["prompts"]["rows_out"] == 9 and rows["prompts"]["rerun"] == "reuse"
    assert rows["teacher"]["state"] == "done" and rows["teacher"]["rerun"] == "reuse"
    assert rows["sample"]["state"] == "not started" and rows["sample"]["rerun"] == "run: not started"
    assert rows["sft:smollm2-135m"]["state"] == "not started"


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_killed_stage_is_crashed_and_a_live_one_running(half_run):
    """Sampling killed after one shard: `crashed` with the rows it wrote; the same with a live owner: `running`."""
    cfg, run_dir = half_run
    recipe = load_recipe(cfg)
    subdir, fp = expected_fingerprints(recipe, run_dir)["sample"]
    traces = run_dir / subdir
    traces.mkdir()
    pl.DataFrame({"sample_id": ["a", "b", "c"]}).write_parquet(traces / "shard-00000.parquet")
    (traces / "_ledger-x.jsonl").write_text(json.dumps({"event": "engine_start", "seconds": 1800.0}) + "\n"
                                            + json.dumps({"event": "shard", "rows": 3, "engine_seconds": 1800.0}) + "\n")
    owner = {"fingerprint": fp, "host": os.uname().nodename, "started_at": 0.0}
    write_json(traces / "_started.json", owner | {"pid": dead_pid()})
    sample = by_stage(stage_status(recipe, run_dir))["sample"]
    assert sample["state"] == "crashed" and sample["rows_out"] == 3 and sample["partial_files"] == 1
    assert sample["rerun"].startswith("redo: it did not finish")
    # the ledger's engine time (a killed run's cost is counted): 1 h on the sampling engine's one device at $2
    assert sample["device_hours"] == pytest.approx(1.0) and sample["cost_usd"] == pytest.approx(2.0)

    write_json(traces / "_started.json", owner | {"pid": os.getpid()})
    sample = by_stage(stage_status(recipe, run_dir))["sample"]
    assert sample["state"] == "running" and sample["rerun"].startswith("running now")


def test_a_changed_recipe_names_what_a_rerun_redoes_and_why(half_run, tmp_path):
    _, run_dir = half_run
    changed = load_recipe(small_recipe(tmp_path, prompts__n_train=7))
    rows = by_stage(stage_status(changed, run_dir))
    assert rows["prompts"]["state"] == "done (other settings)"
    assert "settings changed" in rows["prompts"]["rerun"] and "prompts.n_train: 6 -> 7" in rows["prompts"]["rerun"]
    assert rows["teacher"]["rerun"].startswith("redo: its input prompts is redone")
    # a setting of a later stage leaves the finished ones alone
    rows = by_stage(stage_status(load_recipe(small_recipe(tmp_path, sampling__temperature=0.7)), run_dir))
    assert rows["prompts"]["rerun"] == rows["teacher"]["rerun"] == "reuse"


def test_status_command_prints_the_table_and_json(half_run, capsys):
    cfg, run_dir = half_run
    assert main(["status", str(run_dir), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "prompts" in out and "not started" in out and "a rerun redoes: sample" in out
    assert main(["status", str(run_dir), "--config", str(cfg), "--json", "-q"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["stages"][0]["stage"] == "prompts" and data["totals"]["redo"][0] == "sample"
    # a run stopped part way wrote its recipe when it started: status needs no --config (an operator's first
    # command after a nightly run died)
    assert (run_dir / "recipe.yaml").is_file()
    assert main(["status", str(run_dir)]) == 0
    assert "not started" in capsys.readouterr().out
    # a directory with no recipe.yaml: the error says what to pass
    (run_dir / "recipe.yaml").unlink()
    assert main(["status", str(run_dir)]) == 2
    assert "--config RECIPE" in capsys.readouterr().err


def test_commands_that_train_nothing_import_no_model_library(half_run):
    """`--help`, `plan`, `status` and a stage that loads no model, in a clean interpreter: none of the heavy
    libraries is imported (each costs seconds: `distill plan` took 6 s when it imported the training stack)."""
    cfg, run_dir = half_run
    code = f"""
import contextlib, io, sys
from distill.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(["--help"])
    except SystemExit:
        pass
    assert main(["plan", "recipes/demo.yaml"]) == 0
    assert main(["status", {str(run_dir)!r}, "--config", {str(cfg)!r}]) == 0
    assert main(["prompts", "--config", {str(cfg)!r}, "--run-dir", {str(run_dir)!r}]) == 0
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env={**os.environ, "R1_DISTILL_CACHE": str(REPO / ".cache")})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_check_imports_no_engine_trainer_or_prefect(tmp_path):
    """`distill check` reads tokenizers and configs (transformers, and so torch, for those), never vLLM, TRL,
    Ray or Prefect."""
    code = """
import contextlib, io, sys
from distill.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    main(["check", "--config", "recipes/demo.yaml"])
print(sorted(m for m in ("vllm", "trl", "ray", "prefect", "datasets", "peft", "deepspeed") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                         env={**os.environ, "R1_DISTILL_CACHE": str(REPO / ".cache")})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_stage_lines_say_start_end_rows_seconds_and_where(half_run, caplog):
    cfg, run_dir = half_run
    caplog.set_level("INFO", logger="distill.stage")
    run_pipeline(Run(load_recipe(small_recipe(cfg.parent, prompts__n_train=5)), run_dir), only="prompts")
    lines = [r.getMessage() for r in caplog.records if r.name == "distill.stage"]
    assert lines[0].startswith("stage prompts: started -> ") and lines[0].endswith("prompts")
    assert lines[1].startswith("stage prompts: done in ") and "8 rows in, 8 out -> " in lines[1]
    caplog.clear()
    run_pipeline(Run(load_recipe(small_recipe(cfg.parent, prompts__n_train=5)), run_dir), only="prompts")
    assert [r.getMessage().split(",")[0] for r in caplog.records if r.name == "distill.stage"] == ["stage prompts: reused"]


# --- on a whole run (the tiny run of conftest.py: a Prefect flow, every stage) ---------------------------------


@pytest.mark.slow
def test_status_of_a_finished_run_and_of_its_recipe_changed(tiny_run, capsys):
    run_dir, cfg = tiny_run["run_dir"], tiny_run["config"]
    rows = by_stage(stage_status(load_recipe(cfg), run_dir))
    assert all(r["state"] == "done" for r in rows.values()), rows
    assert all(r["rerun"] == "reuse" for label, r in rows.items() if label not in ("report", "publish"))
    assert rows["sample"]["rows_out"] and rows["sample"]["seconds"] is not None
    assert main(["status", str(run_dir)]) == 0  # the recipe.yaml the report stage wrote
    assert "a rerun redoes nothing" in capsys.readouterr().out
    changed = by_stage(stage_status(load_recipe(cfg, ["eval.k=3"]), run_dir))
    assert changed["eval"]["rerun"].startswith("redo: settings changed") and "eval.k: 2 -> 3" in changed["eval"]["rerun"]
    assert changed["sample"]["rerun"] == "reuse"


@pytest.mark.slow
def test_the_run_console_tells_the_story_and_prefect_keeps_the_same_lines(tiny_run):
    log = tiny_run["log"]
    for stage in ("prompts", "teacher", "sample", "verify", "curate", "select", "merge", "sft:tiny-student", "eval"):
        assert f"stage {stage}: started -> " in log and f"stage {stage}: done in " in log, stage
    assert "Disassembly of" not in log and "LOAD_GLOBAL" not in log
    assert "Finished in state Completed()" not in log  # Prefect's run-state lines stay in its UI
    assert not [line for line in log.splitlines() if line.startswith("{'loss'")]  # no metrics dict per step
    # the temporary server's database: the stage lines are in the flow runs' logs, and the status artifact
    db = sqlite3.connect(tiny_run["prefect_home"] / "prefect.db")
    messages = {m for (m,) in db.execute("select message from log")}
    assert any(m.startswith("stage sample: done in ") for m in messages)
    assert db.execute("select count(*) from artifact where key like '%-status'").fetchone()[0] >= 1
