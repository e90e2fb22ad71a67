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


# --- item 11: bad input files are one line naming the file, rc 2, nothing written ---------------------------

def _bad_inputs(d: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the one-line error must contain besides the file)."""
    import polars as pl

    good = {"id": "a", "prompt": "p", "completion": r"\boxed{1}", "answer": "1"}
    files = {
        "utf8": (d / "bad.jsonl", ":2: not valid UTF-8"),
        "mixed": (d / "mixed.jsonl", ":2: column 'answer' holds an object"),
        "deep": (d / "deep.jsonl", ":1: JSON nested too deeply"),
        "nested": (d / "nested.parquet", "column 'completion' holds List"),
        "corrupt": (d / "corrupt.parquet", "not a readable parquet file"),
    }
    files["utf8"][0].write_bytes(json.dumps(good).encode() + b'\n{"completion": "bad \xff\xfe", "answer": "1"}\n')
    files["mixed"][0].write_text(json.dumps(good) + "\n" + json.dumps({**good, "answer": {"a": 1}}) + "\n")
    files["deep"][0].write_text('{"completion": "x", "answer": "1", "d": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    pl.DataFrame({"id": ["a"], "prompt": ["p"], "completion": [["a", "b"]], "answer": ["1"]}).write_parquet(files["nested"][0])
    pl.DataFrame([good] * 50).write_parquet(d / "good.parquet")
    raw = (d / "good.parquet").read_bytes()
    files["corrupt"][0].write_bytes(raw[: len(raw) // 2] + b"\0" * 64 + raw[len(raw) // 2 + 64 :])
    return files


@pytest.mark.parametrize("case", ["utf8", "mixed", "deep", "nested", "corrupt"])
def test_verify_bad_input_is_one_line_naming_the_file(tmp_path, capsys, case):
    from distill.cli import main

    path, expected = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out" / "verified.parquet"
    assert main(["verify", "--input", str(path), "--output", str(out), "--verifier", "math"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"distill verify: error: {path}") and expected in err[-1], err[-3:]
    assert "Traceback" not in "\n".join(err) and not out.exists() and not out.parent.exists()


@pytest.mark.parametrize("case", ["nested", "corrupt", "utf8", "deep"])
def test_curate_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    from distill.cli import main

    path, expected = _bad_inputs(tmp_path)[case]
    out = tmp_path / "curated"
    assert main(["curate", "--input", str(path), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"distill curate: error: {path}") and expected in err[-1], err[-3:]
    assert not out.exists()


def _custom_code_model(d: Path) -> Path:
    """A local model folder whose config maps to its own Python file; running that file leaves a marker."""
    model = d / "custom-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "model_type": "distill-test-custom", "architectures": ["CustomModel"],
        "auto_map": {"AutoConfig": "configuration_custom.CustomConfig", "AutoModelForCausalLM": "modeling_custom.CustomModel"},
    }))
    code = f"import pathlib\npathlib.Path({str(d / 'CODE_RAN')!r}).write_text('ran')\n"
    (model / "configuration_custom.py").write_text(code)
    (model / "modeling_custom.py").write_text(code)
    return model


def test_resolving_a_custom_code_model_refuses_it_and_never_reads_stdin(tmp_path, monkeypatch):
    from distill.core.models import resolve_model

    class NoStdin:
        def __getattr__(self, name):
            raise AssertionError("stdin was used")

    monkeypatch.setattr(sys, "stdin", NoStdin())
    model = _custom_code_model(tmp_path)
    with pytest.raises(ValueError, match=r"custom-model: its config.json maps to Python files"):
        resolve_model(str(model))
    assert not (tmp_path / "CODE_RAN").exists()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "auto_map": {"AutoConfig": "x.Y"}}))
    assert resolve_model(str(model)) == str(model)  # a type transformers implements loads with its own code


@pytest.mark.slow
@pytest.mark.parametrize("stdin", ["open-pipe", "devnull"])
def test_custom_code_model_is_refused_without_asking_on_stdin(tmp_path, stdin):
    model = _custom_code_model(tmp_path)
    src = tmp_path / "rows.jsonl"
    src.write_text(json.dumps({"completion": r"\boxed{1}", "answer": "1"}) + "\n")
    cmd = [str(Path(sys.executable).with_name("distill")), "verify", "--input", str(src), "--output",
           str(tmp_path / "out.parquet"), "--verifier", "judge", "--judge-model", str(model), "--judge-engine", "transformers"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # stdin stays open and silent (a pipe nobody writes) or is /dev/null: either way nothing may wait on it
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin == "open-pipe" else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 2, err[-2000:]
    assert "[y/N]" not in out + err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"distill verify: error: model {model}")
    assert not (tmp_path / "CODE_RAN").exists() and not (tmp_path / "out.parquet").exists()
