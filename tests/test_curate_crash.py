"""issue 15, items 4 and 5: `distill curate` (file mode) killed at any moment loses and mixes nothing, cleans
what killed runs left, leaves no worker behind; file-mode commands never read their own outputs.

Each test fails on 5639c99: there kept.parquet, rejected.parquet and funnel.json were replaced one by one
in place, a killed run's `.curate-*.tmp` spill directory stayed forever, spawned workers outlived a killed
parent, and an output directory equal to the input directory was read back as input on the next run.
The random-moment SIGKILL check (10 kills, 200k rows) is scripts/curate_kill.py; the slow test here runs it
on 25k rows with 6 kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from curate_kill import alive, descendants, traces  # noqa: E402  (scripts/ is not a package)

from distill.cli import main  # noqa: E402

# runs `distill <args>`, SIGKILLing itself right after the first os.replace onto a path named argv[1]
KILL_AFTER_REPLACE = """
import os, signal, sys
from pathlib import Path
replace = os.replace
def kill_after(src, dst, *a, **k):
    replace(src, dst, *a, **k)
    if Path(dst).name == sys.argv[1]:
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = kill_after
from distill.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _curate(src: Path, out: Path, kill_after: str | None = None) -> int:
    """`distill curate` file mode: in this process, or in a child that SIGKILLs itself after `kill_after`."""
    args = ["curate", "--input", str(src), "--output-dir", str(out)]
    if kill_after is None:
        return main(args)
    return subprocess.run([sys.executable, "-c", KILL_AFTER_REPLACE, kill_after, *args], capture_output=True, timeout=300,
                          env=_env(), cwd=REPO).returncode


def _outputs(out: Path) -> tuple[list, list, dict]:
    funnel = json.loads((out / "funnel.json").read_text())
    return (pl.read_parquet(out / "kept.parquet")["id"].to_list(), pl.read_parquet(out / "rejected.parquet")["id"].to_list(),
            {k: funnel[k] for k in ("rows_in", "kept", "rejected", "reasons")})


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    traces(40).write_parquet(a)
    traces(70).write_parquet(b)  # another input: every output differs from a's
    return a, b


# --- item 4: the three outputs change together -----------------------------------------------------


@pytest.mark.parametrize("kill_after", ["kept.parquet", "rejected.parquet", ".curate-current"])
def test_a_kill_while_publishing_never_mixes_two_runs(tmp_path, kill_after):
    """The issue's case: SIGKILL just after kept.parquet is replaced. The directory then holds run a's three
    outputs or run b's, never b's kept beside a's rejected and funnel; the rerun gives b's and cleans up."""
    a, b = _inputs(tmp_path)
    out = tmp_path / "out"
    assert _curate(a, out) == 0
    first = _outputs(out)
    assert _curate(b, out, kill_after=kill_after) == -signal.SIGKILL
    state = _outputs(out)
    assert state[2]["rows_in"] == len(state[0]) + len(state[1]) == state[2]["kept"] + state[2]["rejected"]
    assert state == first or state[2]["rows_in"] == 70
    assert _curate(b, out) == 0
    again = _outputs(out)
    assert again[2]["rows_in"] == 70 and again != first
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".curate-") and p.name != ".curate-lock") == \
        sorted([".curate-current", os.readlink(out / ".curate-current")])


def test_a_kill_on_the_first_run_leaves_no_partial_output(tmp_path):
    a, _ = _inputs(tmp_path)
    out = tmp_path / "out"
    assert _curate(a, out, kill_after="kept.parquet") == -signal.SIGKILL
    assert not any((out / n).exists() for n in ("kept.parquet", "rejected.parquet", "funnel.json"))
    assert _curate(a, out) == 0 and _outputs(out)[2]["rows_in"] == 40


def test_stale_temporary_directories_are_cleaned_and_nothing_else(tmp_path):
    a, _ = _inputs(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    legacy = out / ".curate-ab12cd_9.tmp"  # a spill directory left by a killed run of an earlier version
    legacy.mkdir()
    (legacy / "scores-000000.parquet").write_bytes(b"x")
    (legacy / "sigs-000001.npy").write_bytes(b"x")
    mine = out / ".curate-notes.tmp"  # a user's directory with a similar name: not ours, not touched
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    other = out / ".curate-zz12cd_9.tmp"  # the spill name pattern, but a file curate never writes
    other.mkdir()
    (other / "thesis.tex").write_text("keep")
    assert _curate(a, out, kill_after="kept.parquet") == -signal.SIGKILL  # leaves its own .tmp
    assert [p.name for p in out.glob(".curate-*.tmp") if p.name not in (legacy.name, mine.name, other.name)]
    assert _curate(a, out) == 0
    assert not legacy.exists() and (mine / "notes.txt").read_text() == "keep" and (other / "thesis.tex").read_text() == "keep"
    assert sorted(p.name for p in out.glob(".curate-*.tmp")) == sorted([mine.name, other.name])


def test_an_output_dir_of_the_old_layout_is_converted(tmp_path):
    """Three regular files from an earlier version become links to this run's files; nothing else changes."""
    a, b = _inputs(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    for name in ("kept.parquet", "rejected.parquet", "funnel.json"):
        (out / name).write_text("old")
    (out / "notes.txt").write_text("mine")
    assert _curate(b, out) == 0
    assert _outputs(out)[2]["rows_in"] == 70 and (out / "notes.txt").read_text() == "mine"
    assert all(os.readlink(out / n) == f".curate-current/{n}" for n in ("kept.parquet", "rejected.parquet", "funnel.json"))


WORKERS_RUN = """
import sys
from pathlib import Path
from filters.curate import curate_file
curate_file(Path(sys.argv[1]), Path(sys.argv[2]), batch_rows=20, workers=2)
"""


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:  # gone
        return ""


@pytest.mark.slow  # ~5 s alone; minutes on a loaded machine
def test_workers_die_with_a_killed_parent(tmp_path):
    src = tmp_path / "in.parquet"
    traces(4000).write_parquet(src)
    p = subprocess.Popen([sys.executable, "-c", WORKERS_RUN, str(src), str(tmp_path / "out")], env=_env(), cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: dict[int, str] = {}
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and p.poll() is None:  # until both workers are scoring
            seen |= descendants(p.pid)
            if sum("spawn_main" in _cmdline(pid) for pid in seen) >= 2:
                time.sleep(0.5)
                break
            time.sleep(0.05)
        assert p.poll() is None, "the run ended before its workers were seen"
        seen |= descendants(p.pid)
        p.send_signal(signal.SIGKILL)
        p.wait()
        t0 = time.monotonic()
        while alive(seen) and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        assert alive(seen) == [], f"{len(alive(seen))} of the killed run's {len(seen)} processes still run 10 s later"
    finally:
        for pid in alive(seen):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_random_sigkills_then_reruns_equal_an_uninterrupted_run(tmp_path):
    """scripts/curate_kill.py on 25k rows (more than two batches: worker processes run), 6 random kills; the
    issue's 200k rows and 10 kills take ~10 min here: run the script (numbers in its output)."""
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "curate_kill.py"), "--rows", "25000", "--kills", "6",
                          "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=900, env=_env(), cwd=REPO)
    report = json.loads(res.stdout)
    assert res.returncode == 0 and report["failures"] == [], report
    assert any(k["processes_seen"] for k in report["kills"])  # some kills hit a run with its workers up
    assert all(k["orphans"] == 0 and k["same"] and k["leftovers"] == 0 for k in report["kills"])


# --- item 5: file-mode commands never read their own outputs ----------------------------------------


def test_curate_refuses_an_output_dir_equal_to_or_inside_the_input_dir(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    traces(30).write_parquet(data / "shard-0.parquet")
    for out in (data, data / "curated", tmp_path / "link"):
        if out.name == "link":
            out.symlink_to(data)
        assert _curate(data, out) == 2
        err = capsys.readouterr().err
        assert "--output-dir" in err and "input directory" in err or "same path" in err, err
    assert sorted(p.name for p in data.iterdir()) == ["shard-0.parquet"]  # nothing written
    assert _curate(data, tmp_path / "curated") == 0 and _curate(data, tmp_path / "curated") == 0  # outside: a rerun reads the same rows
    assert _outputs(tmp_path / "curated")[2]["rows_in"] == 30


def test_verify_refuses_an_output_inside_its_input(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    pl.DataFrame({"id": ["a"], "prompt": ["1+1?"], "completion": ["\\boxed{2}"], "answer": ["2"]}).write_parquet(data / "s.parquet")
    for src, output, says in ((data, data / "verified.parquet", "inside the input directory"), (data, data, "same path"),
                              (data / "s.parquet", data / "s.parquet", "same path")):
        assert main(["verify", "--input", str(src), "--output", str(output)]) == 2
        err = capsys.readouterr().err
        assert "--output" in err and says in err, err
    assert sorted(p.name for p in data.iterdir()) == ["s.parquet"]
