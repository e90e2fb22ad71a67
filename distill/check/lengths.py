"""Lengths across stages: every `max_length` / `max_model_len` against the model's context
(`max_position_embeddings`), and the curated trace length bound against the SFT `max_length`.

A student may train past its context only with a long-context setting (a RoPE base raised, a scaling, a
longer `max_position_embeddings`): the fields named in STUDENT_LONG_CONTEXT_FIELDS on the student, or the
same keys in `training_args.model_init_kwargs` (passed to `from_pretrained`, which applies them to the
config). Qwen2.5-Math has 4,096 positions with RoPE base 10k: 16k-token traces need open-r1's RoPE-300k
variant (32k positions) or such a setting.
"""

from __future__ import annotations

from distill.check.findings import MISSING, Checker, as_dict, setting
from distill.config import curate as curate_config
from distill.core import models

# Student settings that extend the context (getattr: a field another change may add); model_init_kwargs too
STUDENT_LONG_CONTEXT_FIELDS = ("rope", "rope_scaling", "rope_parameters", "long_context", "config_overrides")
CONTEXT_KEYS = ("max_position_embeddings", "max_model_len", "context", "max_length")
ROPE_KEYS = ("rope_theta", "rope_scaling", "rope_parameters", "factor")
PROMPT_ROOM = 256  # tokens a math prompt and its chat markup take beside a GRPO completion (an estimate)
TRACE_PROMPT_ROOM = 128  # the same beside a curated trace, below which a trace at the bound is warned about
SFT_DEFAULT_MAX_LENGTH = 512  # distill.training.sft's default when training_args has none
# Whether the curate stage drops traces longer than the smallest student max_length (reason too_long_for_sft,
# curate.max_sft_tokens filled from the students); the tests turn it off to reproduce the code before the fix
CURATE_DROPS_OVER_SFT_LENGTH = hasattr(curate_config, "with_sft_length")
# Whether the eval stage scores a base student within its own positions when eval's max_model_len is longer
# (distill.core.models.model_context read by stage_fns.eval_engine_factory); the tests turn it off
EVAL_HOLDS_BASE_TO_ITS_CONTEXT = hasattr(models, "model_context")


def long_context(student) -> tuple[str, int | None] | None:
    """(where, positions) of a student's long-context setting; positions None when it raises RoPE only."""
    found = [(f"{name}", as_dict(setting(student, name))) for name in STUDENT_LONG_CONTEXT_FIELDS]
    mik = student.training_args.get("model_init_kwargs") or {}
    found.append(("training_args.model_init_kwargs", {k: v for k, v in mik.items() if k in CONTEXT_KEYS + ROPE_KEYS}))
    for where, d in found:
        flat = d | as_dict(d.get("rope_scaling")) | as_dict(d.get("rope_parameters"))
        if not flat:
            continue
        positions = next((int(flat[k]) for k in CONTEXT_KEYS if isinstance(flat.get(k), int)), None)
        return where, positions
    return None


def _over(c: Checker, where: str, value: int | None, ctx: int | None, model: str, what: str) -> bool:
    if value is None or ctx is None or value <= ctx:
        return False
    c.error(where, f"{value:,} {what}, but {model} has {ctx:,} positions (max_position_embeddings)")
    return True


def _engine_len(c: Checker, section: str, sec, model: str) -> None:
    """vLLM's max_model_len (and room for the prompt in it) against the model's context."""
    info = c.model(model, "teacher.model" if section != "eval" else f"{section}.model")
    if info is None:
        return
    ctx, limit = info.context, sec.vllm.max_model_len if sec.engine == "vllm" else None
    if _over(c, f"{section}.vllm.max_model_len", limit, ctx, model, "tokens per sequence"):
        return
    room = limit or ctx
    if room is not None and sec.max_tokens >= room:
        c.error(f"{section}.max_tokens", f"{sec.max_tokens:,} new tokens leave no room for the prompt in {room:,} "
                f"({'max_model_len' if limit else f'{model} context'})")
    else:
        c.ok(f"{section}: {model} at {room or 'its own'} tokens per sequence")


def check_lengths(c: Checker) -> None:
    r = c.recipe
    t = r.teacher
    _engine_len(c, "sampling", r.sampling, t.model)
    teacher = c.model(t.model, "teacher.model")
    if t.enabled and teacher is not None:
        ctx = teacher.context
        if t.cold_start.enabled:
            _over(c, "teacher.cold_start.training_args.max_length", t.cold_start.training_args.get("max_length"), ctx, t.model, "tokens")
            fs = t.cold_start.fewshot
            if t.cold_start.source == "fewshot" and fs.engine == "vllm":
                _over(c, "teacher.cold_start.fewshot.vllm.max_model_len", fs.vllm.max_model_len, ctx, t.model, "tokens per sequence")
        if t.grpo.enabled:
            ga = t.grpo.training_args
            _over(c, "teacher.grpo.training_args.vllm_max_model_length", ga.get("vllm_max_model_length"), ctx, t.model, "tokens per sequence")
            mcl = ga.get("max_completion_length")
            if mcl is not None and ctx is not None and mcl + PROMPT_ROOM > ctx:
                c.error("teacher.grpo.training_args.max_completion_length",
                        f"{mcl:,} completion tokens + ~{PROMPT_ROOM} prompt tokens exceed {t.model}'s {ctx:,} positions")
    for i, st in enumerate(r.students):
        info = c.model(st.model, f"students[{i}].model")
        if info is None:
            continue
        where = f"students[{i}].training_args.max_length"
        max_length = st.training_args.get("max_length", SFT_DEFAULT_MAX_LENGTH)
        extended = long_context(st)
        ctx = info.context
        if extended is not None:
            ctx = extended[1] or None
            c.note(f"students[{i}]: long-context setting students[{i}].{extended[0]}"
                   + (f" ({extended[1]:,} positions)" if extended[1] else " (RoPE only: the context is not checked)"))
        if max_length is not None and ctx is not None and max_length > ctx:
            rope = f" ({info.rope})" if info.rope else ""
            c.error(where, f"{max_length:,} tokens, but {st.model} has {ctx:,} positions{rope}: set a long-context start "
                    f"(a RoPE-extended variant of the model) or a RoPE setting (students[{i}].{STUDENT_LONG_CONTEXT_FIELDS[0]}), or lower max_length")
        else:
            c.ok(f"students[{i}]: max_length {max_length} within {st.model}'s context")
    _check_eval_lengths(c)
    check_trace_bound(c)


def _check_eval_lengths(c: Checker) -> None:
    """Eval's max_model_len against each model it scores. A student is held to the recipe's limit after SFT
    (its long-context setting, or its own positions); before SFT, a base with fewer positions is evaluated
    within them (the eval stage lowers max_model_len for it, EVAL_HOLDS_BASE_TO_ITS_CONTEXT): a warning."""
    r = c.recipe
    ev = r.eval
    if not ev.enabled:
        return
    if include_teacher(r):
        _engine_len(c, "eval", ev, r.teacher.model)
    limit = ev.vllm.max_model_len if ev.engine == "vllm" else None
    for i, st in enumerate(r.students):
        info = c.model(st.model, f"students[{i}].model")
        ctx = info.context if info is not None else None
        extended = long_context(st)
        after = extended[1] if extended and extended[1] else ctx
        if limit and extended and extended[1] and limit > extended[1]:
            c.error("eval.vllm.max_model_len", f"{limit:,} tokens per sequence, but students[{i}] after SFT has {extended[1]:,} "
                    f"positions (students[{i}].{extended[0]})")
        elif limit and ctx and limit > ctx and after and after > ctx and EVAL_HOLDS_BASE_TO_ITS_CONTEXT:
            c.warn("eval.vllm.max_model_len", f"{st.model} has {ctx:,} positions before SFT: the eval stage scores it "
                   f"within them (max_model_len {ctx:,}, answers cut there), the student after SFT at {limit:,}")
        else:
            _engine_len(c, "eval", ev, st.model)


def include_teacher(r) -> bool:
    """Whether eval scores the teacher: `eval.include_teacher` (None: only a teacher the pipeline trained)."""
    inc = setting(r.eval, "include_teacher")
    return r.teacher.enabled if inc in (None, MISSING) else bool(inc)


def check_trace_bound(c: Checker) -> None:
    """Curated traces must fit the shortest student's SFT max_length, or SFT cuts their answer and EOS."""
    r = c.recipe
    if not r.students:
        return
    i, st = min(enumerate(r.students), key=lambda p: p[1].training_args.get("max_length", SFT_DEFAULT_MAX_LENGTH) or 10**12)
    max_length = st.training_args.get("max_length", SFT_DEFAULT_MAX_LENGTH)
    if max_length is None:
        return
    merged, sampled = r.merge.max_tokens, r.sampling.max_tokens
    curated = r.curate.max_completion_tokens
    ml = f"students[{i}].training_args.max_length"
    sft_cap = setting(r.curate, "max_sft_tokens")
    if sft_cap not in (MISSING, None):
        if sft_cap > max_length:
            c.error("curate.max_sft_tokens", f"{sft_cap:,}, but {ml} is {max_length:,}: traces in between would be cut, answer and EOS lost")
        else:
            c.ok(f"curate: traces over curate.max_sft_tokens ({sft_cap:,}) are dropped (too_long_for_sft)")
        return
    if sft_cap is None and CURATE_DROPS_OVER_SFT_LENGTH:
        c.ok(f"curate: traces longer than {ml} ({max_length:,}) are dropped with reason too_long_for_sft")
        return
    if curated is None or curated > sampled:  # no trace is longer than the sampling limit
        c.note(f"curated traces are bounded by sampling.max_tokens ({sampled:,}), below curate.max_completion_tokens ({curated})")
        curated = sampled
    if merged is not None and merged <= max_length:
        c.ok(f"merge: rows over merge.max_tokens ({merged:,}) are dropped with their reason before SFT ({ml} {max_length:,})")
    elif curated > max_length:
        c.error("curate.max_completion_tokens", f"traces of up to {curated:,} completion tokens are kept, but {ml} is {max_length:,}: "
                f"longer traces would be cut, their answer and EOS lost; set it (or merge.max_tokens) to at most {max_length - TRACE_PROMPT_ROOM:,}")
    elif curated + TRACE_PROMPT_ROOM > max_length:
        c.warn("curate.max_completion_tokens", f"{curated:,} completion tokens + the prompt (~{TRACE_PROMPT_ROOM}) can exceed {ml} "
               f"({max_length:,}): the longest traces lose their end; set merge.max_tokens to {max_length:,} to drop them instead")
    else:
        c.ok(f"curate: traces of at most {curated:,} tokens fit {ml} ({max_length:,})")
