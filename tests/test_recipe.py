import os
from pathlib import Path

import pytest

from distill.config.base import RecipeError
from distill.config.recipe import Recipe, load_recipe, pin_threads, recipe_from_dict

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def test_recipes_exist():
    names = {p.stem for p in RECIPES}
    assert len(RECIPES) >= 3 and "demo" in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    assert recipe.students and recipe.name


def test_unknown_field_names_field_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsampling:\n  temprature: 0.5\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(bad)
    assert "sampling.temprature" in str(e.value) and str(bad) in str(e.value)


def test_bad_value_names_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsampling:\n  n: 0\n")
    with pytest.raises(RecipeError, match=r"sampling\.n"):
        load_recipe(bad)


def test_unknown_trl_argument_is_rejected():
    with pytest.raises(RecipeError, match=r"students\.0\.training_args.*learning_rat"):
        recipe_from_dict({"name": "x", "students": [{"name": "s", "training_args": {"learning_rat": 1e-4}}]})
    with pytest.raises(RecipeError, match=r"teacher\.grpo\.training_args.*num_generatoins"):
        recipe_from_dict({"name": "x", "teacher": {"grpo": {"training_args": {"num_generatoins": 4}}}})


def test_overrides_are_typed_and_nested(tmp_path):
    r = recipe_from_dict({"name": "x", "students": [{"name": "s"}]}, overrides=["sampling.n=8", "sampling.temperature=0.9", "teacher.enabled=false", "students.0.name=s2"])
    assert r.sampling.n == 8 and r.sampling.temperature == 0.9 and r.teacher.enabled is False
    assert r.students[0].name == "s2"
    with pytest.raises(RecipeError, match="key=value"):
        recipe_from_dict({"name": "x"}, overrides=["sampling.n"])
    with pytest.raises(RecipeError, match="sampling.engine"):
        recipe_from_dict({"name": "x"}, overrides=["sampling.engine=sglang-turbo"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(p)


def test_section_hash_tracks_only_its_section():
    a = recipe_from_dict({"name": "x"})
    b = recipe_from_dict({"name": "x"}, overrides=["sampling.n=8"])
    assert a.section_hash("prompts") == b.section_hash("prompts")
    assert a.section_hash("sampling") != b.section_hash("sampling")


def test_duplicate_student_names_rejected():
    with pytest.raises(RecipeError, match="duplicate student"):
        recipe_from_dict({"name": "x", "students": [{"name": "a"}, {"name": "a"}]})


def test_exponent_numbers_are_floats_in_files_and_overrides(tmp_path):
    # PyYAML (YAML 1.1) reads `1e-5` as a string, which would reach TRL's optimizer as "1e-5".
    p = tmp_path / "r.yaml"
    p.write_text("name: x\nstudents:\n  - name: s\n    training_args: {learning_rate: 1e-5, weight_decay: 1.0e1}\n")
    args = load_recipe(p).students[0].training_args
    assert args["learning_rate"] == 1e-5 and isinstance(args["learning_rate"], float)
    assert args["weight_decay"] == 10.0
    r = recipe_from_dict({"name": "x", "students": [{"name": "s"}]}, overrides=["students.0.training_args.learning_rate=2e-4"])
    assert r.students[0].training_args["learning_rate"] == 2e-4
    # what is not a number stays a string, and quoting keeps one
    r = recipe_from_dict({"name": "x", "students": [{"name": "s"}]}, overrides=["name=1e5x", "description='1e-4'"])
    assert r.name == "1e5x" and r.description == "1e-4"


def test_pin_threads_sets_omp_only_when_the_recipe_says(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    pin_threads(recipe_from_dict({"name": "x", "students": [{"name": "s"}]}))
    assert os.environ["OMP_NUM_THREADS"] == "7"
    pin_threads(recipe_from_dict({"name": "x", "threads": 2, "students": [{"name": "s"}]}))
    assert os.environ["OMP_NUM_THREADS"] == "2"


@pytest.mark.parametrize("kind", ["sft", "grpo"])
def test_trainer_keys_read_from_trl_source_match_the_classes(kind):
    """The recipe checks training_args against TRL's config fields read from TRL's source (no torch import
    when a recipe loads); they must be exactly the dataclass fields of the real classes."""
    import dataclasses

    import trl

    from distill.config.trainer_keys import CLASSES, _class_fields

    module, name = CLASSES[kind]
    assert _class_fields(module, name) == {f.name for f in dataclasses.fields(getattr(trl, name))}


def test_loading_a_recipe_with_training_args_imports_no_model_stack():
    import subprocess
    import sys

    code = ("import sys; from distill.config.recipe import load_recipe; "
            "r = load_recipe('recipes/r1-distill-qwen2.5-math-7b.yaml'); "
            "print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
