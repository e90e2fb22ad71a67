"""A run directory and the reuse of its stages: `Run.stage` runs a stage's body unless a manifest with the
same fingerprint is there, and writes the manifest when it finishes.

A stage's fingerprint is a hash of its settings and its inputs' fingerprints, so a rerun skips finished
stages, and a changed setting reruns that stage and everything downstream of it, nothing upstream. The
stages themselves are in distill/stage_fns.py, their order in distill/stages.py.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import yaml

from distill.core.progress import stage_started
from distill.core.storage import atomic_path, fingerprint, is_done, read_json, write_json, write_manifest

log = logging.getLogger(__name__)

STARTED = "_started.json"


class Run:
    """A recipe (distill.config.recipe.Recipe) and the directory its stages write into."""

    def __init__(self, recipe, run_dir: str | Path | None = None, sampler: Callable[..., dict] | None = None):
        self.recipe = recipe
        # one sampling pass in place of this machine's workers, same signature as sample.generate_traces
        # less `rank`/`world_size` (flows/ray_sampling.py maps the shards over a Ray cluster)
        self.sampler = sampler
        # absolute, so manifests and Prefect results name the same files from any working directory
        self.dir = (Path(run_dir) if run_dir else recipe.resolved_run_dir()).resolve()

    def save_recipe(self) -> Path:
        """The resolved recipe beside the run's outputs, written when the run starts and again by the report:
        what `distill status` compares with (a killed run has it too) and `distill publish` builds cards from."""
        path = self.dir / "recipe.yaml"
        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(self.recipe.model_dump(mode="json"), sort_keys=False))
        return path

    # One process runs a stage here. DistributedRun (distill/launch.py) runs its body on every process
    # of an `accelerate launch` and overrides these three: only the main one touches the stage directory.
    distributed = False  # True in a launched process: its stages never launch again
    def is_main_process(self) -> bool:
        return True

    def wait_for_everyone(self) -> None:
        pass

    def manifest_extras(self) -> dict[str, Any]:
        return {}

    def stage(self, name: str, subdir: str, settings: Any, inputs: list[dict], body: Callable[[Path], dict],
              launch: Callable[[], None] | None = None) -> dict:
        """Run `body(stage_dir)` unless a manifest with the same fingerprint exists; write the manifest.

        `launch`: run the stage in other processes instead (`accelerate launch`, which runs this same stage
        with a DistributedRun and writes its manifest); this waits for them and returns that manifest."""
        stage_dir = self.dir / subdir
        fp = fingerprint(name, settings, [m["fingerprint"] for m in inputs])
        done = is_done(stage_dir, fp)
        if done:
            log.debug("stage %s: reusing %s (fingerprint %s)", name, stage_dir, fp)  # the pipeline's stage line says it
            return {**done, "cached": True}
        if launch is not None:
            launch()
            done = is_done(stage_dir, fp)
            if not done:
                raise RuntimeError(f"stage {name}: the launched processes finished without a manifest in {stage_dir}")
            return {**done, "cached": False}
        if self.is_main_process():
            started = read_json(stage_dir / STARTED)
            if started and started.get("fingerprint") != fp:
                # partial or finished work for other settings: it no longer describes this recipe
                log.info("stage %s: settings changed, clearing %s", name, stage_dir)
                shutil.rmtree(stage_dir)
            stage_dir.mkdir(parents=True, exist_ok=True)
            # who runs it: `distill status` tells a live stage (this pid on this host) from a killed one
            write_json(stage_dir / STARTED, {"fingerprint": fp, "pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time()})
        self.wait_for_everyone()
        if self.is_main_process():
            stage_started(name, stage_dir)
        t0 = time.perf_counter()
        info = body(stage_dir)
        seconds = round(time.perf_counter() - t0, 1)
        manifest = {"fingerprint": fp, **info}
        if self.is_main_process():
            manifest = write_manifest(stage_dir, fp, stage=name, seconds=seconds, **self.manifest_extras(), **info)
        self.wait_for_everyone()
        return {**manifest, "cached": False}


def model_label(kind: str, manifest: dict) -> str:
    """A label that changes whenever the model's producing stage does (sample ids depend on it)."""
    return f"{kind}@{manifest['fingerprint']}"


Call = Callable[..., dict]


def call_directly(name: str, fn: Callable[..., dict], *args) -> dict:
    """The pipeline's `call` in one process: `fn(*args)` (flows/ runs each stage as a Prefect task instead)."""
    return fn(*args)


def installed_versions(*dists: str) -> dict[str, str]:
    """Installed versions of these distributions (those not installed left out), for manifests and cards."""
    out = {}
    for name in dists:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
