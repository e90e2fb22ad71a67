"""Chat templates across stages: the teacher's `<think>` prefill against how sampling renders prompts and how
SFT rows are built, and each student's template, reasoning and turn-ending EOS.

Sampling renders each prompt with the teacher's chat template (or `sampling.chat_template`) and a
generation prompt. DeepSeek-R1's template ends that prompt with `<think>\\n`, so completions hold only
`</think>`: unless the prefill is carried into the traces (distill.core.schema's PREFILL column), the
SFT rows lose `<think>` and the template lint stops the run after the whole sampling budget is spent.
A student is trained to end its turn with whatever its template puts after an assistant message; that
token must be one generation stops at (the EOS, or the model's generation_config EOS ids), else the
student never learns to stop (Qwen2.5 base: turns end with `<|im_end|>`, EOS is `<|endoftext|>`).
"""

from __future__ import annotations

import json
from pathlib import Path

from distill.check.findings import MISSING, Checker, setting
from distill.core import schema
from distill.core.schema import THINK_CLOSE, THINK_OPEN
from distill.training.student import resolve_chat_template, turn_end_token
from rl import templates as rl_templates

# What this version does (the tests turn these off to reproduce the defects of the code before the fixes):
# the sample stage records a template's prefill in the traces' PREFILL column and the SFT rows get it back
CARRIES_PREFILL = getattr(schema, "PREFILL", None) is not None
# SFT trains with the template's turn-ending token as EOS unless training_args.eos_token names another
EOS_FROM_TEMPLATE = True
# a teacher GRPO trained with a prefill we render is saved with a template that prefills the same way
TEACHER_SAVES_PREFILL_TEMPLATE = hasattr(rl_templates, "save_prefill_template")
SAMPLING_PREFILL_FIELD = "prefill_think"  # sampling.prefill_think (force / refuse a prefill), where the schema has it
STUDENT_EOS_FIELD = "eos_token"  # students[i].eos_token, where the schema has it (else training_args.eos_token)
_QUESTION, _REASONING, _ANSWER = "What is 2 + 2?", "Two and two make four.", "The answer is 4."


def generation_tail(tok, template: str) -> str:
    """The text a template appends after a user message when it opens the assistant's turn."""
    text = tok.apply_chat_template([{"role": "user", "content": _QUESTION}], chat_template=template,
                                   add_generation_prompt=True, tokenize=False)
    return text[text.rfind(_QUESTION) + len(_QUESTION):]


def think_prefill(tok, template: str) -> str:
    """`<think>...` when the generation prompt ends inside an open think block, else ""."""
    tail = generation_tail(tok, template)
    at = tail.rfind(THINK_OPEN)
    return tail[at:] if at >= 0 and THINK_CLOSE not in tail[at:] else ""


def assistant_turn(tok, template: str) -> str:
    """What the template keeps of a reasoning answer in a rendered conversation."""
    content = f"{THINK_OPEN}\n{_REASONING}\n{THINK_CLOSE}\n\n{_ANSWER}"
    msgs = [{"role": "user", "content": _QUESTION}, {"role": "assistant", "content": content}]
    text = tok.apply_chat_template(msgs, chat_template=template, tokenize=False)
    return text[text.rfind(_QUESTION) + len(_QUESTION):]


def stop_tokens(info, eos: str | None) -> set[str]:
    """Where generation stops: the (recipe's or tokenizer's) EOS and the folder's generation_config EOS ids."""
    tok = info.tokenizer
    stops = {eos} if eos else set()
    gen = Path(info.source) / "generation_config.json"
    if gen.is_file():
        ids = json.loads(gen.read_text()).get("eos_token_id")
        for i in ids if isinstance(ids, list) else [ids] if ids is not None else []:
            stops.add(tok.convert_ids_to_tokens(int(i)))
    return {s for s in stops if s}


def check_teacher_template(c: Checker) -> None:
    r = c.recipe
    t, s = r.teacher, r.sampling
    info = c.model(t.model, "teacher.model")
    if info is None:
        return
    where = "sampling.chat_template" if s.chat_template else "teacher.model"
    template = s.chat_template or info.tokenizer.chat_template
    if not template:
        c.error("sampling.chat_template", f"{t.model} has no chat template and sampling renders every prompt with one: set sampling.chat_template")
        return
    prefill = think_prefill(info.tokenizer, template)
    forced = setting(s, SAMPLING_PREFILL_FIELD)
    if prefill:
        if s.engine == "openai" and s.openai.endpoint == "chat":
            c.error("sampling.openai.endpoint", f"chat: the server renders {t.model}'s template, which ends the generation prompt with "
                    f"{prefill!r}; completions hold only {THINK_CLOSE!r} and the prefill cannot be recorded: use endpoint: completions")
        elif forced is False:
            c.error(f"sampling.{SAMPLING_PREFILL_FIELD}", f"false, but {t.model}'s chat template ends the generation prompt with {prefill!r} itself")
        elif not CARRIES_PREFILL and forced in (MISSING, None):
            c.error(where, f"{t.model}'s chat template ends the generation prompt with {prefill!r}, so sampled completions hold only "
                    f"{THINK_CLOSE!r}; this version does not carry the prefill into the traces, so the SFT rows lose {THINK_OPEN!r} "
                    "and the template lint stops the run after sampling")
        else:
            c.ok(f"sampling: {t.model}'s template prefills {prefill!r}; the prefill is carried into the traces and the SFT rows")
        if t.enabled and t.template.name == "chat" and t.template.prefill_think is False:
            c.error("teacher.template.prefill_think", f"false, but {t.model}'s chat template prefills {prefill!r} itself")
        return
    if t.enabled and t.template.name == "r1_zero":
        c.warn("teacher.template.name", "r1_zero: GRPO trains the teacher on R1-Zero's plain-text prompt, but the sample stage renders "
               f"prompts with {t.model}'s chat template: the teacher is sampled on a prompt shape it was not trained on")
    elif t.enabled and t.template.prefill_think and forced is not True and TEACHER_SAVES_PREFILL_TEMPLATE:
        c.ok(f"sampling: the trained teacher is saved with a template that prefills {THINK_OPEN!r} as GRPO did")
    elif t.enabled and t.template.prefill_think and forced is not True:
        c.warn("teacher.template.prefill_think", f"GRPO trains the teacher with {THINK_OPEN!r} prefilled, but {t.model}'s chat template "
               "does not prefill it, so the sample stage prompts the teacher without it"
               + (f" (set sampling.{SAMPLING_PREFILL_FIELD}: true)" if forced is not MISSING else ""))
    else:
        c.ok(f"sampling: {t.model}'s template opens the assistant turn without a prefill; completions carry their own {THINK_OPEN!r}")


def check_student_templates(c: Checker) -> None:
    r = c.recipe
    for i, st in enumerate(r.students):
        f = f"students[{i}]"
        info = c.model(st.model, f"{f}.model")
        if info is None:
            continue
        tok = info.tokenizer
        try:
            own = resolve_chat_template(st.chat_template, models_dir=c.models_dir, field=f"{f}.chat_template")
        except (OSError, ValueError) as e:
            c.error(f"{f}.chat_template", str(e))
            continue
        template = own or tok.chat_template
        if not template:
            c.error(f"{f}.chat_template", f"{st.model} has no chat template (a base model): the SFT rows cannot be rendered; "
                    f"set {f}.chat_template (Jinja, a file, or a model to borrow it from, e.g. meta-llama/Llama-3.3-70B-Instruct)")
            continue
        kept = assistant_turn(tok, template)
        if _REASONING not in kept or THINK_OPEN not in kept + generation_tail(tok, template):
            c.error(f"{f}.chat_template", f"{st.model}'s chat template drops the reasoning ({THINK_OPEN}...{THINK_CLOSE}) from assistant "
                    "turns: the student would be trained on answers without their chain of thought")
        if i == 0 and r.merge.think == "absent" and think_prefill(tok, template):
            c.error("merge.think", f"absent, but {st.model}'s template prefills {THINK_OPEN!r}: non-reasoning answers need an empty think block")
        _check_turn_end(c, i, st, info, template)


def _check_turn_end(c: Checker, i: int, st, info, template: str) -> None:
    """The token the template ends assistant turns with must be one generation stops at after SFT."""
    f = f"students[{i}]"
    own = setting(st, STUDENT_EOS_FIELD)
    field = f"{f}.{STUDENT_EOS_FIELD}" if own is not MISSING else f"{f}.training_args.eos_token"
    ending = turn_end_token(info.tokenizer, template)
    named = st.training_args.get("eos_token") or (own if own not in (MISSING, None) else None)
    eos = named or (ending if EOS_FROM_TEMPLATE and ending else info.tokenizer.eos_token)
    stops = stop_tokens(info, eos)
    if ending is None:
        c.warn(f"{f}.chat_template", f"{st.model}'s template ends assistant turns with no special token: the student stops at "
               f"{eos!r} only if the rows end with it")
    elif ending in stops:
        how = "named" if named else ("the template's turn end, set as EOS by SFT" if ending == eos and EOS_FROM_TEMPLATE else "the EOS")
        c.ok(f"{f}: assistant turns end with {ending!r}, where generation stops ({how})")
    else:
        c.error(field, f"{st.model}'s template ends assistant turns with {ending!r} but the student would stop at "
                f"{' / '.join(map(repr, sorted(stops)))}: it is never trained to stop; set {field}: {ending!r}")
