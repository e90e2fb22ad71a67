"""What a publish may touch: the dry run's OUT directory and the files of a student's checkpoint.

A dry run never deletes what it did not write. OUT must be new, empty, or a previous dry run of this same
run: every dry run leaves `MARK` in OUT, naming the run directory (resolved) and listing every file it
wrote, and a rerun replaces only those files (any other file in OUT refuses the run). OUT may not contain
the run directory (`OUT = RUN`, `publish --dry-run . .`) nor lie inside it, except `RUN/publish`, the
default. Paths are compared with symlinks resolved. A dry run from before MARK is recognised only in RUN/publish
and only when its files are exactly those its publish_plan.json lists. The files are staged in `.<OUT>.dry-run.tmp` beside OUT
and renamed into place at the end, so a killed dry run leaves OUT as it was (the next one removes the
staging directory: it holds `MARK` naming this run).

A checkpoint's files are published as regular files; a symlink in the model directory is followed only
to a file inside that directory (anything else is refused, so a link cannot publish or hash a file from
elsewhere on the machine).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from distill.core.storage import read_json, write_json

MARK = ".distill-dry-run.json"  # in a dry run's OUT: the run it was made from and the files it wrote
PLAN = "publish_plan.json"  # beside the repo folders in a dry run; not pushed


class PublishError(RuntimeError):
    """A run that cannot be published as asked; the message says what is missing."""


def _owned_by(d: Path, run: Path) -> dict | None:
    mark = read_json(d / MARK) if (d / MARK).is_file() and not (d / MARK).is_symlink() else None
    return mark if isinstance(mark, dict) and mark.get("run_dir") == str(run) else None


def _legacy(d: Path) -> dict | None:
    """A dry run from before MARK, in its default place RUN/publish: its files are exactly its plan's."""
    plan = read_json(d / PLAN) if (d / PLAN).is_file() else None
    try:
        files = [f"{r['path']}/{f}" for r in plan["repos"] for f in r["files"]] + [PLAN]
    except (TypeError, KeyError):
        return None
    on_disk = {str(p.relative_to(d)) for p in _entries(d)}
    return {"files": files} if on_disk == set(files) else None


def _entries(d: Path) -> list[Path]:
    """Every file and symlink under `d` (symlinked directories are not entered)."""
    return [p for p in d.rglob("*") if p.is_symlink() or not p.is_dir()]


def _empty(d: Path, files: list[Path]) -> None:
    for p in files:
        p.unlink()
    for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        sub.rmdir()


def check_out(run_dir: Path, out: Path) -> tuple[Path, Path]:
    """Refuse an OUT the dry run may not write; return (resolved OUT, its staging directory), the latter
    new and empty (a stale one of this run is removed)."""
    run, dst = Path(run_dir).resolve(), Path(out).resolve()
    if dst == run or run.is_relative_to(dst):
        raise PublishError(f"refusing a dry run into {out}: it is or contains the run directory {run_dir}; choose a directory outside the run")
    if dst.is_relative_to(run) and dst != run / "publish":
        raise PublishError(f"refusing a dry run into {out}: it is inside the run directory {run_dir}; use {Path(run_dir) / 'publish'} "
                           "(the default) or a directory outside the run")
    if dst.exists() and not dst.is_dir():
        raise PublishError(f"refusing a dry run into {out}: it is a file, not a directory")
    if dst.is_dir() and any(dst.iterdir()):
        mark = _owned_by(dst, run) or (_legacy(dst) if dst == run / "publish" else None)
        if mark is None:
            raise PublishError(f"refusing a dry run into {out}: it is not empty and is not a dry run of {run_dir} (no {MARK} naming "
                               "this run); choose a new or empty directory")
        extra = sorted(str(p.relative_to(dst)) for p in _entries(dst)) if mark.get("files") is None else \
            sorted(set(str(p.relative_to(dst)) for p in _entries(dst)) - set(mark["files"]) - {MARK})
        if extra:
            raise PublishError(f"refusing to replace the dry run in {out}: it holds files the dry run did not write "
                               f"({', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}); move them away first")
    staging = dst.parent / f".{dst.name}.dry-run.tmp"
    if staging.is_symlink() or staging.exists():
        if staging.is_symlink() or not staging.is_dir() or _owned_by(staging, run) is None:
            raise PublishError(f"refusing a dry run into {out}: {staging} exists and is not this run's staging directory")
        shutil.rmtree(staging)  # a killed dry run of this run
    staging.mkdir(parents=True)
    write_json(staging / MARK, {"run_dir": str(run), "files": None})  # ours from the start; `files` when complete
    return dst, staging


def commit_out(run_dir: Path, dst: Path, staging: Path) -> None:
    """Replace OUT's previous dry run (checked by `check_out`) with the staged one."""
    files = sorted(str(p.relative_to(staging)) for p in _entries(staging) if p.name != MARK or p.parent != staging)
    write_json(staging / MARK, {"run_dir": str(Path(run_dir).resolve()), "files": files})
    if dst.is_dir():
        _empty(dst, _entries(dst))  # only the previous dry run's files are there (check_out)
        dst.rmdir()
    os.rename(staging, dst)


def model_files(src: Path, student: str) -> list[tuple[Path, Path]]:
    """(file to read, path in the repo) for every file of a checkpoint directory. A symlink is followed only
    to a regular file inside the directory; a symlink to anything else, or to a directory, is refused."""
    root = src.resolve()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):  # symlinked directories are listed, not entered
        d = Path(dirpath)
        for name in sorted(dirnames + filenames):
            p = d / name
            if p.is_symlink():
                target = p.resolve()
                if not target.is_relative_to(root) or not target.is_file():
                    raise PublishError(f"cannot publish student {student!r}: {p} is a symlink to {target}, which is not a file inside "
                                       f"the model directory {src}; replace the link by the file")
                found.append((target, p.relative_to(root)))
            elif name in filenames and p.is_file():
                found.append((p, p.relative_to(root)))
    return sorted(found, key=lambda f: str(f[1]))
