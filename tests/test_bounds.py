"""Bounds on hostile input (issue 15 items 7 and 11): recipes and data files that used to expand to
gigabytes, hang or end in a traceback are refused with one line naming the file."""

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from distill.config.base import RecipeError
from distill.config.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]


def alias_bomb(levels: int = 9) -> str:
    """The billion-laughs recipe: 9 levels of 9 aliases each; ~650 bytes that copy to 9**9 strings."""
    lines = ['name: bomb', 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _cap_memory() -> None:  # the child may use 1.5 GiB at most: the old loader would have taken 3.6 GB
    resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))


def test_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())
    assert len(bomb.read_bytes()) < 700
    code = "import sys\nfrom distill.config.recipe import load_recipe\nfrom distill.config.base import RecipeError\n" \
           "try:\n    load_recipe(sys.argv[1])\nexcept RecipeError as e:\n    print(e)\n    sys.exit(3)\n"
    # In a child with its memory capped and a timeout, so that a regression fails instead of eating the machine.
    p = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, timeout=120,
                       preexec_fn=_cap_memory, cwd=REPO)
    assert p.returncode == 3, p.stderr[-2000:]
    assert str(bomb) in p.stdout and "line 2" in p.stdout and "anchors and aliases" in p.stdout


def test_any_anchor_or_alias_is_refused(tmp_path):
    p = tmp_path / "small.yaml"
    p.write_text("name: x\nsampling: &s\n  n: 2\n")  # an anchor alone, no alias
    with pytest.raises(RecipeError, match=r"small\.yaml: line 2: YAML anchors and aliases"):
        load_recipe(p)
    p.write_text("name: x\nsampling: &s {n: 2}\nverify: *s\n")
    with pytest.raises(RecipeError, match="anchors and aliases"):
        load_recipe(p)


def test_deeply_nested_recipe_is_an_error_not_a_traceback(tmp_path):
    p = tmp_path / "deep.yaml"
    p.write_text("name: x\ndescription: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(RecipeError, match=r"deep\.yaml"):
        load_recipe(p)
