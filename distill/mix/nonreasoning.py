"""The non-reasoning half of the SFT set: writing, factual QA, self-cognition, translation, ...

R1 mixed ~200k such samples into its students' SFT data so that they keep answering simple requests
directly instead of reasoning about "hello". Each source gives rows in one category (or a category
column); rows come from a local file or any `datasets` dataset through a column mapping, from built-in
self-cognition templates filled with the student's name and maker, or from a model through the
sampling engines (`generate: true`: only the prompts are read).

Answers never carry a chain of thought. How "no chain of thought" looks is one choice for the whole set
(`think_prefix`): no think block at all, or an empty one, which is what a template that prefills
`<think>` in its generation prompt needs (the model at inference is then always inside a think block and
must learn to close it at once). A source row that carries a think block is dropped with its reason,
never silently kept or cut.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Callable

import polars as pl

from distill.config.merge import GeneratorConfig, IdentityConfig, MergeSource
from distill.core.models import resolve_model
from distill.core.schema import THINK_CLOSE, THINK_OPEN, content_id, split_think
from distill.core.storage import read_table
from distill.engines.base import SamplingParams
from distill.engines.factory import engine_factory
from distill.generation.sample import generate_traces

log = logging.getLogger(__name__)

EMPTY_THINK = f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n"

# Self-cognition: questions a user asks about the assistant, and answers filled with its identity. Each
# question gets one answer template, chosen by a content hash, so a rerun gives the same pairs.
SELF_COGNITION_QUESTIONS = [
    "Who are you?",
    "What is your name?",
    "Introduce yourself.",
    "Who made you?",
    "Who created you?",
    "Which company or team developed you?",
    "Are you ChatGPT?",
    "Are you a human?",
    "What kind of AI are you?",
    "What should I call you?",
    "Tell me about yourself in one sentence.",
    "Who trained you?",
    "What are you?",
    "Hi! Who am I talking to?",
    "Can you tell me who built you?",
    "What model are you?",
    "你是谁？",
    "你叫什么名字？",
    "谁开发了你？",
    "¿Quién eres?",
    "Qui es-tu ?",
    "Wer bist du?",
]
SELF_COGNITION_ANSWERS = [
    "I am {name}, an AI assistant developed by {maker}. I can help with math, reasoning, writing and questions of all kinds.",
    "My name is {name}. I was built by {maker} to help people reason through problems and answer questions.",
    "I'm {name}, a language model trained by {maker}. How can I help you today?",
    "I am {name}, an AI model created by {maker}. I'm not a human, but I'm happy to help.",
    "You're talking to {name}, an assistant made by {maker}.",
]
SELF_COGNITION_ANSWERS_ZH = ["我是{name}，由{maker}开发的人工智能助手。有什么可以帮你的吗？", "我叫{name}，是{maker}训练的语言模型。"]
SELF_COGNITION_ANSWERS_ES = ["Soy {name}, un asistente de inteligencia artificial creado por {maker}."]
SELF_COGNITION_ANSWERS_FR = ["Je suis {name}, un assistant d'intelligence artificielle créé par {maker}."]
SELF_COGNITION_ANSWERS_DE = ["Ich bin {name}, ein KI-Assistent, entwickelt von {maker}."]


def _answers_for(question: str) -> list[str]:
    if any("\u4e00" <= ch <= "\u9fff" for ch in question):
        return SELF_COGNITION_ANSWERS_ZH
    if question.startswith("¿"):
        return SELF_COGNITION_ANSWERS_ES
    if question.startswith("Qui "):
        return SELF_COGNITION_ANSWERS_FR
    if question.startswith("Wer "):
        return SELF_COGNITION_ANSWERS_DE
    return SELF_COGNITION_ANSWERS


def fill_identity(text: str, identity: IdentityConfig, name: str) -> str:
    """`{name}` and `{maker}` filled in; other braces are left alone (sources may hold code or JSON)."""
    return text.replace("{name}", name).replace("{maker}", identity.maker)


def self_cognition_rows(label: str) -> list[dict]:
    rows = []
    for q in SELF_COGNITION_QUESTIONS:
        answers = _answers_for(q)
        a = answers[int(content_id("self_cognition", q), 16) % len(answers)]
        rows.append({"id": content_id(label, q), "system": None, "prompt": q, "response": a, "category": "self_cognition"})
    return rows


def _read(src: MergeSource) -> tuple[pl.DataFrame, str]:
    if src.kind == "file":
        return read_table(src.path), src.path
    import datasets  # heavy: only for Hub sources

    ds = datasets.load_dataset(src.path, src.hf_config, split=src.split)
    return pl.from_arrow(ds.data.table), f"hf:{src.path}"


def _from_messages(msgs: Any, origin: str, i: int) -> tuple[str | None, str, str | None]:
    """(system, user prompt, answer) of a chat row: the last assistant turn and the user turn before it."""
    if not isinstance(msgs, list) or not msgs:
        raise ValueError(f"non-reasoning source {origin}: row {i}: the messages column is not a list of messages")
    system = next((m.get("content") for m in msgs if m.get("role") == "system"), None)
    last = max((j for j, m in enumerate(msgs) if m.get("role") == "assistant"), default=None)
    if last is None:
        user = next((m.get("content") for m in reversed(msgs) if m.get("role") == "user"), "")
        return system, user or "", None
    user = next((m.get("content") for m in reversed(msgs[:last]) if m.get("role") == "user"), "")
    return system, user or "", msgs[last].get("content")


def source_rows(src: MergeSource, seed: int = 0) -> list[dict]:
    """Raw rows of one source: id, system, prompt, response (None when it is to be generated), category."""
    label = src.label()
    if src.kind == "self_cognition":
        rows = self_cognition_rows(label)
    else:
        df, origin = _read(src)
        f = src.fields
        need = [f.messages] if f.messages else [f.prompt] + ([] if src.generate else [f.response])
        for col in need:
            if col not in df.columns:
                raise ValueError(f"non-reasoning source {origin}: column {col!r} is missing (columns: {', '.join(df.columns)})")
        rows = []
        for i, r in enumerate(df.iter_rows(named=True)):
            if f.messages:
                system, prompt, response = _from_messages(r[f.messages], origin, i)
            else:
                system = r.get(f.system) if f.system else None
                prompt, response = r[f.prompt], (r.get(f.response) if not src.generate else None)
            category = src.category or r.get(f.category) or "general"
            rid = r.get(f.id)
            rows.append({
                "id": str(rid) if rid is not None else content_id(origin, prompt, i),
                "system": system,
                "prompt": "" if prompt is None else str(prompt),
                "response": None if src.generate or response is None else str(response),
                "category": str(category),
            })
    if src.category:
        for r in rows:
            r["category"] = src.category
    if src.max_rows is not None and len(rows) > src.max_rows:
        rows = random.Random(f"{seed}:{label}").sample(rows, src.max_rows)
    for r in rows:
        r["source"] = label
        r["generate"] = src.generate
    return rows


def generate_answers(rows: list[dict], out_dir: Path, gen: GeneratorConfig, model: str) -> dict[str, dict]:
    """Answers for rows whose response is to be generated, by id: {"text", "finish_reason", "tokens"}.

    Generation is sharded and resumable (distill.generation.sample): a rerun after a kill only fills missing shards.
    """
    todo = pl.DataFrame(
        {"prompt_id": [r["id"] for r in rows], "prompt": [r["prompt"] for r in rows]}, schema={"prompt_id": pl.Utf8, "prompt": pl.Utf8}
    ).unique("prompt_id", keep="first", maintain_order=True)
    if todo.height == 0:
        return {}
    path = resolve_model(model)
    factory = engine_factory(gen, path)
    params = SamplingParams.from_section(gen)  # n = 1: one answer per prompt
    generate_traces(todo, out_dir, model_label=f"generator:{model}", params=params, engine_factory=factory,
                    shard_size=gen.shard_size, system_prompt=gen.system_prompt, id_context={"chat_template": gen.chat_template})
    out = read_table(out_dir)
    return {
        r["prompt_id"]: {"text": r["completion"], "finish_reason": r["finish_reason"], "tokens": r["completion_tokens"]}
        for r in out.iter_rows(named=True)
    }


def render_completion(answer: str, think_prefix: str) -> str:
    return think_prefix + answer


def resolve_think_style(style: str, tokenizer=None, chat_template: str | None = None) -> str:
    """`absent` or `empty`: `auto` reads the student's template (prefilled `<think>` -> empty)."""
    if style != "auto":
        return style
    if tokenizer is None:
        return "absent"
    gen_prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True, chat_template=chat_template
    )
    return "empty" if gen_prompt.rstrip().endswith(THINK_OPEN) else "absent"


def build_non_reasoning(
    sources: list[MergeSource],
    *,
    identity: IdentityConfig,
    student_name: str,
    think_style: str = "absent",
    seed: int = 0,
    generator: GeneratorConfig | None = None,
    generator_model: str | None = None,
    work_dir: Path | None = None,
    answers: Callable[[list[dict]], dict[str, dict]] | None = None,
) -> tuple[list[dict], list[dict], dict]:
    """(rows, dropped rows with `drop_reason`, summary) for every non-reasoning source.

    Rows are SFT rows: id, kind="non_reasoning", category, source, prompt (messages), completion (one
    assistant message: the answer after the think prefix of `think_style`). `answers(rows)` overrides
    generation (tests); otherwise `generate: true` sources are answered by `generator_model`.
    """
    if think_style not in ("absent", "empty"):
        raise ValueError(f"think style {think_style!r}: expected 'absent' or 'empty'")
    prefix = EMPTY_THINK if think_style == "empty" else ""
    raw = [r for src in sources for r in source_rows(src, seed)]
    to_generate = [r for r in raw if r["generate"] and r["prompt"].strip()]
    generated: dict[str, dict] = {}
    if to_generate:
        if answers is not None:
            generated = answers(to_generate)
        else:
            if generator is None or not generator_model:
                raise ValueError("non-reasoning sources with generate: true need merge.generator.model")
            if work_dir is None:
                raise ValueError("generating non-reasoning answers needs a work directory")
            generated = generate_answers(to_generate, Path(work_dir), generator, generator_model)
    rows, dropped = [], []
    seen: set[tuple] = set()
    for r in raw:
        reason = None
        prompt, response = (r["prompt"] or "").strip(), r["response"]
        if r["generate"] and prompt:
            g = generated.get(r["id"])
            if g is None:
                reason = "not_generated"
            elif g["finish_reason"] == "length":
                reason = "generation_truncated"
            else:
                s = split_think(g["text"] or "")
                # a reasoning generator's chain of thought is not part of a non-reasoning answer
                response = s.final if s.n_close == 1 and s.n_open <= 1 else g["text"]
        if reason is None:
            response = (response or "").strip()
            if not prompt or not response:
                reason = "empty_prompt_or_response"
            elif THINK_OPEN in response or THINK_CLOSE in response:
                reason = "think_block"
            elif r["category"] == "self_cognition":
                response = fill_identity(response, identity, student_name)
        key = (r["source"], r["system"], prompt, response)
        if reason is None and key in seen:
            reason = "duplicate"
        msgs = ([{"role": "system", "content": r["system"]}] if r["system"] else []) + [{"role": "user", "content": r["prompt"] or ""}]
        row = {
            "id": r["id"],
            "kind": "non_reasoning",
            "category": r["category"],
            "source": r["source"],
            "prompt": msgs,
            "completion": [{"role": "assistant", "content": render_completion(response or "", prefix) if reason is None else (response or "")}],
        }
        if reason is None:
            seen.add(key)
            rows.append(row)
        else:
            dropped.append({**row, "drop_reason": reason})
    summary = {
        "think_style": think_style,
        "sources": {src.label(): sum(1 for r in raw if r["source"] == src.label()) for src in sources},
        "generated": len(generated),
    }
    return rows, dropped, summary
