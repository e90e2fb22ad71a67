"""The field names of TRL's SFTConfig / GRPOConfig, read from TRL's source without importing it.

`import trl` pulls in torch and transformers (about 5 s and 450 MB); loading a recipe only needs the names
of the config dataclasses' fields, to refuse a typo in `training_args`. They are read here with `ast` from
the installed files (the class, then its bases through the imports of each module), and the real import is
the fallback wherever the source does not read that way. tests/test_recipe.py checks that both agree.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
from functools import lru_cache
from pathlib import Path

CLASSES = {"sft": ("trl.trainer.sft_config", "SFTConfig"), "grpo": ("trl.trainer.grpo_config", "GRPOConfig")}
# where a base class imported from a package's lazy __init__ is defined
DEFINED_IN = {("transformers", "TrainingArguments"): "transformers.training_args"}


def _source(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module.split(".")[0])
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*module.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _class_fields(module: str, name: str, depth: int = 0) -> set[str] | None:
    """Annotated class-body names of `module.name` and of its bases, or None where the source is unclear."""
    path = _source(module)
    if depth > 8 or path is None or not path.is_file():
        return None
    tree = ast.parse(path.read_text(encoding="utf-8"))
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    if cls is None:
        return None
    out = {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
           and "ClassVar" not in ast.unparse(n.annotation)}
    imports = {a.asname or a.name: (n.level, n.module, a.name) for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    for base in cls.bases:
        if not isinstance(base, ast.Name) or base.id == "object":
            return None
        if base.id in imports:
            level, mod, real = imports[base.id]
            if level:
                mod = ".".join(module.split(".")[:-level] + ([mod] if mod else []))
            mod = DEFINED_IN.get((mod, real), mod)
            inherited = _class_fields(mod, real, depth + 1)
        else:
            inherited = _class_fields(module, base.id, depth + 1)
        if inherited is None:
            return None
        out |= inherited
    return out


@lru_cache(maxsize=None)
def trainer_fields(kind: str) -> frozenset[str]:
    """Field names of TRL's config class for `kind` ("sft" or "grpo")."""
    module, name = CLASSES[kind]
    found = _class_fields(module, name)
    if found:
        return frozenset(found)
    import trl  # the slow, sure path: only where TRL's source does not read as expected

    return frozenset(f.name for f in dataclasses.fields(getattr(trl, name)))
