"""Template lint: render and tokenize a sample of every kind of SFT row exactly as TRL will, before training.

The usual way a distilled student fails is not the data but the chat template: it drops `<think>` from
assistant turns (many reasoning templates strip history reasoning), masks the wrong tokens, or never
trains the token that ends a turn, so the student never stops (open-r1 #492, #603; TRL #6363). For each
sampled row this builds the token ids and the loss mask the way TRL's SFTTrainer does (prompt/completion
rows: the completion starts where the tokenized prompt and prompt+completion diverge; `assistant_only_loss`:
the template's generation markers; both: their intersection; then truncation to max_length) and checks:

- `<think>` and `</think>` of a reasoning row survive rendering (`<think>` may sit at the end of the
  prompt when the template prefills it: the model then sees it at inference);
- the loss covers the reasoning, `</think>` and the answer, and nothing before the assistant turn;
- a stop token (the tokenizer's EOS or one of the model's generation EOS ids) closes each assistant turn
  and is trained, so that generation stops where training ended the turn;
- no double BOS at the start;
- non-reasoning rows all show "no chain of thought" the same way (no think block, or an empty one).

A failure raises TemplateLintError with the rendered text, trained tokens between ⟦ and ⟧.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from distill.core.schema import THINK_CLOSE, THINK_OPEN, split_think

TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"
PER_KIND = 4


class TemplateLintError(ValueError):
    """The chat template would train the model on something other than what the rows say."""


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]  # -100 outside the loss
    prompt_ids: list[int]  # the prompt as inference renders it (generation prompt included)
    prefix: int  # tokens shared by prompt_ids and input_ids (TRL's completion start)
    truncated: bool


def tokenize_like_trl(
    tokenizer,
    row: dict,
    *,
    chat_template: str | None = None,
    completion_only_loss: bool = True,
    assistant_only_loss: bool = False,
    max_length: int | None = None,
) -> Tokenized:
    """Ids and labels of a conversational prompt/completion row, built with TRL's own helpers."""
    from trl.data_utils import _tokenize, common_prefix_length  # heavy: TRL's own tokenization, only when linting

    kw = {"chat_template": chat_template}
    prompt_ids = list(_tokenize(tokenizer, row["prompt"], add_generation_prompt=True, **kw)["input_ids"])
    full = _tokenize(tokenizer, row["prompt"] + row["completion"], return_assistant_tokens_mask=assistant_only_loss, **kw)
    ids = list(full["input_ids"])
    prefix = common_prefix_length(prompt_ids, ids)
    masks = []
    if completion_only_loss:
        masks.append([0] * prefix + [1] * (len(ids) - prefix))
    if assistant_only_loss:
        masks.append(list(full.get("assistant_masks") or [0] * len(ids)))
    labels = [t if all(m[i] for m in masks) else -100 for i, t in enumerate(ids)]
    truncated = max_length is not None and len(ids) > max_length
    if truncated:  # TRL's default truncation_mode keep_start
        ids, labels = ids[:max_length], labels[:max_length]
    return Tokenized(ids, labels, prompt_ids, prefix, truncated)


def row_kind(row: dict) -> str:
    """What kind of row this is, for sampling every kind: think style, system prompt, turns."""
    content = row["completion"][-1]["content"]
    s = split_think(content)
    style = "reasoning" if s.reasoning else ("empty_think" if s.has_think or THINK_OPEN in content else "no_think")
    system = "system" if any(m["role"] == "system" for m in row["prompt"]) else "no_system"
    turns = sum(1 for m in row["prompt"] if m["role"] == "assistant")
    return f"{style}/{system}" + (f"/{turns + 1}_turns" if turns else "")


def sample_rows(rows: list[dict], per_kind: int = PER_KIND, seed: int = 0) -> list[dict]:
    by_kind: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_kind.setdefault(row_kind(r), []).append(i)
    rng = random.Random(seed)
    picked = []
    for kind in sorted(by_kind):
        idx = by_kind[kind]
        picked += sorted(rng.sample(idx, min(per_kind, len(idx))))
    return [rows[i] for i in picked]


def _render(tokenizer, ids: list[int], labels: list[int]) -> str:
    """The sequence as text, trained spans between ⟦ and ⟧."""
    out, span, trained = [], [], None
    for t, lab in zip(ids, labels):
        now = lab != -100
        if trained is not None and now != trained:
            text = tokenizer.decode(span)
            out.append(f"{TRAINED_OPEN}{text}{TRAINED_CLOSE}" if trained else text)
            span = []
        span.append(t)
        trained = now
    if span:
        text = tokenizer.decode(span)
        out.append(f"{TRAINED_OPEN}{text}{TRAINED_CLOSE}" if trained else text)
    return "".join(out)


def _trained_spans(tokenizer, ids: list[int], labels: list[int]) -> list[str]:
    spans, cur = [], []
    for t, lab in zip(ids, labels):
        if lab != -100:
            cur.append(t)
        elif cur:
            spans.append(cur)
            cur = []
    if cur:
        spans.append(cur)
    return [tokenizer.decode(s) for s in spans]


def _squash(text: str) -> str:
    """Whitespace-insensitive form: some tokenizers re-space text on decode."""
    return " ".join(text.split())


def stop_token_ids(tokenizer, model_path: str | None = None) -> set[int]:
    """Where generation stops: the tokenizer's EOS and the model's generation_config EOS ids."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    if model_path:
        try:
            from transformers import GenerationConfig  # heavy: only with a model path

            eos = GenerationConfig.from_pretrained(model_path).eos_token_id
            ids |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        except (OSError, ValueError):  # no generation_config.json: the tokenizer's EOS only
            pass
    return ids


def lint_rows(
    tokenizer,
    rows: list[dict],
    *,
    chat_template: str | None = None,
    completion_only_loss: bool = True,
    assistant_only_loss: bool = False,
    max_length: int | None = None,
    stop_ids: set[int] | None = None,
    per_kind: int = PER_KIND,
    seed: int = 0,
) -> dict[str, Any]:
    """Check a sample of every kind of row; raise TemplateLintError on the first problem, else a summary."""
    stops = set(stop_ids) if stop_ids else stop_token_ids(tokenizer)
    if not stops:
        raise TemplateLintError("the tokenizer has no EOS token: nothing would end an assistant turn")
    names = ", ".join(repr(tokenizer.convert_ids_to_tokens(i)) for i in sorted(stops))
    sample = sample_rows(rows, per_kind, seed)
    kinds: dict[str, int] = {}
    warnings: list[str] = []
    non_reasoning_styles: dict[str, int] = {}
    truncated = 0
    for row in sample:
        kind = row_kind(row)
        kinds[kind] = kinds.get(kind, 0) + 1
        tok = tokenize_like_trl(tokenizer, row, chat_template=chat_template, completion_only_loss=completion_only_loss,
                                assistant_only_loss=assistant_only_loss)
        tok.truncated = max_length is not None and len(tok.input_ids) > max_length
        ids, labels = tok.input_ids, tok.labels
        shown = _render(tokenizer, ids, labels)

        def fail(msg: str) -> None:
            raise TemplateLintError(
                f"{msg}\nrow kind {kind}; rendered with the student's template (trained tokens between "
                f"{TRAINED_OPEN} and {TRAINED_CLOSE}):\n{shown}"
            )

        full_text = tokenizer.decode(ids)
        prompt_text = tokenizer.decode(tok.prompt_ids)
        completion = row["completion"]
        content = completion[-1]["content"]
        split = split_think(content)
        prefilled = prompt_text.rstrip().endswith(THINK_OPEN)
        assistant_part = tokenizer.decode(ids[tok.prefix:])
        # 1. think tags survive rendering (a prefilled `<think>` is in the prompt the model sees)
        if split.reasoning and THINK_OPEN not in content and not prefilled:
            fail(f"the assistant turn holds {THINK_CLOSE!r} but no {THINK_OPEN!r}, and the student's template does not "
                 f"prefill {THINK_OPEN!r}: the teacher's template opened the block in its prompt and the trace lost it "
                 "(traces keep it in their `prefill` column; merge puts it back in front of the completion)")
        if THINK_OPEN in content and THINK_OPEN not in assistant_part and not prefilled:
            fail(f"the chat template drops {THINK_OPEN!r} from the assistant turn")
        if assistant_part.count(THINK_CLOSE) < content.count(THINK_CLOSE):
            fail(f"the chat template drops {THINK_CLOSE!r} from the assistant turn")
        if prefilled and THINK_OPEN not in content and THINK_OPEN not in assistant_part:
            fail(f"the template prefills {THINK_OPEN!r} in the generation prompt, but this row's answer has no think "
                 "block: at inference the model starts inside one, so train non-reasoning answers with an empty "
                 "block (merge.think: empty, or auto)")
        if split.reasoning is None and THINK_OPEN not in content:
            style = "no_think"
        else:
            style = "reasoning" if split.reasoning else "empty_think"
        if style != "reasoning":
            non_reasoning_styles[style] = non_reasoning_styles.get(style, 0) + 1
        # 2. nothing of the prompt is trained
        early = [i for i in range(min(tok.prefix, len(labels))) if labels[i] != -100]
        if early:
            fail(f"the loss covers {len(early)} token(s) of the prompt: {tokenizer.decode([ids[i] for i in early])[:300]!r}")
        if tok.prefix < len(tok.prompt_ids):
            warnings.append(f"{kind}: the prompt alone renders differently from the conversation's start (TRL trains from where they diverge)")
        if tok.truncated:  # checked on the whole row below; the cut itself is a data problem, counted
            truncated += 1
        # 3. the loss covers the reasoning, </think> and the answer
        spans = [_squash(x) for x in _trained_spans(tokenizer, ids, labels)]
        parts = []
        if split.reasoning:
            parts += [("the reasoning", split.reasoning), ("'</think>'", THINK_CLOSE)]
            if not prefilled:
                parts.append(("'<think>'", THINK_OPEN))
        parts.append(("the answer", split.final if split.has_think else content.strip()))
        for what, text in parts:
            text = _squash(text)
            if text and not any(text in s for s in spans):
                if text not in _squash(full_text):
                    fail(f"the chat template alters or drops {what} of the assistant turn")
                fail(f"the loss mask leaves out {what}: the model would not learn to write it")
        # 4. a trained stop token closes each assistant turn
        trained = [(i, t) for i, (t, lab) in enumerate(zip(ids, labels)) if lab != -100]
        while trained and not tokenizer.decode([trained[-1][1]]).strip():
            trained.pop()  # whitespace after the stop token is harmless
        n_turns = sum(1 for m in completion if m["role"] == "assistant")
        n_stops = sum(1 for _, t in trained if t in stops)
        if not trained or trained[-1][1] not in stops:
            after = ids[trained[-1][0] + 1 :] if trained else []
            untrained_stop = any(t in stops for t in after)
            if untrained_stop:
                fail(f"EOS ({names}) follows the assistant turn but is masked out of the loss: the model never learns to stop")
            last = repr(tokenizer.decode([trained[-1][1]])) if trained else "nothing"
            fail(f"EOS ({names}) does not close the assistant turn: it ends with {last}, where generation does not stop "
                 "(if the template ends turns with another token, set the student's training_args.eos_token to it)")
        if n_stops < n_turns:
            fail(f"{n_turns} assistant turn(s) but {n_stops} trained EOS ({names})")
        # 5. no double BOS
        bos = tokenizer.bos_token_id
        if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
            fail(f"double BOS ({tokenizer.bos_token!r}) at the start of the sequence")
    if truncated:
        warnings.append(f"{truncated} of {len(sample)} sampled rows exceed max_length ({max_length}): training cuts their answer and EOS")
    if len(non_reasoning_styles) > 1:
        raise TemplateLintError(
            f"non-reasoning rows show 'no chain of thought' in more than one way ({non_reasoning_styles}): "
            "pick one (merge.think: absent or empty) so the model learns one convention"
        )
    return {
        "rows_checked": len(sample),
        "kinds": dict(sorted(kinds.items())),
        "stop_tokens": sorted(tokenizer.convert_ids_to_tokens(i) for i in stops),
        "non_reasoning_style": next(iter(non_reasoning_styles), None),
        "warnings": sorted(set(warnings)),
        "truncated": truncated,  # sampled rows longer than max_length

    }
