"""`curate_file`'s three outputs as one unit: kept.parquet, rejected.parquet and funnel.json change together
or not at all, whenever the command is killed (SIGKILL included).

The output directory (what users read keeps its names; the three are relative symlinks, made once):

    kept.parquet      -> .curate-current/kept.parquet
    rejected.parquet  -> .curate-current/rejected.parquet
    funnel.json       -> .curate-current/funnel.json
    .curate-current   -> .curate-<16 hex>        the run whose outputs these are
    .curate-<16 hex>/                            that run's three files
    .curate-lock                                 held (shared) by every running curate into this directory

A run writes into its own `.curate-<id>.tmp/` (its spill files included), renames it `.curate-<id>`, then
replaces the `.curate-current` link with one rename(2): a reader sees the earlier run's three files or this
run's, never a mix. A killed run leaves only directories named `.curate-<id>[.tmp|.del]` that nothing points
to; the next run removes them (and the `.curate-XXXXXXXX.tmp` spill directories of earlier versions, which
hold only spill files) when no other curate holds the lock. Nothing else in the directory is touched.
Copy the directory with its hidden entries (`cp -a`, `rsync -a`), or copy the three files dereferenced
(`cp -L`). An output directory from before this layout (three regular files) is converted on the next run.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
from pathlib import Path

OUTPUTS = ("kept.parquet", "rejected.parquet", "funnel.json")
CURRENT = ".curate-current"
LOCK = ".curate-lock"
_RUN_DIR = re.compile(r"\.curate-[0-9a-f]{16}(\.tmp|\.del)?")
_TEMP_LINK = re.compile(r"\.curate-[0-9a-f]{16}\.(ptr|lnk-[a-z]+\.[a-z]+)")
_LEGACY_SPILL = re.compile(r"\.curate-[a-z0-9_]{8}\.tmp")  # tempfile.mkdtemp(prefix=".curate-", suffix=".tmp")
_LEGACY_FILES = re.compile(r"scores-\d{6}\.parquet|[a-z_]+-\d{6}\.npy")


def _remove(d: Path) -> None:
    """Rename first, so a removal killed half-way still carries a name `clean` recognises."""
    gone = d if d.name.endswith(".del") else d.with_name(d.name.removesuffix(".tmp") + ".del")
    if gone != d:
        os.rename(d, gone)
    shutil.rmtree(gone)


def clean(root: Path) -> list[str]:
    """Remove what killed runs left in `root` (the caller holds LOCK exclusively); return the names removed."""
    current = os.readlink(root / CURRENT) if (root / CURRENT).is_symlink() else None
    removed = []
    for p in sorted(root.iterdir()):
        real_dir = p.is_dir() and not p.is_symlink()
        if real_dir and _RUN_DIR.fullmatch(p.name) and p.name != current:
            _remove(p)
        elif p.is_symlink() and _TEMP_LINK.fullmatch(p.name):
            p.unlink()
        elif real_dir and _LEGACY_SPILL.fullmatch(p.name) and all(_LEGACY_FILES.fullmatch(f.name) for f in p.iterdir()):
            shutil.rmtree(p)
        else:
            continue
        removed.append(p.name)
    return removed


class OutputSet:
    """One run's outputs: write them under `self.dir`, then `commit()` (or `discard()`)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        for name in OUTPUTS:
            if (self.root / name).is_dir() and not (self.root / name).is_symlink():
                raise ValueError(f"{self.root / name} is a directory: curate writes a file there; choose another --output-dir")
        self._lock = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        self._tidy()
        fcntl.flock(self._lock, fcntl.LOCK_SH)  # other runs leave this run's directory alone
        self.name = f".curate-{secrets.token_hex(8)}"
        self.dir = self.root / f"{self.name}.tmp"
        self.dir.mkdir()
        self.spill = self.dir / "spill"
        self.spill.mkdir()
        self.published = False

    def _tidy(self) -> None:
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another curate is writing here: leave the clean-up to the last one
            return
        clean(self.root)

    def commit(self) -> None:
        shutil.rmtree(self.spill)
        for name in OUTPUTS:
            _fsync(self.dir / name)
        _fsync(self.dir)
        final = self.root / self.name
        os.rename(self.dir, final)
        self.dir = final
        ptr = self.root / f"{self.name}.ptr"
        os.symlink(self.name, ptr)
        os.replace(ptr, self.root / CURRENT)  # the one rename that publishes the three files
        self.published = True
        for name in OUTPUTS:  # fixed links through CURRENT: made once (or converting an old layout)
            link, want = self.root / name, f"{CURRENT}/{name}"
            if not (link.is_symlink() and os.readlink(link) == want):
                tmp = self.root / f"{self.name}.lnk-{name}"
                os.symlink(want, tmp)
                os.replace(tmp, link)
        _fsync(self.root)
        self._tidy()  # the previous run's directory, unless another run is still writing here
        self._release()

    def discard(self) -> None:
        try:
            if self.dir.exists() and not self.published:
                _remove(self.dir)
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
