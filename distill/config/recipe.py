"""The recipe: one validated object for the whole pipeline, loaded from YAML with key=value overrides.

Each stage's section is its own module in distill/config/ (see base.py for what they share); this one
assembles them into `Recipe`, and reads, overrides and validates recipe files.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from distill.config.base import RecipeError, Section, duplicates
from distill.config.curate import CurateConfig
from distill.config.eval import EvalConfig
from distill.config.merge import MergeConfig
from distill.config.names import SafeName
from distill.config.prompts import PromptsConfig
from distill.config.publish import PublishConfig
from distill.config.rewards import REWARD_NAMES
from distill.config.sampling import SamplingConfig
from distill.config.students import StudentConfig
from distill.config.teacher import TeacherConfig
from distill.config.verify import VerifyConfig
from distill.core.threads import choose_threads


class Recipe(Section):
    name: SafeName  # one path component: runs/<name> stays under runs/ (distill/config/names.py)
    description: str = ""
    run_dir: str | None = None  # default: runs/<name>
    seed: int = 0
    threads: int | None = Field(None, ge=1)  # OMP/torch threads; default: every usable core, waiting passively (core/threads.py)
    prompts: PromptsConfig = PromptsConfig()
    teacher: TeacherConfig = TeacherConfig()
    sampling: SamplingConfig = SamplingConfig()
    verify: VerifyConfig = VerifyConfig()
    curate: CurateConfig = CurateConfig()
    merge: MergeConfig = MergeConfig()
    students: list[StudentConfig] = Field(default_factory=lambda: [StudentConfig(name="student")])
    eval: EvalConfig = EvalConfig()
    publish: PublishConfig = PublishConfig()

    @field_validator("students")
    @classmethod
    def _unique_students(cls, v: list[StudentConfig]) -> list[StudentConfig]:
        dup = duplicates(s.name for s in v)
        if dup:
            raise ValueError(f"duplicate student name(s): {', '.join(dup)}")
        return v

    @model_validator(mode="after")
    def _eval_teacher(self) -> "Recipe":
        # eval.include_teacher unset: score the teacher only when the pipeline trains it (not a 671B R1 as-is)
        if self.eval.include_teacher is None:
            self.eval.include_teacher = self.teacher.enabled
        return self

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name

    def section_hash(self, *keys: str) -> str:
        """Hash of the named sections' settings: what a stage's cache key is made of."""
        data = self.model_dump(mode="json")
        picked = {k: data[k] for k in keys}
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]

    def recipe_hash(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that reads numbers like YAML 1.2: `1e-5` and `1.0e5` are floats.

    PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent, so `learning_rate: 1e-5`
    would arrive as the string "1e-5" and fail deep inside the trainer instead of meaning 0.00001.

    Anchors and aliases (`&a` / `*a`) are refused: recipes do not need them, and a few hundred bytes of
    nested aliases expand to gigabytes once the recipe is copied (the alias bomb, "billion laughs").
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise AliasRefused(event.start_mark.line + 1)
        return super().compose_node(parent, index)


class AliasRefused(yaml.YAMLError):
    """A YAML anchor or alias in recipe text (see _RecipeLoader)."""

    def __init__(self, line: int):
        super().__init__(f"line {line}: YAML anchors and aliases (&name / *name) are not allowed in a recipe")


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    """Parse recipe YAML (safe, with YAML 1.2 floats)."""
    return yaml.load(text, Loader=_RecipeLoader)


def pin_threads(recipe: "Recipe") -> None:
    """Set OMP_NUM_THREADS (the recipe's `threads`, else the environment's, else every usable core) and a
    passive OpenMP wait policy, before torch starts its pools: see distill/core/threads.py."""
    choose_threads(recipe.threads)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a","b","c"], value), the value parsed as YAML (numbers, bools, lists)."""
    if "=" not in item:
        raise RecipeError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise RecipeError(f"override {item!r} has an empty key")
    try:
        value = read_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise RecipeError(f"override {item!r}: value is not valid YAML: {e}") from e
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list):
                try:
                    node = node[int(part)]
                except (ValueError, IndexError):
                    raise RecipeError(f"override {item!r}: no list item {part!r} at {'.'.join(path[:i])}")
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, (dict, list)):
                    raise RecipeError(f"override {item!r}: {'.'.join(path[: i + 1])} is not a section")
        last = path[-1]
        if isinstance(node, list):
            try:
                node[int(last)] = value
            except (ValueError, IndexError):
                raise RecipeError(f"override {item!r}: no list item {last!r}")
        else:
            node[last] = value
    return data


def _field_path(loc: tuple[Any, ...]) -> str:
    """The dotted field, without the tag pydantic adds after a reward's index (rewards.0.length.options)."""
    parts = [p for i, p in enumerate(loc)
             if not (i >= 2 and loc[i - 2] == "rewards" and isinstance(loc[i - 1], int) and p in REWARD_NAMES)]
    return ".".join(str(p) for p in parts) or "(top level)"


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc, msg = _field_path(e["loc"]), e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "union_tag_invalid":  # a reward `name` that is none of the rewards
            msg = f"unknown {e['ctx']['discriminator'].strip(chr(39))} {e['ctx']['tag']!r} (known: {e['ctx']['expected_tags']})"
        elif e["type"] == "union_tag_not_found":
            loc, msg = f"{loc}.{e['ctx']['discriminator'].strip(chr(39))}", "Field required"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def recipe_from_dict(data: dict[str, Any], source: str = "<dict>", overrides: list[str] | None = None) -> Recipe:
    data = apply_overrides(json.loads(json.dumps(data)), overrides or [])
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(f"invalid recipe {source}:\n{_format_errors(e)}") from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        data = read_yaml(path.read_text()) or {}
    except AliasRefused as e:
        raise RecipeError(f"recipe {path}: {e}") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path} is not valid YAML: {e}") from None
    except RecursionError:  # the composer recurses once per level: `[[[[...` thousands deep
        raise RecipeError(f"recipe {path}: nested too deeply to be a recipe") from None
    except UnicodeDecodeError as e:
        raise RecipeError(f"recipe {path}: not UTF-8 text (byte {e.start})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path}: top level must be a mapping, got {type(data).__name__}")
    return recipe_from_dict(data, source=str(path), overrides=overrides)
