"""Prompt templates for the teacher's cold start and GRPO, and what the format reward must see.

Three shapes, one object (`Template`):

- `r1_zero`: DeepSeek-R1-Zero's plain-text template for a base model ("A conversation between User and
  Assistant ... User: {prompt}. Assistant:"); reasoning in `<think>`, the answer in `<answer>` tags (or
  `\\boxed{}`). Prompts are strings, so no chat template is applied.
- `chat`: the model's own chat template (prompts stay conversational; TRL renders them).
- either of them with `<think>` prefilled: the template ends the prompt inside the think block (the
  R1-Distill chat templates do this themselves), so the model's completion starts with its reasoning
  and only `</think>` appears in it. The format reward scores `prefill + completion`, i.e. the think
  block the model actually produced, instead of scoring 0 on every sample (open-r1 #560).

The prefill is detected from the chat template when `prefill_think` is left unset; set it to force one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from distill.core.schema import THINK_CLOSE, THINK_OPEN, generation_prefill, split_think

R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. "
    "The Assistant first thinks about the reasoning process in the mind and then provides the User with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
    "</answer>. User: {prompt} Assistant:"
)
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_ANSWER_BLOCK = re.compile(r"^\s*<answer>(.*?)</answer>\s*$", re.DOTALL)


@dataclass(frozen=True)
class Template:
    kind: str  # "r1_zero" | "chat"
    answer_format: str  # "answer_tag" | "boxed"
    prefill: str = ""  # text the prompt ends with that belongs to the model's turn ("<think>\n")
    render_prefill: bool = False  # True: we append `prefill` to the rendered prompt (the template does not)
    system_prompt: str | None = None
    chat_template: str | None = None  # the rendered chat template's text, when prompts are pre-rendered

    # --- prompts ---------------------------------------------------------------------------------

    def messages(self, question: str) -> list[dict]:
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return msgs + [{"role": "user", "content": question}]

    def prompt(self, question: str, tokenizer=None) -> str | list[dict]:
        """The GRPO / cold-start prompt: a string for r1_zero and for prefilled renders, else messages."""
        if self.kind == "r1_zero":
            q = question.strip()
            q = q if q[-1:] in (".", "?", "!") else q + "."
            return R1_ZERO_TEMPLATE.format(prompt=q) + (" " + self.prefill if self.prefill else "")
        if not self.render_prefill:
            return self.messages(question)
        if tokenizer is None:
            raise ValueError("a prefilled chat template renders prompts with the tokenizer: pass it")
        text = tokenizer.apply_chat_template(self.messages(question), tokenize=False, add_generation_prompt=True)
        bos = tokenizer.bos_token
        if bos and text.startswith(bos):  # the tokenizer adds it again when TRL tokenizes the string
            text = text[len(bos):]
        return text + self.prefill

    # --- completions -----------------------------------------------------------------------------

    def answer_text(self, summary: str, answer: str | None = None) -> str:
        """The part after `</think>`: the summary, with the answer tagged or boxed as the template wants."""
        summary = summary.strip()
        if self.answer_format == "answer_tag":
            return f"{ANSWER_OPEN} {summary} {ANSWER_CLOSE}"
        if "\\boxed" not in summary and answer is not None:
            summary = f"{summary}\nThe answer is \\boxed{{{answer}}}."
        return summary

    def target(self, reasoning: str, summary: str, answer: str | None = None) -> str:
        """A readable cold-start completion, R1's `|special_token|<reasoning>|special_token|<summary>`
        rendered as `<think>reasoning</think>summary`, minus whatever the prompt already prefilled."""
        full = f"{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n{self.answer_text(summary, answer)}"
        return self.strip_prefill(full)

    def strip_prefill(self, text: str) -> str:
        p = self.prefill.strip()
        if p and text.startswith(p):
            return text[len(p):].lstrip("\n ")
        return text

    def produced(self, completion: str) -> str:
        """What the model produced in its turn, prefilled text included (what format rewards must see)."""
        return (self.prefill + completion) if self.prefill else completion

    def format_ok(self, completion: str) -> bool:
        """One non-empty think block, then a non-empty answer (in exactly one `<answer>` block for the
        answer_tag format). `completion` is the generated text; the prefill is added back here."""
        s = split_think(self.produced(completion))
        if not (s.has_think and s.n_close == 1 and s.n_open == 1 and s.reasoning and s.final):
            return False
        if self.answer_format == "answer_tag":
            m = _ANSWER_BLOCK.match(s.final)
            return bool(m and m.group(1).strip() and ANSWER_OPEN not in m.group(1))
        return True

    def generation_template(self, model_template: str | None) -> str | None:
        """A chat template whose generation prompt ends as this template's prompts do, for an engine that
        renders messages (few-shot cold-start generation; a trained teacher's saved tokenizer, so that
        sampling from it prefills too): a prefill we render (`prefill_think`) is appended after the
        generation prompt. None where the model's own template already does (or there is no prefill).
        For r1_zero, `model_template` is the messages form of its plain-text template."""
        if not (self.prefill and self.render_prefill):
            return model_template if self.kind == "r1_zero" else None
        if not model_template:
            raise ValueError("teacher.template.prefill_think on a model without a chat template: use template name r1_zero")
        text = (" " + self.prefill) if self.kind == "r1_zero" else self.prefill
        return model_template + "{% if add_generation_prompt %}{{ " + json.dumps(text) + " }}{% endif %}"

    def describe(self) -> str:
        pre = f", prefill {self.prefill!r}" + (" (rendered by us)" if self.render_prefill else " (by the chat template)") if self.prefill else ""
        return f"{self.kind}, answer {self.answer_format}{pre}"


def save_prefill_template(model_dir, template: Template) -> bool:
    """After training with a prefill we render (`prefill_think` on a template that does not prefill), give
    the saved model a chat template that prefills too, so that sampling from it (which renders the model's
    own template) starts inside the think block as GRPO did, and its traces record the prefill. True when
    the saved template was changed."""
    if template.kind != "chat" or not (template.prefill and template.render_prefill):
        return False
    from transformers import AutoTokenizer  # heavy: only for a trained teacher with a rendered prefill

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if generation_prefill(tokenizer):  # already prefills (a rerun)
        return False
    tokenizer.chat_template = template.generation_template(tokenizer.chat_template)
    tokenizer.save_pretrained(model_dir)
    return True


def template_prefill(tokenizer) -> str:
    """What the model's chat template puts after the assistant header when generating: "<think>\\n"
    for the R1-Distill / QwQ templates, "" for most others (distill.core.schema.generation_prefill)."""
    return generation_prefill(tokenizer)


def build_template(cfg, tokenizer=None, system_prompt: str | None = None) -> Template:
    """A Template from the recipe's `teacher.template` section (a TemplateConfig)."""
    answer = cfg.answer_format or ("answer_tag" if cfg.name == "r1_zero" else "boxed")
    if cfg.name == "r1_zero":
        prefill = f"{THINK_OPEN}\n" if cfg.prefill_think else ""
        return Template("r1_zero", answer, prefill=prefill, render_prefill=bool(prefill))
    native = template_prefill(tokenizer) if tokenizer is not None else ""
    if native:  # the chat template prefills; prompts stay conversational and TRL renders them
        if cfg.prefill_think is False:
            raise ValueError("teacher.template.prefill_think is false, but the model's chat template prefills <think> itself")
        return Template("chat", answer, prefill=native, system_prompt=system_prompt)
    if cfg.prefill_think:
        return Template("chat", answer, prefill=f"{THINK_OPEN}\n", render_prefill=True, system_prompt=system_prompt)
    return Template("chat", answer, system_prompt=system_prompt)

