"""Hub publishing: a dry run of a real (tiny) run writes exactly what a push would send, the cards load
and validate with huggingface_hub's card classes, the datasets load with `datasets`, and a canary token
planted in the environment appears in no output: logs, Prefect's database and results, artifacts, cards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import polars as pl
import pytest
from huggingface_hub import DatasetCard, ModelCard

from distill.publish.cards import NOT_RECORDED, model_card, provenance_sections, source_licences
from distill.publish.hub import PLAN, PublishError, publish, repo_ids
from distill.publish.safety import MARK
from distill.config.base import RecipeError
from distill.config.recipe import load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, cwd=REPO)


def test_publish_settings_are_validated():
    with pytest.raises(RecipeError, match="publish.dataset_repo"):
        recipe_from_dict({"name": "x", "publish": {"dataset_repo": "a/b/c"}})
    with pytest.raises(RecipeError, match="publish.token: unknown field"):
        recipe_from_dict({"name": "x", "publish": {"token": "hf_x"}})  # no place for a token in a recipe
    r = recipe_from_dict({"name": "x", "publish": {"dataset_repo": "org/ds", "model_repo_prefix": "org/m"}, "students": [{"name": "s1"}]})
    assert repo_ids(r) == {"reasoning": "org/ds-reasoning", "non-reasoning": "org/ds-non-reasoning", "merged": "org/ds-merged", "model:s1": "org/m-s1"}


def test_public_push_refused_while_a_source_licence_is_unknown(tmp_path):
    r = recipe_from_dict({"name": "x", "teacher": {"model": "someone/unknown-model"}, "publish": {"private": False}})
    with pytest.raises(PublishError, match="teacher model: someone/unknown-model"):
        publish(tmp_path, r, dry_run=True, out=tmp_path / "out")


def test_the_bundled_non_reasoning_file_has_a_known_licence():
    path = str(REPO / "data" / "non_reasoning.jsonl")
    r = recipe_from_dict({"name": "x", "merge": {"non_reasoning": [{"path": path}]}})
    assert source_licences(r)[f"non-reasoning data: {path}"] == "apache-2.0"


def test_cards_say_what_ran_from_the_manifests_not_the_recipe():
    """A recipe changed after the run (here: its sampling temperature, a student's LoRA rank) does not change
    what the cards say ran: that comes from report.json's copy of the stage manifests."""
    recipe = recipe_from_dict({"name": "x", "sampling": {"temperature": 0.2}, "students": [{"name": "s", "lora": {"r": 64}}]})
    report = {"recipe": {"name": "x", "hash": "abc"}, "teacher": {"base_model": "org/teacher", "trained": False}, "settings": {
        "sample": {"n": 4, "temperature": 0.9, "top_p": 0.95, "max_tokens": 256, "seed": 0, "engine": "vllm", "engine_library": {"vllm": "0.1"}},
        "verify": {"verifier": "code"}, "sft:s": {"model": "org/base", "lora": {"enabled": True, "r": 8}}}}
    text = provenance_sections(recipe, report)
    assert "temperature=0.9" in text and "temperature=0.2" not in text
    assert "| sampling engine | vllm (vllm 0.1) |" in text and "| verifier | code |" in text and "`org/teacher`" in text
    card = model_card(recipe, report, student="s", repo_ids={})
    assert "LoRA r=8" in card.text and card.data.base_model == "org/base"
    old = provenance_sections(recipe, {**report, "settings": {}})  # a run from before manifests kept settings
    assert f"| sampling settings | {NOT_RECORDED} |" in old and "temperature=0.2" not in old


@pytest.mark.slow
def test_dry_run_cards_validate_and_datasets_load(tiny_run, tmp_path):
    run_dir, out = tiny_run["run_dir"], tiny_run["publish_dir"]
    report = json.loads((run_dir / "report.json").read_text())
    plan = json.loads((out / PLAN).read_text())
    assert plan["revision"] == f"run-{report['recipe']['hash']}" and plan["private"] is True
    assert plan["token"] == "environment (HF_TOKEN)"
    kinds = {r["repo_id"]: r for r in plan["repos"]}
    assert set(kinds) == {"r1-distill-tests/tiny-reasoning", "r1-distill-tests/tiny-non-reasoning", "r1-distill-tests/tiny-merged", "r1-distill-tests/tiny-tiny-student"}

    # exactly the planned files on disk, nothing else
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {PLAN, MARK}  # MARK: which run, which files
    planned = {f"{r['path']}/{f}" for r in plan["repos"] for f in r["files"]}
    assert on_disk == planned

    merged = pl.read_parquet(run_dir / "sft_data" / "train.parquet")
    expected_rows = {"reasoning": report["stages"]["select"]["rows_out"], "non-reasoning": report["mix"]["non_reasoning_rows"], "merged": merged.height}
    for kind, rows in expected_rows.items():
        d = out / "datasets" / f"r1-distill-tests/tiny-{kind}"
        card = DatasetCard.load(d / "README.md", ignore_metadata_errors=False)
        assert card.data.license == "apache-2.0"  # every demo source is Apache-2.0
        assert card.data.configs == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train.parquet"}]}]
        assert card.data.pretty_name == f"tiny ({kind})" and "r1-distill" in card.data.tags
        for section in ("## Provenance", "## Funnel", "## Filter thresholds", "## Mix", "## Licences of the sources", "## Evaluation", "Eval manifest"):
            assert section in card.text, (kind, section)
        assert report["recipe"]["hash"] in card.text
        for reason, n in report["reject_reasons"].items():
            assert f"| {reason} | {n} |" in card.text
        assert "| min_target_lang_share | 0.9 |" in card.text
        assert f"{report['mix']['reasoning_rows']} reasoning and {report['mix']['non_reasoning_rows']} non-reasoning rows" in card.text
        assert "after minus before SFT" in card.text
        # what ran, from the sample stage's manifest (report.json's `settings`)
        assert "| sampling settings | n=3, temperature=0.6, top_p=0.95, max_tokens=24, seed=0 |" in card.text
        assert "| sampling engine | transformers (transformers " in card.text and report["settings"]["sample"]["engine"] == "transformers"
        assert "/tmp/" not in card.content and str(run_dir) not in card.content  # no machine paths
        # the card's config is what `datasets` reads: the folder loads as a dataset repo would
        # a cache of its own: datasets keys a local folder's cache by its name, so another run's tiny-reasoning (other rows) was reused
        ds = datasets.load_dataset(str(d), split="train", cache_dir=str(tmp_path / "datasets-cache"))
        assert len(ds) == rows == kinds[f"r1-distill-tests/tiny-{kind}"]["rows"]
    # no machine paths in published rows
    nr = pl.read_parquet(out / "datasets/r1-distill-tests/tiny-non-reasoning/data/train.parquet")
    assert nr.height and not any(str(s).startswith("/") for s in nr["source"])

    m = out / "models" / "r1-distill-tests/tiny-tiny-student"
    card = ModelCard.load(m / "README.md", ignore_metadata_errors=False)  # parses and validates model-index
    after = report["eval"]["student_after"]
    got = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert got == {"pass@1": after["pass@1"], "cons@2": after["cons@2"]}
    assert card.data.datasets == ["r1-distill-tests/tiny-merged"] and card.data.library_name == "transformers"
    assert card.data.base_model is None  # the tiny student's base is a local path, not a Hub id
    src = run_dir / "students" / "tiny-student" / "model"
    assert {p.name for p in src.iterdir()} | {"README.md"} == {p.name for p in m.iterdir()}
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(m).num_parameters() > 0


@pytest.mark.slow
def test_cli_dry_run_writes_the_same_files_as_the_pipeline_stage(tiny_run, tmp_path):
    out = tmp_path / "out"
    res = _cli("publish", "--dry-run", str(tiny_run["run_dir"]), str(out), env={"HF_TOKEN": tiny_run["canary"]})
    assert res.returncode == 0, res.stderr[-3000:]
    assert tiny_run["canary"] not in res.stdout + res.stderr
    a = json.loads((out / PLAN).read_text())
    b = json.loads((tiny_run["publish_dir"] / PLAN).read_text())
    strip = lambda plan: [(r["repo_id"], {f: v["sha256"] for f, v in r["files"].items() if f != "README.md"}) for r in plan["repos"]]  # noqa: E731
    assert strip(a) == strip(b)  # cards differ only in their library-version/creation lines, data and weights match


@pytest.mark.slow
def test_canary_token_appears_in_no_output(tiny_run, tmp_path):
    canary = tiny_run["canary"].encode()
    # a push attempt too (it cannot reach the Hub here): its error must not echo the token either
    pushed = _cli("publish", str(tiny_run["run_dir"]), env={"HF_TOKEN": tiny_run["canary"], "HF_HUB_OFFLINE": "1"})
    assert pushed.returncode == 2 and "pushing dataset r1-distill-tests/tiny-reasoning@run-" in pushed.stderr
    assert canary not in (pushed.stdout + pushed.stderr).encode()
    # every file the run, its Prefect flow (SQLite database: results, logs, artifacts) and the dry run wrote
    files = [p for p in tiny_run["root"].rglob("*") if p.is_file()]
    assert len(files) > 50
    assert any(p.suffix == ".db" for p in files), "Prefect's database should be among the scanned files"
    leaked = [str(p) for p in files if canary in p.read_bytes()]
    assert leaked == []
    assert tiny_run["canary"] not in tiny_run["log"]
    assert "environment (HF_TOKEN)" in tiny_run["log"]  # the run did see the token (it says where, not what)


def test_push_without_a_token_says_how_to_log_in(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))
    r = recipe_from_dict({"name": "x"})
    with pytest.raises(PublishError, match="HF_TOKEN or run `huggingface-cli login`"):
        publish(tmp_path, r, dry_run=False)


def test_every_recipe_publishes_privately_or_as_a_dry_run():
    recipes = sorted((REPO / "recipes").glob("*.yaml"))
    assert recipes
    for path in recipes:
        cfg = load_recipe(path).publish
        assert not cfg.enabled or cfg.dry_run or cfg.private, path
    assert load_recipe(REPO / "recipes" / "demo.yaml").publish.enabled
