"""`distill check`: a recipe checked across its stages before any GPU is paid for, from tokenizers and model
configs only (no weights).

    distill check --config recipes/r1-distill-qwen2.5-math-7b.yaml --models ../shared/tokenizers

One line per finding, `ERROR|WARN field: message` (the field as the recipe spells it), then an OK summary;
exit status 1 when any finding is an ERROR. `distill run` runs the same checks first (`--no-check` skips).
What is checked: distill.check.templates (the teacher's `<think>` prefill against sampling and the SFT
rows; each student's template, reasoning and turn-ending EOS), distill.check.lengths (max_length and
max_model_len against each model's context; curated traces against the SFT max_length),
distill.check.hardware (engines against a node's GPUs, weights against an engine's GPUs, the GRPO
micro-batch's activation memory) and distill.check.mix (the non-reasoning upsampling factor).
"""

from __future__ import annotations

import time
from pathlib import Path

from distill.check.findings import Checker
from distill.check.hardware import check_grpo_memory, check_model_sizes, check_parallelism, check_training_processes
from distill.check.lengths import check_lengths
from distill.check.mix import check_upsampling
from distill.check.templates import check_student_templates, check_teacher_template

CHECKS = (check_teacher_template, check_student_templates, check_lengths, check_parallelism, check_model_sizes,
          check_grpo_memory, check_training_processes, check_upsampling)


def check_recipe(recipe, models_dir: str | Path | None = None) -> Checker:
    """Every check over `recipe`; the Checker holds the findings, notes and what passed."""
    c = Checker(recipe, models_dir)
    t0 = time.perf_counter()
    for check in CHECKS:
        check(c)
    c.seconds = round(time.perf_counter() - t0, 2)
    return c


def format_report(c: Checker) -> str:
    lines = [f.line() for f in c.findings]
    lines += [f"note: {n}" for n in c.notes]
    errors, warns = len(c.errors), len(c.findings) - len(c.errors)
    verdict = "FAILED" if errors else "OK"
    lines.append(f"{verdict} {c.recipe.name}: {errors} error(s), {warns} warning(s), {len(c.checked)} check(s) passed "
                 f"({c.seconds:.1f} s)")
    return "\n".join(lines)
