"""`distill status RUN_DIR`: where a run stands, stage by stage, from its directory alone (no Prefect, no model).

For each stage call of the recipe (distill/stages.py's table): done, running, crashed (started, not finished,
no live process behind it) or not started; rows in and out, seconds, device-hours and cost so far; and what
a rerun of the recipe would redo, and why. A stage is reused when its manifest's fingerprint equals the one
the recipe yields now (distill.core.run.Run.stage); the expected fingerprints are computed by walking the
stage functions with a Run whose `stage` only fingerprints (`_Probe`), so they are the pipeline's own.

Device-hours: the accelerators a stage holds (the table's `gpus`) x its seconds; the sample stage's come
from its generation ledger (engine time and starts, counted even for a killed run). Cost: device-hours x
`sampling.cost.gpu_hour_usd` (the recipe's one price per GPU-hour), plus API tokens for sampling.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import polars as pl

from distill.config.recipe import Recipe, load_recipe
from distill.core.progress import shown_path
from distill.core.run import STARTED, Run
from distill.core.storage import fingerprint, read_json, read_manifest
from distill.generation.ledger import LEDGER_PREFIX, accounting, read_ledger
from distill.stages import BY_NAME, STAGES, schedule, stage_args

# the recipe section each stage's manifest `settings` mirror, to name what changed
SECTIONS = {"prompts": "prompts", "teacher": "teacher", "sample": "sampling", "verify": "verify", "curate": "curate",
            "select": "sampling.rejection", "merge": "merge", "eval": "eval"}
ALWAYS = {"report": "always rewritten (cheap)", "publish": "always (publishes the run as it is)"}


class _Probe(Run):
    """A Run whose stages are fingerprinted, never run: `stage` records (subdir, fingerprint) and returns the
    stored manifest under the expected fingerprint, so downstream stages fingerprint as the pipeline would."""

    distributed = True  # stage functions ask no launcher (and so no CUDA) where a stage would train

    def __init__(self, recipe: Recipe, run_dir: str | Path):
        super().__init__(recipe, run_dir)
        self.expected: dict[str, tuple[str, str]] = {}

    def stage(self, name, subdir, settings, inputs, body, launch=None) -> dict:
        fp = fingerprint(name, settings, [m["fingerprint"] for m in inputs])
        self.expected[name] = (subdir, fp)
        return {**(read_manifest(self.dir / subdir) or {}), "fingerprint": fp}


def expected_fingerprints(recipe: Recipe, run_dir: str | Path) -> dict[str, tuple[str, str]]:
    """label -> (stage subdir, fingerprint the recipe yields now) for every stage that keeps a manifest."""
    probe = _Probe(recipe, run_dir)
    manifests: dict[str, dict] = {}
    for st, label, student in schedule(recipe):
        if label in ALWAYS:
            manifests[label] = {"fingerprint": ""}
            continue
        manifests[label] = st.fn(probe, *stage_args(st, recipe, manifests, student))
    return probe.expected


def _alive(owner: dict) -> bool | None:
    """Whether the process that started a stage still runs: None when it ran on another host (unknown)."""
    pid, host = owner.get("pid"), owner.get("host")
    if not pid:
        return False
    if host and host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")  # a zombie (exited, not yet reaped) is not running the stage
    return not (stat.is_file() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


def _partial_rows(stage_dir: Path) -> tuple[int, int]:
    """(parquet files, rows) a stage has written so far (sampling's shards): footers only, no data read."""
    files = [p for p in stage_dir.glob("*.parquet") if not p.name.startswith(".")]
    rows = 0
    for p in files:
        try:
            rows += pl.scan_parquet(p).select(pl.len()).collect().item()
        except Exception:  # noqa: BLE001 - a shard being written or torn by a kill: not counted
            continue
    return len(files), rows


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: d}


def changed_settings(recipe: Recipe, label: str, manifest: dict, most: int = 4) -> tuple[list[str], list[str]]:
    """(`section.key: old -> new` for recipe values that differ from what the stage's manifest ran with,
    `section.key: new field (value)` for values the run's recipe did not have: a newer version's defaults)."""
    name, _, student = label.partition(":")
    if student:
        now: Any = next((s.model_dump(mode="json") for s in recipe.students if s.name == student), {})
        section = f"students[{student}]"
    elif name in SECTIONS:
        now = recipe.model_dump(mode="json")
        for part in SECTIONS[name].split("."):
            now = now.get(part, {})
        section = SECTIONS[name]
    else:
        return [], []
    old, new = _flat(manifest.get("settings") or {}), _flat(now)
    changed = [f"{section}.{k}: {old[k]!r} -> {new[k]!r}" for k in new if k in old and old[k] != new[k]]
    added = [f"{section}.{k}: new field ({new[k]!r})" for k in new if old and k not in old]

    def cut(items: list[str]) -> list[str]:
        return items[:most] + ([f"... {len(items) - most} more"] if len(items) > most else [])

    return cut(changed), cut(added)


def stage_status(recipe: Recipe, run_dir: str | Path) -> list[dict]:
    """One dict per stage call of the recipe, in order (see the module doc)."""
    run_dir = Path(run_dir).resolve()
    expected = expected_fingerprints(recipe, run_dir)
    price = recipe.sampling.cost.gpu_hour_usd
    gpus = {st.name: st.gpus(recipe) for st in STAGES}
    rows: list[dict] = []
    redo: dict[str, str] = {}  # label -> why, for the stages a rerun redoes
    for st, label, student in schedule(recipe):
        row: dict[str, Any] = {"stage": label, "rows_in": None, "rows_out": None, "seconds": None, "device_hours": 0.0, "cost_usd": 0.0}
        if label in ALWAYS:
            path = run_dir / ("report.json" if label == "report" else "publish")
            row |= {"state": "done" if path.exists() else "not started", "rerun": ALWAYS[label]}
            rows.append(row)
            continue
        subdir, fp = expected[label]
        stage_dir = run_dir / subdir
        m, started = read_manifest(stage_dir), read_json(stage_dir / STARTED) or {}
        if m:
            row |= {k: m.get(k) for k in ("rows_in", "rows_out", "seconds")}
        owner_alive = _alive(started) if started and not (m and m.get("fingerprint") == started.get("fingerprint")) else False
        if m and m.get("fingerprint") == fp:
            row["state"] = "done"
        elif started and owner_alive is not False:
            row["state"] = "running" if owner_alive else f"running on {started.get('host')} (cannot check from here)"
        elif started and not (m and m.get("fingerprint") == started.get("fingerprint")):
            row["state"] = "crashed"  # started, no manifest for what it started, nobody behind it
        elif m:
            row["state"] = "done (other settings)"
        else:
            row["state"] = "not started"
        if row["state"].startswith("running") or row["state"] == "crashed":
            files, got = _partial_rows(stage_dir)
            row |= {"rows_out": got, "partial_files": files} if files else {"rows_out": None}
            if started.get("started_at"):  # a crashed stage: until the last file it wrote (a checkpoint, a shard)
                last = max((p.stat().st_mtime for p in stage_dir.rglob("*")), default=started["started_at"])
                end = time.time() if row["state"].startswith("running") else last
                row["seconds"] = round(max(0.0, end - started["started_at"]), 1)
        if st.name == "sample" and (stage_dir.is_dir() and any(stage_dir.glob(f"{LEDGER_PREFIX}*"))):
            acct = accounting(stage_dir, gpus=(m or {}).get("generation", {}).get("gpus", gpus["sample"]) or gpus["sample"],
                              cost=recipe.sampling.cost, samples=0)
            row |= {"device_hours": acct["gpu_hours"], "cost_usd": acct["cost_usd"], "engine_starts": acct["engine_starts"]}
            if row["seconds"] is None and read_ledger(stage_dir):
                row["seconds"] = acct["total_engine_seconds"] + acct["total_engine_start_seconds"]
        elif row["seconds"]:
            row["device_hours"] = round(gpus[st.name] * row["seconds"] / 3600, 6)
            row["cost_usd"] = round(row["device_hours"] * price, 6)
        row["rerun"] = _why(recipe, st, label, row, m, fp, redo, stage_args_labels(st, recipe))
        if row["rerun"] != "reuse":
            redo[label] = row["rerun"]
        rows.append(row)
    return rows


def stage_args_labels(st, recipe: Recipe) -> list[str]:
    """The labels of the stages whose manifests this stage is fingerprinted with."""
    return [label for name in st.inputs if name in BY_NAME for label in BY_NAME[name].labels(recipe)]


def _why(recipe: Recipe, st, label: str, row: dict, m: dict | None, fp: str, redo: dict[str, str], inputs: list[str]) -> str:
    state = row["state"]
    if state == "done":
        return "reuse"
    if state.startswith("running"):
        return "running now: a second run would race it"
    if state == "crashed":
        return "redo: it did not finish (killed or failed); what it wrote for the same settings is kept"
    if state == "not started":
        return "run: not started"
    changed_inputs = [i for i in inputs if i in redo and not redo[i].startswith("run:")]
    changed, added = changed_settings(recipe, label, m or {})
    fps = f"fingerprint {(m or {}).get('fingerprint')} -> {fp}"
    because_input = ("" if not changed_inputs else f"its input {changed_inputs[0]} is redone" if len(changed_inputs) == 1
                     else f"its inputs {', '.join(changed_inputs)} are redone")
    if changed:  # values the stage ran with differ from the recipe's now
        return f"redo: settings changed ({fps}): " + "; ".join(changed) + (f"; and {because_input}" if because_input else "")
    if because_input:
        return f"redo: {because_input} ({fps})"
    if added:  # the recipe has fields the run's did not (a newer version's defaults hash differently)
        return f"redo: settings changed ({fps}): " + "; ".join(added)
    return f"redo: settings changed ({fps})"


def totals(rows: list[dict]) -> dict:
    return {"seconds": round(sum(r["seconds"] or 0 for r in rows), 1), "device_hours": round(sum(r["device_hours"] for r in rows), 6),
            "cost_usd": round(sum(r["cost_usd"] for r in rows), 6),
            "redo": [r["stage"] for r in rows if r["rerun"] not in ("reuse",) and r["stage"] not in ALWAYS]}


def _cells(r: dict) -> list[str]:
    rows_out = "" if r["rows_out"] is None else f"{r['rows_out']:,}"
    if "partial_files" in r:
        rows_out += f" ({r['partial_files']} files so far)"
    return [r["stage"], r["state"], "" if r["rows_in"] is None else f"{r['rows_in']:,}", rows_out,
            "" if r["seconds"] is None else f"{r['seconds']:.1f}", f"{r['device_hours']:.4f}", f"{r['cost_usd']:.2f}", r["rerun"]]


HEADER = ["stage", "state", "rows in", "rows out", "seconds", "device-h", "cost $", "a rerun would"]


def format_status(recipe: Recipe, run_dir: str | Path, rows: list[dict], recipe_source: str) -> str:
    """A fixed-width table for the terminal, then the totals and what a rerun redoes."""
    table = [HEADER] + [_cells(r) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER) - 1)]
    lines = [f"run {shown_path(run_dir)} (recipe {recipe_source}, `{recipe.name}`)"]
    for row in table:
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) + "  " + row[-1])
    t = totals(rows)
    lines.append(f"so far: {t['seconds']:,.1f} s of stage time, {t['device_hours']:.4f} device-hours, ${t['cost_usd']:.2f}"
                 f" (sampling.cost.gpu_hour_usd = {recipe.sampling.cost.gpu_hour_usd})")
    lines.append(f"a rerun redoes: {', '.join(t['redo'])}" if t["redo"] else "a rerun redoes nothing: every stage is reused")
    return "\n".join(lines)


def status_markdown(recipe: Recipe, run_dir: str | Path, rows: list[dict]) -> str:
    """The same as a markdown table (Prefect's artifact)."""
    out = [f"### run `{recipe.name}` status", "", "| " + " | ".join(HEADER) + " |", "|:--|:--|--:|--:|--:|--:|--:|:--|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in rows]
    t = totals(rows)
    out += ["", f"{t['seconds']:,.1f} s of stage time, {t['device_hours']:.4f} device-hours, ${t['cost_usd']:.2f}; "
            + (f"a rerun redoes: {', '.join(t['redo'])}" if t["redo"] else "a rerun redoes nothing")]
    return "\n".join(out)


def status(run_dir: str | Path, config: str | Path | None = None, overrides: list[str] | None = None, as_json: bool = False) -> str:
    """`distill status`: the table (or JSON) for RUN_DIR against a recipe: --config, else the one the
    report stage wrote into the run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    source = Path(config) if config else run_dir / "recipe.yaml"
    if not source.is_file():
        raise FileNotFoundError(f"{run_dir} has no recipe.yaml (a run writes it when it starts): "
                                "pass the recipe the run was started with, --config RECIPE")
    recipe = load_recipe(source, overrides or [])
    rows = stage_status(recipe, run_dir)
    if as_json:
        return json.dumps({"run_dir": str(run_dir), "recipe": str(source), "stages": rows, "totals": totals(rows)}, indent=2)
    return format_status(recipe, run_dir, rows, shown_path(source))
